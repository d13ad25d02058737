#!/usr/bin/python3
"""libregistry and registryctl over HTTPS against registryd's own HTTPS
listener (--https-addr): the CA, client certificates when the server
requires them, and every way the connection must be refused (no CA, a rogue
CA's certificate, a wrong name, no client certificate) with a one-line
reason; the environment variables; snapshot save/restore over HTTPS and
their progress line on a terminal.

libregistry is called directly through ctypes (the shared library CMake
built, $REGISTRY_LIB); registryctl through subprocess."""
import ctypes
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
import unittest

import certs
from harness import REGISTRYCTL, ROOT, Registryd, TempDir, child_env, free_port

REGISTRY_LIB = os.environ.get("REGISTRY_LIB", os.path.join(ROOT, "build/client/libregistry.so"))
REG_EINVAL, REG_ECONNECT = -1, -11


def sanitized(path):
    """Whether libregistry is built with ASan: it cannot be loaded into an
    uninstrumented python unless the runtime comes first, so this test then
    runs itself again with the sanitizer runtimes preloaded (see
    preload_sanitizers; the binaries it starts do not inherit the preload)."""
    try:
        with open(path, "rb") as f:
            return b"libasan.so" in f.read()
    except OSError:
        return False

def preload_sanitizers():
    if not sanitized(REGISTRY_LIB) or "REGISTRY_TEST_ASAN_OPTIONS" in os.environ:
        return
    libs = []
    for name in ("libasan.so", "libubsan.so"):
        path = subprocess.run(["gcc", "-print-file-name=" + name], capture_output=True,
                              text=True).stdout.strip()
        if os.path.isabs(path):
            libs.append(path)
    if not libs:
        return
    env = dict(os.environ)
    env["REGISTRY_TEST_ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "")
    # python itself is not instrumented: its own allocations are not ours
    env["ASAN_OPTIONS"] = "detect_leaks=0:verify_asan_link_order=0"
    env["LD_PRELOAD"] = " ".join(libs)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


TLS_ENV = ["REGISTRY_HTTP_ADDR", "REGISTRY_CACERT", "REGISTRY_CLIENT_CERT", "REGISTRY_CLIENT_KEY",
           "REGISTRY_TLS_SERVER_NAME", "CONSUL_CACERT", "CONSUL_CLIENT_CERT",
           "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME", "CONSUL_HTTP_SSL",
           "REGISTRY_HTTP_TOKEN"]


def clean_env(**extra):
    e = {k: v for k, v in child_env().items() if k not in TLS_ENV}
    e.update(extra)
    return e


class Lib:
    """The few libregistry calls the tests need."""

    def __init__(self):
        self.L = ctypes.CDLL(REGISTRY_LIB)
        self.L.reg_client_errmsg.restype = ctypes.c_char_p
        self.L.reg_client_errmsg.argtypes = [ctypes.c_void_p]
        self.L.reg_client_new.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
        self.L.reg_client_set_tls.argtypes = [ctypes.c_void_p] + [ctypes.c_char_p] * 4
        self.L.reg_client_free.argtypes = [ctypes.c_void_p]
        self.L.reg_client_request.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]
        self.L.reg_register_json.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.L.reg_health_service.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool, ctypes.c_uint64,
            ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t),
            ctypes.c_void_p]
        self.L.reg_instances_free.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

    def new(self, addrs, env=None):
        """(rc, client or None, errmsg); env is applied for the call only."""
        saved = {k: os.environ.get(k) for k in TLS_ENV}
        for k in TLS_ENV:
            os.environ.pop(k, None)
        os.environ.update(env or {})
        try:
            c = ctypes.c_void_p()
            rc = self.L.reg_client_new(ctypes.byref(c), addrs.encode() if addrs else None)
            return rc, (c if rc == 0 else None), self.L.reg_client_errmsg(None).decode()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def set_tls(self, c, ca=None, cert=None, key=None, name=None):
        enc = lambda s: s.encode() if s else None
        rc = self.L.reg_client_set_tls(c, enc(ca), enc(cert), enc(key), enc(name))
        return rc, self.L.reg_client_errmsg(c).decode()

    def get(self, c, path):
        """(rc, status, body or errmsg)"""
        st, body, n = ctypes.c_int(), ctypes.c_char_p(), ctypes.c_size_t()
        rc = self.L.reg_client_request(c, b"GET", path.encode(), None, 0, ctypes.byref(st),
                                       ctypes.byref(body), ctypes.byref(n), None)
        if rc == 0:
            text = body.value.decode()
            libc = ctypes.CDLL(None)
            libc.free.argtypes = [ctypes.c_void_p]
            libc.free(ctypes.cast(body, ctypes.c_void_p))
            return rc, st.value, text
        return rc, st.value, self.L.reg_client_errmsg(c).decode()

    def register(self, c, body):
        rc = self.L.reg_register_json(c, json.dumps(body).encode())
        return rc, self.L.reg_client_errmsg(c).decode()

    def instances(self, c, service):
        out, n = ctypes.c_void_p(), ctypes.c_size_t()
        rc = self.L.reg_health_service(c, service.encode(), None, False, 0, None,
                                       ctypes.byref(out), ctypes.byref(n), None)
        if rc != 0:
            return rc, self.L.reg_client_errmsg(c).decode()
        self.L.reg_instances_free(out, n)
        return rc, n.value

    def free(self, c):
        self.L.reg_client_free(c)


