#!/usr/bin/python3
"""Hostile clients: GET never mutates, NUL and control characters are
refused, the last voter cannot be removed, and neither idle-connection floods
(file descriptors exhausted) nor slow clients (slowloris) keep other clients
from being served."""
import json
import os
import socket
import time
import unittest

from harness import Registryd, TempDir

REG = "/v1/agent/service/register"


class HostileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.d = Registryd(data_dir=os.path.join(cls.tmp.path, "d")).start()
        for sid in ("db-1", "web-1"):
            status, text = cls.d.request("PUT", REG, json.dumps(
                {"Name": sid[:-2], "ID": sid, "Port": 1, "Check": {"TTL": "600s"}}))
            assert status == 200, text

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.tmp.cleanup()

    def services(self):
        return sorted(json.loads(self.d.request("GET", "/v1/agent/services")[1]))

    def test_get_never_mutates(self):
        for path in ("/v1/agent/service/deregister/db-1", "/v1/agent/check/pass/service:db-1",
                     "/v1/agent/check/warn/service:db-1", "/v1/agent/check/fail/service:db-1",
                     "/v1/agent/check/update/service:db-1", "/v1/agent/service/register",
                     "/v1/agent/service/maintenance/db-1?enable=true"):
            with self.subTest(path=path):
                status, text, headers = self.d.request_full("GET", path)
                self.assertEqual(status, 405, text)
                allow = [m.strip() for m in headers["Allow"].split(",")]
                self.assertIn("PUT", allow)
                self.assertNotIn("GET", allow)
        self.assertEqual(self.services(), ["db-1", "web-1"])
        checks = json.loads(self.d.request("GET", "/v1/agent/checks")[1])
        self.assertEqual(checks["service:db-1"]["Status"], "critical")

    def test_nul_and_control_characters(self):
        for method, path in (("PUT", "/v1/agent/service/deregister/db-1%00zzz"),
                             ("PUT", "/v1/agent/service/deregister/db-1%0a"),
                             ("PUT", "/v1/agent/check/pass/service:db-1%00x"),
                             ("GET", "/v1/catalog/service/db%00evil"),
                             ("GET", "/v1/health/service/db%01"),
                             ("GET", "/v1/catalog/service/db?tag=a%00b"),
                             ("GET", "/v1/catalog/services?x%00=1")):
            with self.subTest(path=path):
                status, text = self.d.request(method, path)
                self.assertEqual(status, 400, text)
        self.assertEqual(self.services(), ["db-1", "web-1"])

    def test_removing_an_unknown_or_malformed_peer(self):
        # an id not in the configuration was a 500 "replication error"; a
        # malformed one printed a NULL address into its message
        for query, status, why in (("id=999", 404, "No raft peer with id 999"),
                                   ("address=127.0.0.1:1", 404, "127.0.0.1:1"),
                                   ("id=0", 400, "positive integer"),
                                   ("id=abc", 400, "positive integer"),
                                   ("id=12x", 400, "positive integer"),
                                   ("id=18446744073709551616", 400, "positive integer")):
            code, text = self.d.request("DELETE", "/v1/operator/raft/peer?" + query)
            self.assertEqual((code, why in text), (status, True), (query, text))
            self.assertNotIn("(null)", text)
        conf = json.loads(self.d.request("GET", "/v1/operator/raft/configuration")[1])
        self.assertEqual(len(conf["Servers"]), 1)

    def test_last_voter_cannot_be_removed(self):
        conf = json.loads(self.d.request("GET", "/v1/operator/raft/configuration")[1])
        me = conf["Servers"][0]
        for query in ("id=%s" % me["ID"], "address=%s" % me["Address"]):
            status, text = self.d.request("DELETE", "/v1/operator/raft/peer?" + query)
            self.assertEqual(status, 400, text)
            self.assertIn("only server", text)
        self.d.stop()
        self.d.start()  # still its own leader: the data stays reachable
        self.assertEqual(self.services(), ["db-1", "web-1"])


class LimitedFds(Registryd):
    """A daemon started under a low file-descriptor limit."""

    def __init__(self, nofile, **kw):
        super().__init__(**kw)
        self.nofile = nofile

    def args(self):
        return ["prlimit", "--nofile=%d:%d" % (self.nofile, self.nofile)] + super().args()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_get(sock, path):
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


