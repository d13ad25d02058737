"""Test certificates made with the openssl command line, with the commands
of the README's "Securing a cluster" section (which test_tls.py runs as
written, too): a CA, a server certificate named
server.DC.DOMAIN (plus localhost and 127.0.0.1), a client certificate, and a
second, unrelated CA with a server and a client certificate of its own (what
an attacker who is not in the cluster could present).

    paths = make_certs(directory)            # dict of file paths
    paths["ca"], paths["server_cert"], paths["server_key"],
    paths["client_cert"], paths["client_key"],
    paths["rogue_ca"], paths["rogue_server_cert"], paths["rogue_server_key"],
    paths["rogue_client_cert"], paths["rogue_client_key"],
    paths["wrongname_cert"], paths["wrongname_key"]   # our CA, not a server name
"""
import os
import subprocess


def _run(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d, name):
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}-key.pem", "-out", f"{name}.pem", "-days", "30",
         "-subj", f"/CN={name}", cwd=d)


def _leaf(d, ca, name, cn, sans, usage):
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName={sans}\nextendedKeyUsage={usage}\n"
                "basicConstraints=CA:FALSE\n")
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem",
         "-CAcreateserial", "-out", f"{name}.pem", "-days", "30", "-extfile", ext, cwd=d)


def make_certs(d, dc="dc1", domain="registry"):
    os.makedirs(d, exist_ok=True)
    server_sans = f"DNS:server.{dc}.{domain},DNS:localhost,IP:127.0.0.1,IP:::1"
    both = "serverAuth,clientAuth"
    _ca(d, "ca")
    _leaf(d, "ca", "server", f"server.{dc}.{domain}", server_sans, both)
    _leaf(d, "ca", "client", "client", "DNS:client", "clientAuth")
    _leaf(d, "ca", "wrongname", "wrongname", "DNS:wrongname,IP:127.0.0.1", both)
    _ca(d, "rogue-ca")
    _leaf(d, "rogue-ca", "rogue-server", f"server.{dc}.{domain}", server_sans, both)
    _leaf(d, "rogue-ca", "rogue-client", "client", "DNS:client", "clientAuth")
    p = lambda n: os.path.join(d, n)
    return {
        "dir": d,
        "ca": p("ca.pem"),
        "server_cert": p("server.pem"), "server_key": p("server-key.pem"),
        "client_cert": p("client.pem"), "client_key": p("client-key.pem"),
        "wrongname_cert": p("wrongname.pem"), "wrongname_key": p("wrongname-key.pem"),
        "rogue_ca": p("rogue-ca.pem"),
        "rogue_server_cert": p("rogue-server.pem"), "rogue_server_key": p("rogue-server-key.pem"),
        "rogue_client_cert": p("rogue-client.pem"), "rogue_client_key": p("rogue-client-key.pem"),
    }


def reissue_server(d, prefix, dc="dc1", domain="registry"):
    """Another server certificate (a new serial, the same names) from the CA
    in d: prefix.pem and prefix-key.pem (prefix: an absolute path)."""
    server_sans = f"DNS:server.{dc}.{domain},DNS:localhost,IP:127.0.0.1,IP:::1"
    _leaf(d, "ca", prefix, f"server.{dc}.{domain}", server_sans, "serverAuth,clientAuth")
    return prefix + ".pem", prefix + "-key.pem"


def tls_args(paths, verify_incoming=False):
    """registryd flags for the TLS files above."""
    args = ["--tls-ca-file", paths["ca"], "--tls-cert-file", paths["server_cert"],
            "--tls-key-file", paths["server_key"]]
    if verify_incoming:
        args.append("--tls-verify-incoming")
    return args