class HttpsRegistryd(Registryd):
    """A registryd with an HTTPS listener whose port is picked with the
    others: start() picks them all again when one was taken meanwhile (a
    port fixed in the arguments was tried again as it was, and a parallel
    test holding it failed setUpClass)."""

    def __init__(self, tls_args):
        self.tls_args = list(tls_args)
        super().__init__()

    def pick_ports(self):
        super().pick_ports()
        self.https_port = free_port()

    def args(self):
        return super().args() + ["--https-addr", "127.0.0.1:%d" % self.https_port] + self.tls_args


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.certs = certs.make_certs(os.path.join(cls.tmp.path, "certs"))
        p = cls.certs
        cls.servers = []
        # one-way TLS, mutual TLS, and a server whose certificate a rogue CA signed
        specs = [certs.tls_args(p),
                 certs.tls_args(p, verify_incoming=True),
                 ["--tls-ca-file", p["rogue_ca"], "--tls-cert-file", p["rogue_server_cert"],
                  "--tls-key-file", p["rogue_server_key"]]]
        for args in specs:
            d = HttpsRegistryd(args)
            cls.servers.append(d)
            d.start()
        cls.plain, cls.mtls = cls.servers[0], cls.servers[1]
        cls.https_port, cls.mtls_port, cls.rogue_port = (d.https_port for d in cls.servers)
        cls.https = "https://127.0.0.1:%d" % cls.https_port
        cls.mtls_addr = "https://127.0.0.1:%d" % cls.mtls_port
        cls.rogue = "https://127.0.0.1:%d" % cls.rogue_port
        loadable = not sanitized(REGISTRY_LIB) or "REGISTRY_TEST_ASAN_OPTIONS" in os.environ
        cls.lib = Lib() if loadable else None

    def setUp(self):
        if self.lib is None and self._testMethodName.startswith("test_lib_"):
            self.fail("libregistry is built with ASan and the sanitizer runtimes could not be preloaded")

    @classmethod
    def tearDownClass(cls):
        for d in cls.servers:
            d.stop()
        cls.tmp.cleanup()

    def ctl(self, *args, env=None, stderr=subprocess.PIPE):
        p = subprocess.run([REGISTRYCTL] + list(args), stdout=subprocess.PIPE, stderr=stderr,
                           text=True, env=clean_env(**(env or {})), timeout=60)
        return p.returncode, p.stdout, p.stderr

    def refused(self, rc, err, *words):
        """registryctl exit 1 (could not reach), one line naming the reason."""
        self.assertEqual(rc, 1, err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertTrue(err.startswith("registryctl: "), err)
        for w in words:
            self.assertIn(w, err)

    # ---- libregistry -------------------------------------------------------

    def test_lib_discovery_and_registration_over_https(self):
        rc, c, msg = self.lib.new(self.https)
        self.assertEqual(rc, 0, msg)
        try:
            self.assertEqual(self.lib.set_tls(c, ca=self.certs["ca"])[0], 0)
            rc, msg = self.lib.register(c, {"Name": "tlsweb", "ID": "tlsweb-1", "Port": 81})
            self.assertEqual(rc, 0, msg)
            self.assertEqual(self.lib.instances(c, "tlsweb"), (0, 1))
            rc, status, body = self.lib.get(c, "/v1/catalog/services")
            self.assertEqual((rc, status), (0, 200), body)
            self.assertIn("tlsweb", json.loads(body))
        finally:
            self.lib.free(c)
        # what the library registered over HTTPS is in the store (seen over plain HTTP)
        status, text = self.plain.request("GET", "/v1/health/service/tlsweb")
        self.assertEqual(json.loads(text)[0]["Service"]["ID"], "tlsweb-1")

    def test_lib_client_certificate_when_required(self):
        p = self.certs
        rc, c, msg = self.lib.new(self.mtls_addr)
        self.assertEqual(rc, 0, msg)
        try:
            self.assertEqual(self.lib.set_tls(c, ca=p["ca"])[0], 0)
            rc, _, msg = self.lib.get(c, "/v1/status/leader")
            self.assertEqual(rc, REG_ECONNECT, msg)
            self.assertIn("127.0.0.1:%d" % self.mtls_port, msg)
            self.assertIn("certificate", msg)
            self.assertEqual(self.lib.set_tls(c, p["ca"], p["client_cert"], p["client_key"])[0], 0)
            rc, status, body = self.lib.get(c, "/v1/status/leader")
            self.assertEqual((rc, status), (0, 200), body)
            # a client certificate the rogue CA signed is refused
            self.assertEqual(self.lib.set_tls(c, p["ca"], p["rogue_client_cert"],
                                              p["rogue_client_key"])[0], 0)
            rc, _, msg = self.lib.get(c, "/v1/status/leader")
            self.assertEqual(rc, REG_ECONNECT, msg)
        finally:
            self.lib.free(c)

    def test_lib_refusals_name_the_reason(self):
        p = self.certs
        cases = [
            # (address, set_tls arguments or None for the system store, words in the errmsg)
            (self.https, None, ["TLS handshake with 127.0.0.1:%d failed" % self.https_port,
                                "certificate verify failed"]),
            (self.rogue, {"ca": p["ca"]}, ["TLS handshake with 127.0.0.1:%d failed"
                                           % self.rogue_port, "certificate verify failed"]),
            (self.https, {"ca": p["ca"], "name": "db.example.org"},
             ["certificate verify failed", "hostname mismatch"]),
            ("https://localhost:%d" % self.https_port, {"ca": p["rogue_ca"]},
             ["certificate verify failed"]),
            # TLS to the plain HTTP port
            ("https://" + self.plain.addr, {"ca": p["ca"]}, ["TLS handshake with"]),
        ]
        for addr, tls, words in cases:
            with self.subTest(addr=addr, tls=tls):
                rc, c, msg = self.lib.new(addr)
                self.assertEqual(rc, 0, msg)
                if tls is not None:
                    self.assertEqual(self.lib.set_tls(c, **tls)[0], 0)
                rc, status, msg = self.lib.get(c, "/v1/status/leader")
                self.lib.free(c)
                self.assertEqual((rc, status), (REG_ECONNECT, 0), msg)
                self.assertNotIn("\n", msg)
                for w in words:
                    self.assertIn(w, msg)

    def test_lib_names_verified(self):
        p = self.certs
        # by the address's host: a name (SNI) or an IP address; or the name given
        for addr, name in [("https://localhost:%d" % self.https_port, None),
                           (self.https, "server.dc1.registry"), (self.https, None)]:
            rc, c, msg = self.lib.new(addr)
            self.assertEqual(self.lib.set_tls(c, ca=p["ca"], name=name)[0], 0)
            rc, status, body = self.lib.get(c, "/v1/status/leader")
            self.lib.free(c)
            self.assertEqual((rc, status), (0, 200), (addr, name, body))

    def test_lib_bad_files_are_einval_with_one_line(self):
        p = self.certs
        rc, c, msg = self.lib.new(self.https)
        try:
            cases = [({"ca": "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"),
                     ({"ca": p["client_key"]}, p["client_key"]),
                     ({"ca": p["ca"], "cert": p["client_cert"], "key": p["server_key"]},
                      "does not match"),
                     ({"ca": p["ca"], "cert": p["client_cert"]}, "key"),
                     ({"ca": p["ca"], "key": p["client_key"]}, "certificate")]
            for tls, word in cases:
                with self.subTest(tls=tls):
                    rc, msg = self.lib.set_tls(c, **tls)
                    self.assertEqual(rc, REG_EINVAL, msg)
                    self.assertIn(word, msg)
                    self.assertNotIn("\n", msg)
            # the settings in force are unchanged by a refused call
            self.assertEqual(self.lib.set_tls(c, ca=p["ca"])[0], 0)
            self.assertEqual(self.lib.set_tls(c, ca="/nonexistent")[0], REG_EINVAL)
            self.assertEqual(self.lib.get(c, "/v1/status/leader")[:2], (0, 200))
        finally:
            self.lib.free(c)

    def test_lib_environment(self):
        p = self.certs
        mtls_port = "127.0.0.1:%d" % self.mtls_port
        ok = [
            (self.https, {"REGISTRY_CACERT": p["ca"]}),
            (self.https, {"CONSUL_CACERT": p["ca"]}),
            (self.https, {"REGISTRY_CACERT": p["ca"], "CONSUL_CACERT": p["rogue_ca"]}),
            (self.https, {"REGISTRY_CACERT": p["ca"],
                          "REGISTRY_TLS_SERVER_NAME": "server.dc1.registry"}),
            (self.mtls_addr, {"REGISTRY_CACERT": p["ca"], "REGISTRY_CLIENT_CERT": p["client_cert"],
                              "REGISTRY_CLIENT_KEY": p["client_key"]}),
            (self.mtls_addr, {"CONSUL_CACERT": p["ca"], "CONSUL_CLIENT_CERT": p["client_cert"],
                              "CONSUL_CLIENT_KEY": p["client_key"]}),
            # CONSUL_HTTP_SSL=true: a bare address (and even http://) is https
            (mtls_port, {"CONSUL_HTTP_SSL": "true", "CONSUL_CACERT": p["ca"],
                         "CONSUL_CLIENT_CERT": p["client_cert"],
                         "CONSUL_CLIENT_KEY": p["client_key"]}),
            ("http://127.0.0.1:%d" % self.https_port, {"CONSUL_HTTP_SSL": "1",
                                                        "REGISTRY_CACERT": p["ca"]}),
            # not true: bare stays plain, and the TLS variables are not even read
            (self.plain.addr, {"CONSUL_HTTP_SSL": "false", "REGISTRY_CACERT": "/nonexistent"}),
            (None, {"REGISTRY_HTTP_ADDR": self.https, "REGISTRY_CACERT": p["ca"]}),
        ]
        for addr, env in ok:
            with self.subTest(addr=addr, env=env):
                rc, c, msg = self.lib.new(addr, env)
                self.assertEqual(rc, 0, msg)
                rc, status, body = self.lib.get(c, "/v1/status/leader")
                self.lib.free(c)
                self.assertEqual((rc, status), (0, 200), body)
        refused = [
            (self.https, {"REGISTRY_CACERT": p["rogue_ca"], "CONSUL_CACERT": p["ca"]},
             "certificate verify failed"),
            (self.https, {"REGISTRY_CACERT": p["ca"], "CONSUL_TLS_SERVER_NAME": "other.name"},
             "hostname mismatch"),
            (self.mtls_addr, {"REGISTRY_CACERT": p["ca"]}, "certificate"),
        ]
        for addr, env, word in refused:
            with self.subTest(addr=addr, env=env):
                rc, c, msg = self.lib.new(addr, env)
                self.assertEqual(rc, 0, msg)
                rc, status, msg = self.lib.get(c, "/v1/status/leader")
                self.lib.free(c)
                self.assertEqual(rc, REG_ECONNECT, msg)
                self.assertIn(word, msg)
        # unreadable files from the environment: reg_client_new says which
        rc, c, msg = self.lib.new(self.https, {"REGISTRY_CACERT": "/nonexistent/ca.pem"})
        self.assertEqual(rc, REG_EINVAL)
        self.assertIn("/nonexistent/ca.pem", msg)

    def test_lib_many_threads_share_one_client(self):
        p = self.certs
        rc, c, msg = self.lib.new(self.mtls_addr)
        self.assertEqual(self.lib.set_tls(c, p["ca"], p["client_cert"], p["client_key"])[0], 0)
        results = []

        def worker():
            for _ in range(15):
                results.append(self.lib.get(c, "/v1/status/leader")[:2])

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        # the settings replaced while requests are in flight
        for _ in range(5):
            self.assertEqual(self.lib.set_tls(c, p["ca"], p["client_cert"], p["client_key"])[0], 0)
            time.sleep(0.02)
        for t in threads:
            t.join(60)
        self.lib.free(c)
        self.assertEqual(results, [(0, 200)] * 90)

    # ---- registryctl ----------------------------------------------------------

    def test_ctl_every_kind_of_verb_over_https(self):
        p = self.certs
        tls = ["--http-addr", self.mtls_addr, "--ca-file", p["ca"], "--client-cert",
               p["client_cert"], "--client-key", p["client_key"]]
        rc, out, err = self.ctl(*tls, "register", "--name", "ctltls", "--id", "ctltls-1",
                                "--port", "90", "--ttl", "60s")
        self.assertEqual((rc, err), (0, ""), out)
        rc, out, err = self.ctl(*tls, "check", "pass", "service:ctltls-1")
        self.assertEqual((rc, err), (0, ""), out)
        rc, out, err = self.ctl(*tls, "--json", "instances", "ctltls")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)[0]["Service"]["ID"], "ctltls-1")
        rc, out, err = self.ctl(*tls, "pick", "ctltls")
        self.assertEqual(rc, 0, err)
        self.assertIn("ctltls-1", out)
        rc, out, err = self.ctl(*tls, "deregister", "ctltls-1")
        self.assertEqual((rc, err), (0, ""), out)
        # the flags' = forms, and the environment for what no flag gave
        rc, out, err = self.ctl("--http-addr=" + self.mtls_addr, "--ca-file=" + p["ca"],
                                "services", env={"REGISTRY_CLIENT_CERT": p["client_cert"],
                                                 "REGISTRY_CLIENT_KEY": p["client_key"]})
        self.assertEqual(rc, 0, err)
        # a TLS flag makes a bare address https
        rc, out, err = self.ctl("--http-addr", "127.0.0.1:%d" % self.https_port, "--ca-file",
                                p["ca"], "leader")
        self.assertEqual(rc, 0, err)

    def test_ctl_watch_over_https(self):
        p = self.certs
        proc = subprocess.Popen([REGISTRYCTL, "--http-addr", self.https, "--json", "watch",
                                 "watched"], stdout=subprocess.PIPE, text=True,
                                env=clean_env(REGISTRY_CACERT=p["ca"]))
        try:
            first = json.loads(proc.stdout.readline())
            self.assertEqual(first["Instances"], [])
            self.plain.request("PUT", "/v1/agent/service/register",
                               json.dumps({"Name": "watched", "ID": "w-1", "Port": 1}))
            deadline = time.monotonic() + 10
            seen = []
            while time.monotonic() < deadline and "w-1" not in seen:
                r, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
                if not r:
                    break
                ev = json.loads(proc.stdout.readline())
                seen = [i["ID"] for i in ev["Instances"]]
            self.assertIn("w-1", seen)
        finally:
            proc.terminate()
            proc.communicate(timeout=10)

    def test_ctl_call_discovers_over_https(self):
        import http.server

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"hello")

            def log_message(self, *a):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            self.plain.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "callee", "ID": "callee-1", "Address": "127.0.0.1",
                 "Port": srv.server_address[1]}))
            rc, out, err = self.ctl("--http-addr", self.https, "call", "callee", "/",
                                    env={"CONSUL_CACERT": self.certs["ca"]})
            self.assertEqual(rc, 0, err)
            self.assertIn("hello", out)
        finally:
            srv.shutdown()
            srv.server_close()

    def test_ctl_refusals(self):
        p = self.certs
        cases = [
            (["--http-addr", self.https], {}, ["certificate verify failed"]),
            (["--http-addr", self.rogue, "--ca-file", p["ca"]], {},
             ["TLS handshake with 127.0.0.1:%d failed" % self.rogue_port,
              "certificate verify failed"]),
            (["--http-addr", self.https, "--ca-file", p["ca"], "--tls-server-name", "x.example"],
             {}, ["hostname mismatch"]),
            (["--http-addr", self.https], {"REGISTRY_CACERT": p["ca"],
                                           "REGISTRY_TLS_SERVER_NAME": "x.example"},
             ["hostname mismatch"]),
            (["--http-addr", self.mtls_addr, "--ca-file", p["ca"]], {},
             ["127.0.0.1:%d" % self.mtls_port, "certificate"]),
            (["--http-addr", self.https, "--ca-file", p["rogue_ca"]], {"CONSUL_CACERT": p["ca"]},
             ["certificate verify failed"]),
        ]
        for args, env, words in cases:
            for verb in (["services"], ["snapshot", "save",
                                        os.path.join(self.tmp.path, "refused.snap")]):
                with self.subTest(args=args, env=env, verb=verb):
                    rc, out, err = self.ctl(*args, *verb, env=env)
                    self.refused(rc, err, *words)
        self.assertFalse(os.path.exists(os.path.join(self.tmp.path, "refused.snap")))
        self.assertFalse(os.path.exists(os.path.join(self.tmp.path, "refused.snap.tmp")))

    def test_ctl_bad_tls_files_are_usage_errors(self):
        p = self.certs
        cases = [(["--ca-file", "/nonexistent.pem"], {}, "/nonexistent.pem"),
                 (["--client-cert", p["client_cert"]], {}, "key"),
                 (["--client-cert", p["client_cert"], "--client-key", p["server_key"]], {},
                  "does not match"),
                 ([], {"REGISTRY_CACERT": "/nonexistent.pem"}, "/nonexistent.pem"),
                 (["--ca-file"], {}, "--ca-file needs")]
        for args, env, word in cases:
            with self.subTest(args=args, env=env):
                rc, out, err = self.ctl("--http-addr", self.https, "services", *args, env=env)
                self.assertEqual(rc, 2, err)
                self.assertEqual(err.count("\n"), 1, err)
                self.assertIn(word, err)

    def test_ctl_snapshot_save_restore_over_mutual_tls(self):
        p = self.certs
        tls = ["--http-addr", self.mtls_addr, "--ca-file", p["ca"], "--client-cert",
               p["client_cert"], "--client-key", p["client_key"]]
        self.mtls.request("PUT", "/v1/agent/service/register",
                          json.dumps({"Name": "snapped", "ID": "snapped-1", "Port": 5}))
        f = os.path.join(self.tmp.path, "mtls.snap")
        rc, out, err = self.ctl(*tls, "snapshot", "save", f)
        self.assertEqual((rc, err), (0, ""), out)
        self.assertIn("saved %d bytes" % os.path.getsize(f), out)
        with open(f, "rb") as fh:
            self.assertEqual(fh.read(),
                             self.mtls_snapshot_over_plain())
        self.mtls.request("PUT", "/v1/agent/service/deregister/snapped-1")
        rc, out, err = self.ctl(*tls, "snapshot", "restore", f)
        self.assertEqual((rc, err), (0, ""), out)
        status, text = self.mtls.request("GET", "/v1/health/service/snapped")
        self.assertEqual(json.loads(text)[0]["Service"]["ID"], "snapped-1")
        # a refused restore over TLS: the server's one-line reason, exit 1
        bad = os.path.join(self.tmp.path, "bad.snap")
        with open(bad, "wb") as fh:
            fh.write(b"not a snapshot" * 1000)
        rc, out, err = self.ctl(*tls, "snapshot", "restore", bad)
        self.refused(rc, err, "400", "Snapshot refused")

    def mtls_snapshot_over_plain(self):
        import urllib.request
        with urllib.request.urlopen("http://%s/v1/snapshot" % self.mtls.addr, timeout=30) as r:
            return r.read()

    # ---- progress ------------------------------------------------------------

    def run_on_pty(self, args, env):
        """registryctl with stderr on a terminal: (exit code, stdout, what the terminal got)."""
        master, slave = pty.openpty()
        proc = subprocess.Popen([REGISTRYCTL] + args, stdout=subprocess.PIPE, stderr=slave,
                                env=clean_env(**env))
        os.close(slave)
        got = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the last writer closed
                    break
                if not chunk:
                    break
                got += chunk
            elif proc.poll() is not None:
                break
        out = proc.communicate(timeout=30)[0].decode()
        rc = proc.returncode
        os.close(master)
        return rc, out, got.decode(errors="replace")

    def test_progress_on_a_terminal_only(self):
        import bigstore
        p = self.certs
        d = HttpsRegistryd(certs.tls_args(p)).start()
        https = "https://127.0.0.1:%d" % d.https_port
        try:
            src = os.path.join(self.tmp.path, "big-src.snap")
            with open(src, "wb") as fh:
                fh.write(bigstore.big_snapshot(40000))
            size = os.path.getsize(src)
            env = {"REGISTRY_CACERT": p["ca"]}
            rc, out, term = self.run_on_pty(["--http-addr", https, "snapshot", "restore", src],
                                            env)
            self.assertEqual(rc, 0, term)
            self.assertIn("restoring snapshot: ", term)
            self.assertIn("(100%)", term)
            self.assertRegex(term, r"/s")
            dst = os.path.join(self.tmp.path, "big-dst.snap")
            rc, out, term = self.run_on_pty(["--http-addr", https, "snapshot", "save", dst], env)
            self.assertEqual(rc, 0, term)
            self.assertIn("saving snapshot: ", term)
            # the server copies it to a file first and sends its length:
            # bytes so far of the total, the percentage and the rate
            self.assertRegex(term, r"saving snapshot: [0-9.]+ MiB / [0-9.]+ MiB \( *[0-9]+%\), "
                                   r"[0-9.]+ [KM]iB/s")
            self.assertIn("(100%)", term)
            self.assertGreater(os.path.getsize(dst), size // 2)
            # --json on a terminal: nothing
            rc, out, term = self.run_on_pty(["--http-addr", https, "--json", "snapshot", "save",
                                             dst], env)
            self.assertEqual(rc, 0, term)
            self.assertEqual(term, "")
            self.assertEqual(json.loads(out)["bytes"], os.path.getsize(dst))
            # stderr a file: nothing
            with open(os.path.join(self.tmp.path, "stderr.txt"), "w+") as errf:
                rc, out, _ = self.ctl("--http-addr", https, "snapshot", "save", dst, env=env,
                                      stderr=errf)
                errf.seek(0)
                self.assertEqual((rc, errf.read()), (0, ""))
        finally:
            d.stop()


if __name__ == "__main__":
    preload_sanitizers()
    unittest.main()