class FloodTest(unittest.TestCase):
    def test_fd_exhaustion(self):
        d = LimitedFds(128).start()
        socks = []
        try:
            keep = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            self.assertIn(b"200", http_get(keep, "/v1/status/leader"))
            for _ in range(300):  # far beyond the daemon's 128 descriptors
                socks.append(socket.create_connection(("127.0.0.1", d.port), timeout=10))
            time.sleep(0.5)
            before = cpu_seconds(d.proc.pid)
            time.sleep(2)
            used = cpu_seconds(d.proc.pid) - before
            self.assertLess(used, 1.0, "the accept loop spins")
            # a client connected before the flood is still served
            self.assertIn(b"200", http_get(keep, "/v1/status/leader"))
            warnings = [l for l in d.log().splitlines() if "accept failed" in l]
            self.assertGreaterEqual(len(warnings), 1)
            self.assertLess(len(warnings), 10, "repeated warnings are not rate-limited")
            for s in socks:
                s.close()
            socks = []
            deadline = time.monotonic() + 10
            while True:  # new clients get in again once descriptors are free
                try:
                    self.assertEqual(d.request("GET", "/v1/status/leader", timeout=2)[0], 200)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            keep.close()
        finally:
            for s in socks:
                s.close()
            d.stop()

    def test_slowloris(self):
        d = Registryd(extra_args=["--http-head-timeout", "1s"]).start()
        try:
            slow = [socket.create_connection(("127.0.0.1", d.port), timeout=10)
                    for _ in range(30)]
            for s in slow:
                s.setblocking(False)
            request = b"GET /v1/agent/services HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
            open_ = set(range(len(slow)))
            start = time.monotonic()
            i = 0
            while open_ and time.monotonic() - start < 10:
                for k in list(open_):
                    try:
                        slow[k].send(request[i % len(request):i % len(request) + 1])
                        if slow[k].recv(4096) == b"":
                            open_.discard(k)
                    except BlockingIOError:
                        pass
                    except OSError:
                        open_.discard(k)
                i += 1
                # other clients are served meanwhile
                self.assertEqual(d.request("GET", "/v1/status/leader", timeout=5)[0], 200)
                time.sleep(0.2)
            self.assertEqual(open_, set(), "slow connections outlived the head deadline")
            self.assertLess(time.monotonic() - start, 8)
            for s in slow:
                s.close()
            # a connection that is idle (sends nothing) is the idle timeout's business,
            # and a normal keep-alive client is not cut off by the head deadline
            keep = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            for _ in range(3):
                self.assertIn(b"200", http_get(keep, "/v1/status/leader"))
                time.sleep(0.8)
            keep.close()
        finally:
            d.stop()

    def test_slow_body_and_slow_second_request(self):
        """The body deadline holds against a body that trickles in, and the
        head deadline holds again for the next request of a keep-alive
        connection (a served request does not make a connection trusted)."""
        d = Registryd(extra_args=["--http-head-timeout", "1s", "--http-body-timeout", "1s"]).start()
        try:
            body = json.dumps({"Name": "slow", "ID": "slow-1", "Port": 1}).encode()
            head = (b"PUT /v1/agent/service/register HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body))
            slow_body = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            slow_body.sendall(head)
            keep = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            self.assertIn(b"200", http_get(keep, "/v1/status/leader"))
            second = b"GET /v1/agent/services HTTP/1.1\r\nHost: x\r\n\r\n"
            start = time.monotonic()
            closed = {"body": False, "second": False}
            for i in range(60):  # one byte each every 0.1 s: 6 s at most
                for name, sock, data in (("body", slow_body, body), ("second", keep, second)):
                    if closed[name]:
                        continue
                    try:
                        sock.send(data[i % len(data):i % len(data) + 1])
                        sock.setblocking(False)
                        try:
                            while True:  # the first answer's body, then the end
                                chunk = sock.recv(65536)
                                if chunk == b"":
                                    closed[name] = True
                                    break
                        except BlockingIOError:
                            pass
                        finally:
                            sock.setblocking(True)
                    except OSError:
                        closed[name] = True
                if all(closed.values()):
                    break
                time.sleep(0.1)
            took = time.monotonic() - start
            self.assertEqual(closed, {"body": True, "second": True})
            self.assertLess(took, 4)
            slow_body.close()
            keep.close()
            # the trickled registration never reached its handler
            self.assertEqual(json.loads(d.request("GET", "/v1/agent/services")[1]), {})
        finally:
            d.stop()



if __name__ == "__main__":
    unittest.main()
