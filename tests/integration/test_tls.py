#!/usr/bin/python3
"""The HTTPS listener: curl and Python's ssl against it, client certificates
(tls_verify_incoming), http_addr "" (no plain port), tls_min_version, a
certificate reloaded on SIGHUP, and internal routes answering only servers
(a CA-signed certificate naming server.dc1.registry, over HTTPS)."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import certs
from harness import REGISTRYCTL, REGISTRYD, ROOT, TempDir, TlsRegistryd, listening_ports


def handshake_fails(d, ctx):
    """True when a TLS handshake with d using ctx fails (the server refused
    the client, or the client the server)."""
    try:
        with socket.create_connection(("127.0.0.1", d.https_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                # TLS 1.3: the server's verdict on our certificate comes
                # after the client's handshake completes; a request shows it
                s.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
                return not s.recv(100).startswith(b"HTTP/1.1 200")
    except (ssl.SSLError, ConnectionError, OSError):
        return True


class HttpsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.paths = certs.make_certs(os.path.join(cls.tmp.path, "certs"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.servers = []

    def tearDown(self):
        for d in self.servers:  # a clean exit: status 0, no sanitizer report
            d.stop()

    def start(self, **kw):
        d = TlsRegistryd(self.paths, **kw)
        self.servers.append(d)
        return d.start()

    def client(self, name):
        return (self.paths[name + "_cert"], self.paths[name + "_key"])

    def test_https_only(self):
        d = self.start()
        # curl, trusting the CA, no client certificate
        out = subprocess.run(["curl", "-sS", "--cacert", self.paths["ca"],
                              "https://%s/v1/status/leader" % d.addr],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(json.loads(out.stdout))
        # Python's ssl, with and without a client certificate
        self.assertEqual(d.request("GET", "/v1/agent/self", client=False)[0], 200)
        status, text = d.request("GET", "/v1/agent/self", client=self.client("client"))
        self.assertEqual(status, 200, text)
        dbg = json.loads(text)["DebugConfig"]
        self.assertEqual(dbg["HTTPAddrs"], [])
        self.assertEqual(dbg["HTTPSAddrs"], [d.addr])
        # http_addr "": the HTTPS, DNS and raft ports, no plain HTTP one
        self.assertEqual(listening_ports(d.proc.pid), {d.https_port, d.dns_port, d.raft_port})
        # a client that does not trust our CA fails the handshake
        self.assertTrue(handshake_fails(d, ssl.create_default_context(
            cafile=self.paths["rogue_ca"])))
        # plain HTTP spoken to the HTTPS port is not served
        with socket.create_connection(("127.0.0.1", d.https_port), timeout=5) as s:
            s.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                self.assertFalse(s.recv(100).startswith(b"HTTP/1.1 200"))
            except ConnectionError:
                pass
        # TLS 1.2 is accepted by default
        ctx = d.ssl_context(client=False)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.assertFalse(handshake_fails(d, ctx))
        self.assertIn("https_addr=%s" % d.addr, d.log())
        self.assertIn("http_addr=off", d.log())

    def test_verify_incoming(self):
        d = self.start(verify_incoming=True)
        # no certificate, or one from another CA: refused at the handshake
        self.assertTrue(handshake_fails(d, d.ssl_context(client=False)))
        self.assertTrue(handshake_fails(d, d.ssl_context(client=self.client("rogue_client"))))
        # curl without --cert fails, with the client certificate it is served
        url = "https://%s/v1/status/leader" % d.addr
        out = subprocess.run(["curl", "-sS", "--cacert", self.paths["ca"], url],
                             capture_output=True, text=True, timeout=30)
        self.assertNotEqual(out.returncode, 0)
        out = subprocess.run(["curl", "-sS", "--cacert", self.paths["ca"],
                              "--cert", self.paths["client_cert"],
                              "--key", self.paths["client_key"], url],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(d.request("GET", "/v1/catalog/services",
                                   client=self.client("client"))[0], 200)

    def test_internal_routes_answer_only_servers(self):
        d = self.start(plain=True)
        forward = {"X-Registry-Method": "PUT", "X-Registry-URI": "/v1/agent/service/register",
                   "X-Registry-Node": "evil", "X-Registry-Node-Address": "10.0.0.1"}
        body = json.dumps({"Name": "evil"})
        for client in (False, self.client("client"), self.client("wrongname")):
            status, text = d.request("GET", "/v1/internal/raft/self", client=client)
            self.assertEqual(status, 403, text)
            self.assertIn("only servers", text)
            self.assertEqual(len(text.strip().splitlines()), 1)
            status, text = d.request("PUT", "/v1/internal/forward", body=body, headers=forward,
                                     client=client)
            self.assertEqual(status, 403, text)
        # the plain listener: never an internal route with TLS on
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        for method, path, hdrs in (("GET", "/v1/internal/raft/self", {}),
                                   ("PUT", "/v1/internal/forward", forward),
                                   ("PUT", "/v1/internal/raft/hello", {})):
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            self.assertEqual(r.status, 403, r.read())
            r.read()
        conn.close()
        # a server's certificate is a server
        status, text = d.request("GET", "/v1/internal/raft/self")
        self.assertEqual(status, 200, text)
        self.assertEqual(json.loads(text)["HTTP"], d.addr)
        # nothing was registered by the refused envelopes
        status, text = d.request("GET", "/v1/agent/services")
        self.assertEqual(json.loads(text), {})

    def test_min_version_tls13(self):
        d = self.start(extra_args=["--tls-min-version", "TLSv1_3"])
        ctx = d.ssl_context(client=False)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.assertTrue(handshake_fails(d, ctx))
        ctx = d.ssl_context(client=False)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.assertFalse(handshake_fails(d, ctx))

    def test_sigterm_with_https_queries_parked(self):
        """Blocking queries parked over HTTPS on every HTTP worker when
        SIGTERM comes: they are answered as registryd stops, and every TLS
        connection is freed. An answer written over TLS leaves libevent's
        deferred write callback queued, holding a reference on the
        connection; the loops had stopped, so it never ran and the
        connection leaked (LeakSanitizer, checked in tearDown)."""
        d = self.start(extra_args=["--http-workers", "2"])
        ctx = d.ssl_context()
        conns = d.park_queries(12, lambda: http.client.HTTPSConnection(
            "127.0.0.1", d.https_port, timeout=30, context=ctx))
        t0 = time.monotonic()
        self.servers.remove(d)
        d.stop()  # clean exit: status 0, no sanitizer report
        self.assertLess(time.monotonic() - t0, 5.0)
        for c in conns:
            c.close()

    def test_sighup_reloads_the_certificate(self):
        # a copy of the server files that the test may replace
        own = os.path.join(self.tmp.path, "reload")
        os.makedirs(own, exist_ok=True)
        paths = dict(self.paths)
        for k in ("server_cert", "server_key"):
            paths[k] = os.path.join(own, os.path.basename(self.paths[k]))
            shutil.copy(self.paths[k], paths[k])
        d = TlsRegistryd(paths, client=False)
        self.servers.append(d)
        d.start()

        def serial(conn):
            return conn.sock.getpeercert()["serialNumber"]

        kept = http.client.HTTPSConnection("127.0.0.1", d.https_port, timeout=10,
                                           context=d.ssl_context(client=False))
        kept.request("GET", "/v1/status/leader")
        r = kept.getresponse()
        self.assertEqual(r.status, 200)
        r.read()
        before = serial(kept)

        # a new certificate for the same names (another serial), put in place
        certs.reissue_server(self.paths["dir"], os.path.join(own, "new"))
        for k, name in (("server_cert", "new.pem"), ("server_key", "new-key.pem")):
            shutil.copy(os.path.join(own, name), paths[k] + ".tmp")
            os.replace(paths[k] + ".tmp", paths[k])
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "TLS certificates reloaded" not in d.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("TLS certificates reloaded", d.log())

        fresh = http.client.HTTPSConnection("127.0.0.1", d.https_port, timeout=10,
                                            context=d.ssl_context(client=False))
        fresh.request("GET", "/v1/status/leader")
        r = fresh.getresponse()
        self.assertEqual(r.status, 200)
        r.read()
        self.assertNotEqual(serial(fresh), before)
        fresh.close()
        # the connection opened before still works, on its old session
        kept.request("GET", "/v1/status/leader")
        r = kept.getresponse()
        self.assertEqual(r.status, 200)
        r.read()
        self.assertEqual(serial(kept), before)
        kept.close()

    def test_readme_commands(self):
        """README's "TLS" steps, run as written (the server's address made
        loopback): the certificates, the settings, curl and registryctl."""
        with open(os.path.join(ROOT, "README.md")) as f:
            readme = f.read()
        section = readme[readme.index("### TLS: HTTPS"):]
        blocks = re.findall(r"```(sh|yaml)\n(.*?)```", section, re.S)
        make, yaml, call = blocks[0][1], blocks[1][1], blocks[2][1]
        work = os.path.join(self.tmp.path, "readme")
        os.makedirs(work)
        out = subprocess.run(["bash", "-euc", make.replace("10.0.0.11", "127.0.0.1")], cwd=work,
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        paths = {"ca": os.path.join(work, "ca.pem"),
                 "server_cert": os.path.join(work, "server.pem"),
                 "server_key": os.path.join(work, "server-key.pem")}
        # the settings as shown are valid (files and addresses made local)
        conf = os.path.join(work, "registryd.yaml")
        with open(conf, "w") as f:
            f.write(yaml.replace("/etc/registryd/tls/", work + "/"))
        out = subprocess.run([REGISTRYD, "--config", conf, "--data-dir",
                              os.path.join(work, "data"), "--check-config"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        d = TlsRegistryd(paths, verify_incoming=True,
                         client=(os.path.join(work, "client.pem"),
                                 os.path.join(work, "client-key.pem")))
        self.servers.append(d)
        d.start()
        out = subprocess.run(["bash", "-euc", call.replace("10.0.0.11:8501", d.addr)], cwd=work,
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIsInstance(json.loads(out.stdout), dict)  # the services, as JSON
        env = {"REGISTRY_HTTP_ADDR": "https://" + d.addr, "REGISTRY_CACERT": "ca.pem",
               "REGISTRY_CLIENT_CERT": "client.pem", "REGISTRY_CLIENT_KEY": "client-key.pem"}
        out = subprocess.run([REGISTRYCTL, "leader"], cwd=work, capture_output=True, text=True,
                             timeout=30, env=dict(os.environ, **env))
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_slow_clients_are_cut(self):
        """The guard covers HTTPS: a handshake that never completes, and a
        request head trickled inside TLS, are cut at http_head_timeout."""
        d = self.start(extra_args=["--http-head-timeout", "1s"])

        def closed_within(sock, seconds, trickle=None):
            start = time.monotonic()
            sock.settimeout(0.2)
            while time.monotonic() - start < seconds:
                try:
                    if trickle:
                        trickle()
                    if sock.recv(1) == b"":
                        return time.monotonic() - start
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                except (ConnectionError, ssl.SSLError, OSError):
                    return time.monotonic() - start
            return None

        # connected, silent: no handshake at all
        raw = socket.create_connection(("127.0.0.1", d.https_port), timeout=5)
        took = closed_within(raw, 6)
        raw.close()
        self.assertIsNotNone(took, "a silent TLS connection was kept")
        self.assertLess(took, 3)
        # handshake done, then a request head a byte at a time
        tls = d.ssl_context(client=False).wrap_socket(
            socket.create_connection(("127.0.0.1", d.https_port), timeout=5),
            server_hostname="127.0.0.1")
        head = iter(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: y\r\n" * 100)
        took = closed_within(tls, 6, lambda: tls.send(bytes([next(head)])))
        tls.close()
        self.assertIsNotNone(took, "a trickled head over TLS was kept")
        self.assertLess(took, 3)
        # and the server still serves
        self.assertEqual(d.request("GET", "/v1/status/leader")[0], 200)

    def test_config_errors(self):
        # a clustered server with TLS needs an HTTPS listener for the others
        # (with a data dir: --dev is a single server and takes no --bootstrap-expect)
        tmp = tempfile.mkdtemp(prefix="registryd-test-")
        self.addCleanup(shutil.rmtree, tmp, True)
        d = TlsRegistryd(self.paths, data_dir=os.path.join(tmp, "d"),
                         extra_args=["--bootstrap-expect", "3"])
        args = d.args()
        i = args.index("--https-addr")
        del args[i:i + 2]
        args[args.index("--http-addr") + 1] = d.plain_addr
        out = subprocess.run(args + ["--check-config"], capture_output=True, text=True,
                             timeout=30)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("https_addr", out.stderr)


if __name__ == "__main__":
    unittest.main()
