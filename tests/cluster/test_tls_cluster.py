#!/usr/bin/python3
"""Three servers with mutual TLS and HTTPS listeners only (http_addr ""):
they form (hellos and joins over HTTPS), a registration written through a
follower is forwarded to the leader and replicated, check results travel
the channel, and after the leader is killed writes resume. No server has a
plain HTTP listener at all, so no server-to-server request can be plain
HTTP; and a client certificate is not a server's."""
import http.server
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import certs  # noqa: E402
from harness import TempDir, TlsRegistryd, free_port, listening_ports, start_cluster  # noqa: E402


class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


class TlsClusterTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.paths = certs.make_certs(os.path.join(self.tmp.path, "certs"))
        self.client = (self.paths["client_cert"], self.paths["client_key"])
        self.servers = []
        start_cluster(self.tmp.path, 3, servers=self.servers,
                      factory=lambda data_dir: TlsRegistryd(
                          self.paths, data_dir=data_dir, verify_incoming=True,
                          client=self.client))

    def tearDown(self):
        for d in self.servers:
            if d.proc is not None:
                d.stop(check=False)
        self.tmp.cleanup()

    def self_of(self, d):
        server = (self.paths["server_cert"], self.paths["server_key"])
        return json.loads(d.request("GET", "/v1/internal/raft/self", client=server)[1])

    def leader(self, among=None, timeout=15):
        among = among or [d for d in self.servers if d.proc is not None]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = set()
            for d in among:
                try:
                    status, text = d.request("GET", "/v1/status/leader", timeout=2)
                    seen.add(json.loads(text) if status == 200 else "")
                except OSError:
                    seen.add("")
            if len(seen) == 1 and "" not in seen:
                addr = seen.pop()
                for d in among:
                    if self.self_of(d)["Raft"] == addr:
                        return d
            time.sleep(0.1)
        self.fail("no agreed leader within %ds" % timeout)

    def register_through(self, d, sid, timeout=15):
        """Register sid at d, retrying through an election; the final answer."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                    {"Name": "web", "ID": sid, "Port": 80, "Check": {"TTL": "60s"}}),
                    timeout=10)
            except OSError as e:
                status, text = 0, str(e)
            if status == 200 or time.monotonic() > deadline:
                return status, text
            time.sleep(0.2)

    def probes(self, d):
        text = d.request("GET", "/v1/agent/metrics?format=prometheus")[1]
        for line in text.splitlines():
            if line.startswith("registryd_checker_probes_total "):
                return float(line.split()[1])
        return 0

    def passing(self, d):
        text = d.request("GET", "/v1/health/service/h?passing")[1]
        return [e["Service"]["ID"] for e in json.loads(text)]

    def wait_everywhere(self, sid, among, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(sid in json.loads(d.request("GET", "/v1/agent/services?stale")[1])
                   for d in among):
                return
            time.sleep(0.1)
        self.fail("%s not replicated to every server" % sid)

    def test_large_restore_through_a_follower(self):
        """The follower forwards the file its guard wrote over the mutual-TLS
        channel (a file segment through OpenSSL), the leader spools it."""
        import bigstore
        leader = self.leader()
        follower = [d for d in self.servers if d is not leader][0]
        big = bigstore.big_snapshot(12000)
        self.assertGreater(len(big), 4 << 20)
        status, text = follower.request("PUT", "/v1/snapshot", big, timeout=60)
        self.assertEqual(status, 200, text)
        deadline = time.monotonic() + 20
        count = lambda d: len(json.loads(d.request("GET", "/v1/agent/services?stale")[1]))
        while time.monotonic() < deadline and not all(count(d) == 12000 for d in self.servers):
            time.sleep(0.2)
        self.assertEqual([count(d) for d in self.servers], [12000] * 3)

    def test_forms_replicates_and_survives_a_leader_kill(self):
        for d in self.servers:  # HTTPS, DNS, raft: no plain HTTP port anywhere
            me = self.self_of(d)
            raft_port = int(me["Raft"].rsplit(":", 1)[1])
            self.assertEqual(listening_ports(d.proc.pid), {d.https_port, d.dns_port, raft_port})
            self.assertEqual(me["HTTP"], d.addr)  # announces its HTTPS address
        leader = self.leader()
        followers = [d for d in self.servers if d is not leader]
        # a write through a follower: forwarded to the leader over mutual TLS
        status, text = self.register_through(followers[0], "web-1")
        self.assertEqual(status, 200, text)
        self.wait_everywhere("web-1", self.servers)
        # a TTL pass at another follower travels the channel too
        status, text = followers[1].request("PUT", "/v1/agent/check/pass/service:web-1")
        self.assertEqual(status, 200, text)
        # ?consistent at a follower: the leader confirms and answers
        status, text = followers[1].request("GET", "/v1/catalog/service/web?consistent")
        self.assertEqual(status, 200, text)
        self.assertEqual([e["ServiceID"] for e in json.loads(text)], ["web-1"])
        # checks are shared among the live servers: peer liveness probes
        # (GET /v1/internal/raft/self) pass over mutual TLS, and the
        # followers' results reach the leader (PUT /v1/internal/apply)
        ep = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Ok)
        threading.Thread(target=ep.serve_forever, daemon=True).start()
        self.addCleanup(ep.server_close)
        self.addCleanup(ep.shutdown)
        # 30 checks: each server owns some by rendezvous hashing on random
        # server ids (with 9, one server owned none in 2.6% of runs: (2/3)^9)
        for i in range(30):
            status, text = self.servers[i % 3].request("PUT", "/v1/agent/service/register",
                json.dumps({"Name": "h", "ID": "h-%d" % i, "Check": {
                    "HTTP": "http://127.0.0.1:%d/%d" % (ep.server_address[1], i),
                    "Interval": "300ms"}}))
            self.assertEqual(status, 200, text)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(self.probes(d) > 0 for d in self.servers):
            time.sleep(0.2)
        self.assertTrue(all(self.probes(d) > 0 for d in self.servers),
                        [self.probes(d) for d in self.servers])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(self.passing(leader)) < 30:
            time.sleep(0.2)
        self.assertEqual(len(self.passing(leader)), 30)
        # a client certificate is not a server's, on any server
        for d in self.servers:
            status, text = d.request("GET", "/v1/internal/raft/self")
            self.assertEqual(status, 403, text)

        leader.kill9()
        survivors = followers
        new_leader = self.leader(among=survivors, timeout=20)
        follower = [d for d in survivors if d is not new_leader][0]
        status, text = self.register_through(follower, "web-2")
        self.assertEqual(status, 200, text)
        self.wait_everywhere("web-2", survivors)

        # the old leader comes back and catches up over TLS
        leader.start(wait=False)
        leader.wait_ready(timeout=30)
        self.wait_everywhere("web-2", self.servers, timeout=20)
        for d in self.servers:
            for line in d.log().splitlines():
                self.assertNotIn("level=error", line, line)
        for d in self.servers:  # a clean exit: status 0, no sanitizer report
            d.stop()


if __name__ == "__main__":
    unittest.main()
