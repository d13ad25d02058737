#!/usr/bin/python3
"""Active health checking against real endpoints on loopback.

Every test registers instances whose checks point at servers this test runs
(HTTP, HTTPS with a self-signed certificate, plain TCP listeners), changes
what those servers do, and watches /v1/health and /v1/agent/checks follow.
"""
import http.server
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

from certs import make_certs, tls_args
from harness import Registryd, free_port, sanitized_binary

# what a check's timing may take past its nominal worst case on a busy
# 2-core machine (the checker, a write through raft, this poll), more
# under ASan
SLACK = 1.5 if sanitized_binary() else 0.5


class Endpoint:
    """An HTTP(S) server on a loopback port whose answer the test controls."""

    def __init__(self, port=None, tls_cert=None, host="127.0.0.1"):
        self.host = host
        self.port = port or free_port(host)
        self.code = 200
        self.codes = None  # a list cycled through, for flapping
        self.hits = 0
        self.seen = []  # (path, Host headers, User-Agent headers) of each request
        self.cross = None  # where /cross redirects to
        self.auth = []  # the Authorization headers of each request
        self.tls_cert = tls_cert
        self.server = None
        self.start()

    def start(self):
        ep = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                ep.hits += 1
                ep.seen.append((self.path, self.headers.get_all("Host"),
                                self.headers.get_all("User-Agent")))
                ep.auth.append(self.headers.get_all("Authorization"))
                code = ep.codes[ep.hits % len(ep.codes)] if ep.codes else ep.code
                where = {"/redir": "ok", "/abs": "http://127.0.0.1:%d/ok" % ep.port,
                         "/loop": "/loop", "/cross": ep.cross, "/long": "/" + "x" * 3000,
                         "/junk": "http://[::1"}.get(self.path)
                if where is not None:  # redirects: relative, absolute, endless
                    code = 302 if self.path != "/abs" else 301
                body = b"status %d" % code
                self.send_response(code)
                if where is not None:
                    self.send_header("Location", where)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        if self.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls_cert)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class TcpListener:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.sock = None
        self.start()

    def start(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(128)

    def stop(self):
        self.sock.close()


def self_signed_cert(directory):
    key, crt = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", crt],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return crt, key


class HealthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # DeregisterCriticalServiceAfter of seconds here: no 1-minute floor
        cls.d = Registryd(extra_args=["--check-deregister-min", "0s"])
        cls.d.start()
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.tmp.cleanup()

    # ---- helpers --------------------------------------------------------
    def register(self, body):
        status, text = self.d.request("PUT", "/v1/agent/service/register", json.dumps(body))
        self.assertEqual(status, 200, text)

    def check(self, check_id):
        status, text = self.d.request("GET", "/v1/agent/checks")
        self.assertEqual(status, 200)
        return json.loads(text).get(check_id)

    def passing_ids(self, name):
        status, text = self.d.request("GET", "/v1/health/service/%s?passing" % name)
        self.assertEqual(status, 200)
        return sorted(e["Service"]["ID"] for e in json.loads(text))

    def service_ids(self):
        status, text = self.d.request("GET", "/v1/agent/services")
        return set(json.loads(text))

    def wait_for(self, what, timeout, step=0.05):
        """Poll what() until it is truthy; return the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if what():
                return time.monotonic() - start
            time.sleep(step)
        self.fail("condition not met within %.1fs" % timeout)

    def status_of(self, check_id):
        c = self.check(check_id)
        return c and c["Status"]

    # ---- tests ----------------------------------------------------------
    def test_http_check_lifecycle(self):
        ep = Endpoint()
        try:
            self.register({"Name": "hweb", "ID": "hweb-1", "Port": ep.port,
                           "Check": {"HTTP": "http://127.0.0.1:%d/health" % ep.port,
                                     "Interval": "500ms", "Timeout": "400ms",
                                     "FailuresBeforeCritical": 2,
                                     "DeregisterCriticalServiceAfter": "2s"}})
            self.register({"Name": "hweb", "ID": "hweb-2", "Port": ep.port,
                           "Check": {"HTTP": "http://127.0.0.1:%d/health" % ep.port,
                                     "Interval": "500ms", "SuccessBeforePassing": 2,
                                     "FailuresBeforeCritical": 2}})
            self.wait_for(lambda: self.passing_ids("hweb") == ["hweb-1", "hweb-2"], 5)
            out = self.check("service:hweb-1")["Output"]
            self.assertIn("200", out)
            self.assertIn("status 200", out)

            ep.stop()
            # Interval x FailuresBeforeCritical + 1 s (and slack for a busy
            # machine, more under ASan)
            took = self.wait_for(lambda: self.passing_ids("hweb") == [], 10)
            self.assertLess(took, 0.5 * 2 + 1 + SLACK)
            self.assertEqual(self.status_of("service:hweb-2"), "critical")
            # deregistered after DeregisterCriticalServiceAfter (2 s) + the 1 s tick
            self.wait_for(lambda: "hweb-1" not in self.service_ids(), 5)
            self.assertIn("hweb-2", self.service_ids())

            ep.start()  # back after SuccessBeforePassing (2) successes
            took = self.wait_for(lambda: self.passing_ids("hweb") == ["hweb-2"], 4)
            self.assertGreater(took, 0.4)  # one success is not enough
        finally:
            ep.stop()

    def test_http_status_mapping(self):
        ep = Endpoint()
        try:
            self.register({"Name": "codes", "ID": "codes-1",
                           "Check": {"HTTP": "http://127.0.0.1:%d/" % ep.port,
                                     "Interval": "300ms", "Method": "POST",
                                     "Header": {"X-Test": ["1"]}, "Body": "ping"}})
            self.wait_for(lambda: self.status_of("service:codes-1") == "passing", 3)
            ep.code = 429
            self.wait_for(lambda: self.status_of("service:codes-1") == "warning", 3)
            self.assertEqual(self.passing_ids("codes"), [])
            ep.code = 503
            self.wait_for(lambda: self.status_of("service:codes-1") == "critical", 3)
            self.assertIn("503", self.check("service:codes-1")["Output"])
        finally:
            ep.stop()

    def test_http_check_follows_redirects_and_takes_host(self):
        # as Go's http.Client (Consul's checks): up to 10 redirects unless
        # DisableRedirects; a Host header is the request's Host, sent once
        ep = Endpoint()
        base = "http://127.0.0.1:%d" % ep.port
        # its instances go with it: left critical once ep stops, they would
        # raise the critical share the later tests' deregistrations count
        # on (self-preservation holds them)
        for sid in ("redir-1", "redir-2", "redir-3", "vhost-1", "cross-1", "badloc-long",
                    "badloc-junk"):
            self.addCleanup(self.d.request, "PUT", "/v1/agent/service/deregister/" + sid)
        try:
            self.register({"Name": "redir", "ID": "redir-1",
                           "Check": {"HTTP": base + "/redir", "Interval": "300ms"}})
            self.register({"Name": "redir", "ID": "redir-2",
                           "Check": {"HTTP": base + "/abs", "Interval": "300ms",
                                     "DisableRedirects": True}})
            self.register({"Name": "redir", "ID": "redir-3",
                           "Check": {"HTTP": base + "/loop", "Interval": "300ms"}})
            self.register({"Name": "vhost", "ID": "vhost-1",
                           "Check": {"HTTP": base + "/ok", "Interval": "300ms",
                                     "Header": {"Host": ["example.com"],
                                                "User-Agent": ["probe/1"]}}})
            self.wait_for(lambda: self.passing_ids("redir") == ["redir-1"], 5)
            self.wait_for(lambda: "301" in (self.check("service:redir-2")["Output"] or ""), 5)
            self.assertEqual(self.status_of("service:redir-2"), "critical")
            self.wait_for(lambda: "302" in (self.check("service:redir-3")["Output"] or ""), 5)
            self.assertEqual(self.status_of("service:redir-3"), "critical")
            self.wait_for(lambda: self.passing_ids("vhost") == ["vhost-1"], 5)
            # a Location too long to follow, or no URL at all: the 302 is the answer
            for path in ("/long", "/junk"):
                self.register({"Name": "badloc", "ID": "badloc" + path.replace("/", "-"),
                               "Check": {"HTTP": base + path, "Interval": "300ms"}})
            for cid in ("service:badloc-long", "service:badloc-junk"):
                self.wait_for(lambda: (self.check(cid)["Output"] or "") != "", 5)
                self.assertEqual(self.status_of(cid), "critical")
            self.assertIn("302", self.check("service:badloc-long")["Output"])
            self.assertEqual(self.d.request("GET", "/v1/status/leader")[0], 200)
            # to another host: the check's Host and credentials stay behind
            other = Endpoint(host="127.0.0.2")
            try:
                ep.cross = "http://127.0.0.2:%d/ok" % other.port
                self.register({"Name": "cross", "ID": "cross-1",
                               "Check": {"HTTP": base + "/cross", "Interval": "300ms",
                                         "Header": {"Host": ["example.com"],
                                                    "Authorization": ["Bearer s3cret"]}}})
                self.wait_for(lambda: self.passing_ids("cross") == ["cross-1"], 5)
                self.assertTrue(other.seen)
                self.assertEqual(other.seen[-1][1], ["127.0.0.2:%d" % other.port])
                self.assertEqual(other.auth[-1], None)
                self.assertIn(["Bearer s3cret"], ep.auth)
            finally:
                other.stop()
            vhost = [s for s in ep.seen if s[2] == ["probe/1"]]
            self.assertTrue(vhost)
            self.assertEqual(vhost[-1][1], ["example.com"])
            # the redirected request went to /ok, on the URL's own Host
            self.assertIn(("/ok", ["127.0.0.1:%d" % ep.port], ["Consul Health Check"]),
                          ep.seen)
        finally:
            ep.stop()

    def test_tcp_check(self):
        lst = TcpListener()
        try:
            self.register({"Name": "htcp", "ID": "htcp-1", "Port": lst.port,
                           "Check": {"TCP": "127.0.0.1:%d" % lst.port, "Interval": "300ms"}})
            self.wait_for(lambda: self.passing_ids("htcp") == ["htcp-1"], 3)
            lst.stop()
            took = self.wait_for(lambda: self.passing_ids("htcp") == [], 10)
            self.assertLess(took, 0.3 + 1 + SLACK)
            self.assertIn("refused", self.check("service:htcp-1")["Output"].lower())
            lst.start()
            self.wait_for(lambda: self.passing_ids("htcp") == ["htcp-1"], 3)
        finally:
            lst.stop()

    def test_https_verify_on_and_off(self):
        ep = Endpoint(tls_cert=self_signed_cert(self.tmp.name))
        try:
            url = "https://127.0.0.1:%d/" % ep.port
            self.register({"Name": "htls", "ID": "htls-verify",
                           "Check": {"HTTP": url, "Interval": "300ms"}})
            self.register({"Name": "htls", "ID": "htls-skip",
                           "Check": {"HTTP": url, "Interval": "300ms", "TLSSkipVerify": True}})
            self.wait_for(lambda: self.passing_ids("htls") == ["htls-skip"], 3)
            self.wait_for(lambda: "TLS" in (self.check("service:htls-verify")["Output"]), 3)
            self.assertEqual(self.status_of("service:htls-verify"), "critical")
        finally:
            ep.stop()

    def test_ttl_expiry_and_heartbeats(self):
        # (a TTL well above the heartbeats' gap: a slow request under ASan
        # must not let it expire between two)
        self.register({"Name": "httl", "ID": "httl-1", "Check": {"TTL": "3s"}})
        self.assertEqual(self.status_of("service:httl-1"), "critical")
        status, _ = self.d.request("PUT", "/v1/agent/check/pass/service:httl-1")
        self.assertEqual(status, 200)
        self.assertEqual(self.passing_ids("httl"), ["httl-1"])
        index = self.check("service:httl-1")["ModifyIndex"]
        # heartbeats that change nothing keep it alive and write nothing
        for _ in range(4):
            time.sleep(0.4)
            self.assertEqual(self.d.request("PUT", "/v1/agent/check/pass/service:httl-1")[0], 200)
        self.assertEqual(self.status_of("service:httl-1"), "passing")
        self.assertEqual(self.check("service:httl-1")["ModifyIndex"], index)
        took = self.wait_for(lambda: self.status_of("service:httl-1") == "critical", 6)
        self.assertGreater(took, 1.5)
        self.assertEqual(self.check("service:httl-1")["Output"], "TTL expired")


    def test_ttl_expiry_keeps_the_last_output(self):
        # Consul's CheckTTL.getExpiredOutput: clients read heartbeat data back
        self.register({"Name": "outttl", "ID": "outttl-1", "Check": {"TTL": "1s"}})
        status, _ = self.d.request("PUT", "/v1/agent/check/pass/service:outttl-1?note=hb%201")
        self.assertEqual(status, 200)
        self.wait_for(lambda: self.status_of("service:outttl-1") == "critical", 3)
        self.assertEqual(self.check("service:outttl-1")["Output"],
                         "TTL expired (last output before timeout follows): hb 1")

    def test_ttl_reregistered_with_another_ttl(self):
        """The checker keeps a TTL check's numbers, not its definition: a
        re-registration that changes only the TTL still re-arms it with the
        new one (and one that changes nothing keeps the old timer)."""
        self.register({"Name": "rettl", "ID": "rettl-1", "Check": {"TTL": "60s"}})
        self.assertEqual(self.d.request("PUT", "/v1/agent/check/pass/service:rettl-1")[0], 200)
        self.register({"Name": "rettl", "ID": "rettl-1", "Check": {"TTL": "60s"}})
        self.assertEqual(self.d.request("PUT", "/v1/agent/check/pass/service:rettl-1")[0], 200)
        time.sleep(1.5)
        self.assertEqual(self.status_of("service:rettl-1"), "passing")
        self.register({"Name": "rettl", "ID": "rettl-1", "Check": {"TTL": "1s"}})
        self.assertEqual(self.d.request("PUT", "/v1/agent/check/pass/service:rettl-1")[0], 200)
        took = self.wait_for(lambda: self.status_of("service:rettl-1") == "critical", 5)
        self.assertLess(took, 3)
        self.assertEqual(self.check("service:rettl-1")["Output"], "TTL expired")
    def test_check_moved_to_another_instance(self):
        """A check registered again under another instance moves: the old
        instance no longer lists it, the checker runs it once, and the
        store's own snapshot restores. The stale index link left behind made
        the checker free the check from one list and keep it in the other:
        a use-after-free on the next change (found by probing)."""
        put = lambda path, body=None: self.assertEqual(self.d.request(
            "PUT", path, json.dumps(body) if body is not None else None)[0], 200, path)
        self.register({"Name": "mva", "ID": "mva-1", "Check": {"CheckID": "mvc", "TTL": "600s"}})
        self.register({"Name": "mvb", "ID": "mvb-1"})
        put("/v1/agent/check/register",
            {"Name": "x", "CheckID": "mvc", "ServiceID": "mvb-1", "TTL": "600s"})
        owners = lambda name: [c["ServiceID"] for e in json.loads(self.d.request(
            "GET", "/v1/health/service/" + name)[1]) for c in e["Checks"] if c["CheckID"] == "mvc"]
        self.assertEqual((owners("mva"), owners("mvb")), ([], ["mvb-1"]))
        self.register({"Name": "mva", "ID": "mva-1", "Check": {"CheckID": "mvc", "TTL": "600s"}})
        self.assertEqual((owners("mva"), owners("mvb")), (["mva-1"], []))
        put("/v1/agent/check/pass/mvc")
        for port in (1, 2, 3):
            self.register({"Name": "mvb", "ID": "mvb-1", "Port": port})
        self.register({"Name": "mva", "ID": "mva-1", "Port": 4})
        self.assertEqual(self.status_of("mvc"), "passing")
        self.assertIsNone(self.d.proc.poll(), "registryd died")
        with urllib.request.urlopen("http://%s/v1/snapshot" % self.d.addr, timeout=30) as r:
            snap = r.read()
        code, text = self.d.request("PUT", "/v1/snapshot", snap)
        self.assertEqual(code, 200, text)
        self.assertEqual((owners("mva"), owners("mvb")), (["mva-1"], []))

    def test_restored_interval_below_the_floor_is_held_to_it(self):
        """The API refuses an Interval under 100 ms; a snapshot could carry
        one (1 ms: a probe a millisecond, found by probing). The checker
        holds any record to 100 ms."""
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import snapfmt
        ep = Endpoint()
        try:
            self.register({"Name": "fast", "ID": "fast-1", "Check": {
                "CheckID": "fast-http", "HTTP": "http://127.0.0.1:%d/" % ep.port,
                "Interval": "10s"}})
            with urllib.request.urlopen("http://%s/v1/snapshot" % self.d.addr,
                                        timeout=30) as r:
                index, recs = snapfmt.parse(r.read())
            table = snapfmt.TABLES.index("checks")
            out = []
            for t, k, v in recs:
                if t == table and k == b"fast-http":
                    rec = json.loads(v)
                    rec["Definition"]["Interval"] = "1ms"
                    v = json.dumps(rec, separators=(",", ":")).encode()
                out.append((t, k, v))
            code, text = self.d.request("PUT", "/v1/snapshot", snapfmt.build(index, out))
            self.assertEqual(code, 200, text)
            time.sleep(0.5)
            before = ep.hits
            time.sleep(2)
            self.assertLess(ep.hits - before, 40, "probes in 2 s")  # 1 ms: ~2000
            self.assertGreater(ep.hits - before, 5)
        finally:
            ep.stop()
            self.d.request("PUT", "/v1/agent/service/deregister/fast-1")

    def test_flapping_endpoint_does_not_flap(self):
        ep = Endpoint()
        try:
            self.register({"Name": "hflap", "ID": "hflap-1",
                           "Check": {"HTTP": "http://127.0.0.1:%d/" % ep.port,
                                     "Interval": "200ms", "SuccessBeforePassing": 3,
                                     "FailuresBeforeCritical": 3}})
            self.wait_for(lambda: self.status_of("service:hflap-1") == "passing", 3)
            index = self.check("service:hflap-1")["ModifyIndex"]
            ep.codes = [200, 500]  # alternates on every probe
            hits = ep.hits
            time.sleep(2)
            self.assertGreater(ep.hits - hits, 5)
            c = self.check("service:hflap-1")
            self.assertEqual(c["Status"], "passing")
            self.assertEqual(c["ModifyIndex"], index)
        finally:
            ep.stop()

    def test_output_max_size(self):
        # Consul's OutputMaxSize: a check keeps at most that much output
        ep = Endpoint()
        self.addCleanup(self.d.request, "PUT", "/v1/agent/service/deregister/omax-1")
        try:
            self.register({"Name": "omax", "ID": "omax-1", "Checks": [
                {"CheckID": "omax-http", "HTTP": "http://127.0.0.1:%d/" % ep.port,
                 "Interval": "200ms", "OutputMaxSize": 20},
                {"CheckID": "omax-ttl", "TTL": "60s", "OutputMaxSize": 10}]})
            self.wait_for(lambda: self.status_of("omax-http") == "passing", 3)
            out = self.check("omax-http")["Output"]
            self.assertTrue(0 < len(out.encode()) <= 20, out)
            self.assertEqual(self.check("omax-http")["Definition"]["OutputMaxSize"], 20)
            status, _ = self.d.request("PUT", "/v1/agent/check/update/omax-ttl",
                                       json.dumps({"Status": "passing", "Output": "x" * 100}))
            self.assertEqual(status, 200)
            self.assertEqual(self.check("omax-ttl")["Output"],
                             "x" * 10 + " ... (captured 10 of 100 bytes)")
        finally:
            ep.stop()

    def test_deregister_after_has_consuls_floor(self):
        # Consul's agent raises DeregisterCriticalServiceAfter to 1 minute; a
        # server here does the same with its --check-deregister-min
        d = Registryd(extra_args=["--check-deregister-min", "3s"]).start()
        try:
            status, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "floor", "ID": "floor-1",
                 "Check": {"TTL": "60s", "DeregisterCriticalServiceAfter": "1s"}}))
            self.assertEqual(status, 200, text)
            self.assertEqual(d.request("PUT", "/v1/agent/check/fail/service:floor-1")[0], 200)
            start = time.monotonic()
            ids = lambda: set(json.loads(d.request("GET", "/v1/agent/services")[1]))
            time.sleep(2.2)  # past the check's own 1 s (and its 1 s tick)
            self.assertIn("floor-1", ids())
            while "floor-1" in ids() and time.monotonic() - start < 8:
                time.sleep(0.1)
            took = time.monotonic() - start
            self.assertNotIn("floor-1", ids())
            self.assertGreater(took, 2.9)
        finally:
            d.stop()

    def test_node_level_checks_are_run(self):
        # /v1/agent/check/register without ServiceID: the node's own check,
        # probed like a service's, counted for every instance on the node
        # (python-consul's agent.check.register without service_id). It was
        # refused with 400.
        ep = Endpoint()
        self.addCleanup(self.d.request, "PUT", "/v1/agent/check/deregister/node-http")
        self.addCleanup(self.d.request, "PUT", "/v1/agent/check/deregister/node-ttl")
        self.addCleanup(self.d.request, "PUT", "/v1/agent/service/deregister/nodechk-1")
        try:
            self.register({"Name": "nodechk", "ID": "nodechk-1"})
            status, text = self.d.request("PUT", "/v1/agent/check/register", json.dumps(
                {"Name": "node-http", "HTTP": "http://127.0.0.1:%d/" % ep.port,
                 "Interval": "200ms"}))
            self.assertEqual(status, 200, text)
            self.wait_for(lambda: self.status_of("node-http") == "passing", 3)
            c = self.check("node-http")
            self.assertEqual((c["ServiceID"], c["Type"]), ("", "http"))
            self.assertIn("node-http", [x["CheckID"] for x in json.loads(
                self.d.request("GET", "/v1/health/service/nodechk")[1])[0]["Checks"]])
            self.assertEqual(self.passing_ids("nodechk"), ["nodechk-1"])
            ep.code = 500  # the node fails: so does every instance on it
            self.wait_for(lambda: self.status_of("node-http") == "critical", 3)
            self.assertEqual(self.passing_ids("nodechk"), [])
            ep.code = 200
            self.wait_for(lambda: self.passing_ids("nodechk") == ["nodechk-1"], 3)
            # a TTL node check: heartbeats and expiry
            status, text = self.d.request("PUT", "/v1/agent/check/register", json.dumps(
                {"Name": "node-ttl", "TTL": "1s"}))
            self.assertEqual(status, 200, text)
            self.assertEqual(self.d.request("PUT", "/v1/agent/check/pass/node-ttl")[0], 200)
            self.assertEqual(self.status_of("node-ttl"), "passing")
            self.wait_for(lambda: self.status_of("node-ttl") == "critical", 4)
            self.assertIn("TTL expired", self.check("node-ttl")["Output"])
            # deregistered, it stops: no probe reaches the endpoint any more
            self.assertEqual(self.d.request("PUT", "/v1/agent/check/deregister/node-http")[0],
                             200)
            self.assertIsNone(self.check("node-http"))
            time.sleep(0.5)
            hits = ep.hits
            time.sleep(0.8)
            self.assertEqual(ep.hits, hits)
        finally:
            ep.stop()

    def test_failures_before_warning(self):
        # Consul 1.11's FailuresBeforeWarning: failures first show as
        # warning, critical only after FailuresBeforeCritical
        ep = Endpoint()
        self.addCleanup(self.d.request, "PUT", "/v1/agent/service/deregister/hwarn-1")
        try:
            self.register({"Name": "hwarn", "ID": "hwarn-1",
                           "Check": {"HTTP": "http://127.0.0.1:%d/" % ep.port,
                                     "Interval": "200ms", "FailuresBeforeWarning": 1,
                                     "FailuresBeforeCritical": 5}})
            self.wait_for(lambda: self.status_of("service:hwarn-1") == "passing", 3)
            self.assertEqual(self.check("service:hwarn-1")["Definition"]
                             .get("FailuresBeforeWarning"), 1)
            ep.code = 500
            seen, start = [], time.monotonic()
            while time.monotonic() - start < 5 and "critical" not in seen:
                st = self.status_of("service:hwarn-1")
                if not seen or seen[-1] != st:
                    seen.append(st)
                time.sleep(0.05)
            self.assertEqual(seen, ["passing", "warning", "critical"])
            self.assertEqual(self.passing_ids("hwarn"), [])
            ep.code = 200
            self.wait_for(lambda: self.status_of("service:hwarn-1") == "passing", 3)
        finally:
            ep.stop()
        code, text = self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "hwarn", "ID": "hwarn-2", "Check": {
                "HTTP": "http://127.0.0.1:1/", "Interval": "1s", "FailuresBeforeWarning": -1}}))
        self.assertEqual(code, 400, text)

    def test_blocking_query_wakes_on_transition(self):
        ep = Endpoint()
        try:
            self.register({"Name": "hblock", "ID": "hblock-1",
                           "Check": {"HTTP": "http://127.0.0.1:%d/" % ep.port,
                                     "Interval": "300ms"}})
            self.wait_for(lambda: self.passing_ids("hblock") == ["hblock-1"], 3)
            status, _, headers = self.d.request_full("GET", "/v1/health/service/hblock")
            index = headers["X-Consul-Index"]
            threading.Timer(0.5, ep.stop).start()
            start = time.monotonic()
            status, text, headers = self.d.request_full(
                "GET", "/v1/health/service/hblock?index=%s&wait=20s" % index)
            self.assertLess(time.monotonic() - start, 5)
            self.assertNotEqual(headers["X-Consul-Index"], index)
            self.assertEqual(json.loads(text)[0]["Checks"][-1]["Status"], "critical")
        finally:
            ep.stop()

    def test_maintenance_suppresses_checks(self):
        ep = Endpoint()
        try:
            self.register({"Name": "hmaint", "ID": "hmaint-1",
                           "Check": {"HTTP": "http://127.0.0.1:%d/" % ep.port,
                                     "Interval": "200ms", "DeregisterCriticalServiceAfter": "1s"}})
            self.wait_for(lambda: self.passing_ids("hmaint") == ["hmaint-1"], 3)
            status, _ = self.d.request(
                "PUT", "/v1/agent/service/maintenance/hmaint-1?enable=true&reason=deploy")
            self.assertEqual(status, 200)
            self.assertEqual(self.passing_ids("hmaint"), [])
            ep.stop()
            time.sleep(2.5)  # longer than failure detection plus deregistration
            self.assertEqual(self.status_of("service:hmaint-1"), "passing")
            self.assertIn("hmaint-1", self.service_ids())
            self.d.request("PUT", "/v1/agent/service/maintenance/hmaint-1?enable=false")
            self.wait_for(lambda: self.status_of("service:hmaint-1") == "critical", 3)
        finally:
            ep.stop()

    def test_bad_check_definitions(self):
        cases = [
            ({"HTTP": "http://127.0.0.1:1/", "Interval": "-1s"}, "Interval"),
            ({"HTTP": "ftp://127.0.0.1/", "Interval": "1s"}, "http://"),
            # (a Timeout past the Interval is Consul's to take: test_compat)
            ({"HTTP": "http://127.0.0.1:1/", "Interval": "1s", "FailuresBeforeWarning": 2},
             "FailuresBeforeWarning can't be higher"),
            ({"TCP": "127.0.0.1:1", "Interval": "10parsecs"}, "Interval"),
            ({"TCP": "127.0.0.1:1"}, "Interval"),
            ({"TTL": "1s", "HTTP": "http://x/", "Interval": "1s"}, "exactly one"),
            ({"TTL": "1ms"}, "TTL"),
            ({"HTTP": "http://127.0.0.1:1/", "Interval": "1s", "FailuresBeforeCritical": -1},
             "FailuresBeforeCritical"),
        ]
        for check, why in cases:
            status, text = self.d.request("PUT", "/v1/agent/service/register",
                                          json.dumps({"Name": "hbad", "ID": "hbad-1",
                                                      "Check": check}))
            self.assertEqual(status, 400, (check, text))
            self.assertIn(why, text, check)
        self.assertNotIn("hbad-1", self.service_ids())


class CheckUpdateIntervalTest(unittest.TestCase):
    """A check whose status does not change gets its output written at most
    every --check-update-interval, except its first result, which replaces
    the registration's empty output at once. The checker's clock is
    CLOCK_MONOTONIC, which starts at boot: "never written" must not read as
    "written at time 0", or on a machine up for less than the interval (5m by
    default: a fresh CI machine) the first output is held back too. An
    interval longer than any uptime makes that case happen on every machine."""

    def test_first_output_written_then_held(self):
        d = Registryd(extra_args=["--check-update-interval", "100000h"])
        d.start()
        ep = Endpoint()
        ep.code = 500
        try:
            status, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "hupd", "ID": "hupd-1",
                 "Check": {"HTTP": "http://127.0.0.1:%d/" % ep.port, "Interval": "200ms"}}))
            self.assertEqual(status, 200, text)

            def output():
                return json.loads(d.request("GET", "/v1/agent/checks")[1])["service:hupd-1"]

            deadline = time.monotonic() + 3
            while "500" not in output()["Output"] and time.monotonic() < deadline:
                time.sleep(0.05)
            c = output()
            self.assertEqual(c["Status"], "critical")
            self.assertIn("status 500", c["Output"])
            ep.code = 503  # still critical, new output: held back for the interval
            hits = ep.hits
            time.sleep(1)
            self.assertGreater(ep.hits - hits, 2)
            self.assertEqual(output()["Output"], c["Output"])
            self.assertEqual(output()["ModifyIndex"], c["ModifyIndex"])
        finally:
            ep.stop()
            d.stop()


class SelfPreservationTest(unittest.TestCase):
    def test_mass_failure_holds_deregistration(self):
        d = Registryd(extra_args=["--self-preservation-window", "10s",
                                  "--check-deregister-min", "0s"])
        d.start()
        eps = [Endpoint() for _ in range(12)]
        try:
            for i, ep in enumerate(eps):
                status, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                    {"Name": "fleet", "ID": "fleet-%d" % i, "Port": ep.port,
                     "Check": {"HTTP": "http://127.0.0.1:%d/" % ep.port, "Interval": "300ms",
                               "DeregisterCriticalServiceAfter": "1s"}}))
                self.assertEqual(status, 200, text)

            def stats():
                return json.loads(d.request("GET", "/v1/agent/self")[1])["Stats"]["health"]

            def passing():
                return len(json.loads(d.request("GET", "/v1/health/service/fleet?passing")[1]))

            deadline = time.monotonic() + 5
            while passing() < 12 and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(passing(), 12)
            self.assertEqual(stats()["self_preservation"], "false")
            # the whole fleet "fails" at once: the checker is suspect. Not by
            # stopping the endpoints: each stop waits up to half a second for
            # its server's loop, so under load the first was critical (and
            # deregistered) before the last had stopped
            for ep in eps:
                ep.code = 503
            deadline = time.monotonic() + 5
            while stats()["self_preservation"] != "true" and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(stats()["self_preservation"], "true")
            time.sleep(2.5)  # well past DeregisterCriticalServiceAfter
            services = json.loads(d.request("GET", "/v1/agent/services")[1])
            self.assertEqual(len(services), 12)
            for ep in eps:
                ep.code = 200
            deadline = time.monotonic() + 5
            while (stats()["self_preservation"] == "true" or passing() < 12) and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(stats()["self_preservation"], "false")
            self.assertEqual(passing(), 12)
        finally:
            for ep in eps:
                ep.stop()
            d.stop()


class TlsService:
    """An HTTPS service (Python's ssl) with a certificate from certs.py that
    records, per request, the client certificate's CN (None: none was sent)
    and the SNI name of the handshake. require: a client certificate signed
    by ca is required; else one is asked for but optional. reset: every
    connection is reset (SO_LINGER 0) once the handshake is done, as a
    requiring service's close can beat its alert to the client."""

    def __init__(self, cert, key, ca, require=False, reset=False):
        self.port = free_port()
        self.clients = []
        self.sni = []
        svc = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle(self):
                if not reset:
                    return super().handle()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                os.close(self.connection.detach())  # no close_notify, no FIN: a reset
                return None

            def do_GET(self):
                peer = self.connection.getpeercert()
                cn = None
                for rdn in (peer or {}).get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            cn = v
                svc.clients.append(cn)
                body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if require else ssl.CERT_OPTIONAL
        ctx.sni_callback = lambda sock, name, c: svc.sni.append(name)
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self):
        return "https://127.0.0.1:%d/" % self.port

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class CheckTlsTest(unittest.TestCase):
    """enable_agent_tls_for_checks and TLSServerName against real HTTPS
    services: one server with the setting (agent), one with the same TLS
    files without it (plain)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.certs = make_certs(os.path.join(cls.tmp.name, "certs"))
        c = cls.certs
        cls.agent = Registryd(extra_args=tls_args(c) + ["--enable-agent-tls-for-checks"]).start()
        cls.plain = Registryd(extra_args=tls_args(c)).start()
        cls.mtls = TlsService(c["server_cert"], c["server_key"], c["ca"], require=True)
        cls.optional = TlsService(c["server_cert"], c["server_key"], c["ca"])
        cls.rogue = TlsService(c["rogue_server_cert"], c["rogue_server_key"], c["ca"])
        cls.resets = TlsService(c["server_cert"], c["server_key"], c["ca"], reset=True)

    @classmethod
    def tearDownClass(cls):
        for svc in (cls.mtls, cls.optional, cls.rogue, cls.resets):
            svc.stop()
        cls.agent.stop()
        cls.plain.stop()
        cls.tmp.cleanup()

    def register(self, d, sid, check):
        check = dict(check, Interval="300ms", Timeout="300ms")
        status, text = d.request("PUT", "/v1/agent/service/register",
                                 json.dumps({"Name": "tls", "ID": sid, "Check": check}))
        self.assertEqual(status, 200, text)

    def settle(self, d, sid, want, timeout=5):
        """Wait (bounded) for the check of sid to reach status want; its output."""
        deadline = time.monotonic() + timeout
        while True:
            checks = json.loads(d.request("GET", "/v1/agent/checks")[1])
            c = checks.get("service:" + sid)
            if c and c["Status"] == want and c["Output"]:
                return c["Output"]
            if time.monotonic() > deadline:
                self.fail("%s: %s, want %s" % (sid, c and (c["Status"], c["Output"]), want))
            time.sleep(0.1)

    def test_agent_tls_presents_certificate_and_trusts_ca(self):
        self.register(self.agent, "a-mtls", {"HTTP": self.mtls.url()})
        self.settle(self.agent, "a-mtls", "passing")
        self.assertIn("server.dc1.registry", self.mtls.clients)
        # a service whose certificate another CA signed is not trusted
        self.register(self.agent, "a-rogue", {"HTTP": self.rogue.url()})
        out = self.settle(self.agent, "a-rogue", "critical")
        self.assertIn("certificate verify failed", out)
        self.assertIn("local issuer", out)
        # unless told not to verify (the certificate is still presented)
        self.register(self.agent, "a-rogue-skip", {"HTTP": self.rogue.url(),
                                                   "TLSSkipVerify": True})
        self.settle(self.agent, "a-rogue-skip", "passing")
        self.assertIn("server.dc1.registry", self.rogue.clients)

    def test_tls_server_name(self):
        # a name the certificate does not carry: critical, saying why
        self.register(self.agent, "n-wrong", {"HTTP": self.mtls.url(),
                                              "TLSServerName": "wrongname.example"})
        out = self.settle(self.agent, "n-wrong", "critical")
        self.assertIn("hostname mismatch", out.lower())
        self.assertIn("wrongname.example", self.mtls.sni)
        # names it carries: passing, and sent as SNI
        for sid, name in (("n-localhost", "localhost"), ("n-server", "server.dc1.registry")):
            self.register(self.agent, sid, {"HTTP": self.mtls.url(), "TLSServerName": name})
            self.settle(self.agent, sid, "passing")
            self.assertIn(name, self.mtls.sni)
        # the same on a server without agent TLS (its check skips the CA but
        # not the name)
        self.register(self.plain, "p-wrong", {"HTTP": self.optional.url(),
                                              "TLSServerName": "wrongname.example"})
        self.settle(self.plain, "p-wrong", "critical")
        checks = json.loads(self.agent.request("GET", "/v1/agent/checks")[1])
        self.assertEqual(checks["service:n-localhost"]["Definition"]["TLSServerName"],
                         "localhost")

    def test_without_agent_tls_no_client_certificate(self):
        # a service that requires a client certificate fails the check, naming why
        self.register(self.plain, "p-mtls", {"HTTP": self.mtls.url(), "TLSSkipVerify": True})
        out = self.settle(self.plain, "p-mtls", "critical")
        # the service's alert, or (when its close reset the connection before
        # the alert was read) the probe's own note that a certificate was asked for
        self.assertTrue("certificate required" in out or "asked for a client certificate" in out,
                        out)
        # a reset after the handshake is not a TLS reason: the output names
        # the certificate asked for (it read "error:00000005:lib(0)::reason(5)",
        # libevent's SSL_ERROR_SYSCALL, when the service's close beat its alert)
        self.register(self.plain, "p-resets", {"HTTP": self.resets.url(), "TLSSkipVerify": True})
        out = self.settle(self.plain, "p-resets", "critical")
        self.assertIn("asked for a client certificate", out)
        self.assertNotIn("lib(0)", out)
        # one that only asks for it passes, and got none
        before = len(self.optional.clients)
        self.register(self.plain, "p-optional", {"HTTP": self.optional.url(),
                                                 "TLSSkipVerify": True})
        self.settle(self.plain, "p-optional", "passing")
        self.assertGreater(len(self.optional.clients), before)
        self.assertEqual(set(self.optional.clients[before:]), {None})
        # and the test CA is not among the system's: verification fails
        self.register(self.plain, "p-verify", {"HTTP": self.optional.url()})
        out = self.settle(self.plain, "p-verify", "critical")
        self.assertIn("certificate verify failed", out)


if __name__ == "__main__":
    unittest.main()
