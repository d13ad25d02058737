#!/usr/bin/python3
"""Blocking queries: index/wait, early return on change, no cross-service wake-ups."""
import json
import threading
import time
import unittest
import urllib.request

from harness import Registryd


class BlockingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # 300 parked waiters from one address: beyond the default per-client
        # connection cap (200, as Consul's http_max_conns_per_client)
        cls.d = Registryd(extra_args=["--http-max-conns-per-client", "400"]).start()
        for name in ("web", "db"):
            cls.d.request("PUT", "/v1/agent/service/register",
                          json.dumps({"Name": name, "ID": name + "-1", "Port": 80}))

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def index(self, path):
        status, _, headers = self.d.request_full("GET", path)
        self.assertEqual(status, 200)
        return int(headers["X-Consul-Index"])

    def timed(self, path):
        start = time.monotonic()
        status, text, headers = self.d.request_full("GET", path)
        self.assertEqual(status, 200, text)
        return time.monotonic() - start, int(headers["X-Consul-Index"]), text

    def later(self, delay, fn):
        t = threading.Timer(delay, fn)
        t.start()
        return t

    def test_returns_at_wait_when_nothing_changes(self):
        idx = self.index("/v1/health/service/web")
        took, new, _ = self.timed("/v1/health/service/web?index=%d&wait=1s" % idx)
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 2.5)  # wait plus at most wait/16 jitter plus slack
        self.assertEqual(new, idx)

    def test_wait_formats(self):
        idx = self.index("/v1/catalog/service/web")
        for wait, low in (("1500ms", 1.4), ("2s", 1.9)):
            took, _, _ = self.timed("/v1/catalog/service/web?index=%d&wait=%s" % (idx, wait))
            self.assertGreaterEqual(took, low, wait)
            self.assertLess(took, low + 1.5, wait)

    def test_returns_early_on_change(self):
        idx = self.index("/v1/health/service/web")
        self.later(0.3, lambda: self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "web", "ID": "web-2", "Port": 81})))
        took, new, text = self.timed("/v1/health/service/web?index=%d&wait=30s" % idx)
        self.assertLess(took, 3)
        self.assertGreater(new, idx)
        self.assertIn("web-2", text)
        self.d.request("PUT", "/v1/agent/service/deregister/web-2")

    def test_not_woken_by_another_service(self):
        idx = self.index("/v1/health/service/web")
        timers = [self.later(0.2 + 0.3 * i, lambda i=i: self.d.request(
            "PUT", "/v1/agent/service/register",
            json.dumps({"Name": "db", "ID": "db-1", "Port": 1000 + i}))) for i in range(4)]
        took, new, _ = self.timed("/v1/health/service/web?index=%d&wait=2s" % idx)
        for t in timers:
            t.join()
        self.assertGreaterEqual(took, 1.9)
        self.assertEqual(new, idx)
        self.assertGreater(self.index("/v1/health/service/db"), idx)

    def test_catalog_services_ignores_check_status(self):
        # Consul's catalog/services index is the services table's: a check's
        # status changing (a TTL pass or fail) neither wakes nor moves it
        self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "cat", "ID": "cat-1", "Port": 1, "Check": {"TTL": "60s"}}))
        idx = self.index("/v1/catalog/services")
        flips = [self.later(0.2 + 0.3 * i, lambda i=i: self.d.request(
            "PUT", "/v1/agent/check/%s/service:cat-1" % ("pass" if i % 2 == 0 else "fail")))
                 for i in range(4)]
        took, new, _ = self.timed("/v1/catalog/services?index=%d&wait=2s" % idx)
        for t in flips:
            t.join()
        self.assertGreaterEqual(took, 1.9)
        self.assertEqual(new, idx)
        # a new tag moves it, and wakes the query
        t = self.later(0.3, lambda: self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "cat", "ID": "cat-1", "Port": 1, "Tags": ["new"],
             "Check": {"TTL": "60s"}})))
        took, new, _ = self.timed("/v1/catalog/services?index=%d&wait=5s" % idx)
        t.join()
        self.assertLess(took, 3)
        self.assertGreater(new, idx)

    def test_catalog_services_wakes_for_every_instance(self):
        """Consul's services table index moves with every instance's
        registration and removal, even when the names and tags stay as they
        were: a client watching the listing for new instances (consul watch
        -type=services, pollers that list again when it moves) slept its
        whole wait here."""
        reg = lambda sid: self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "many", "ID": sid, "Port": 1, "Tags": ["same"]}))
        reg("many-1")
        for change in (lambda: reg("many-2"),
                       lambda: self.d.request("PUT", "/v1/agent/service/deregister/many-2")):
            idx = self.index("/v1/catalog/services")
            t = self.later(0.3, change)
            took, new, text = self.timed("/v1/catalog/services?index=%d&wait=5s" % idx)
            t.join()
            self.assertLess(took, 3)
            self.assertGreater(new, idx)
            self.assertEqual(json.loads(text)["many"], ["same"])

    def test_catalog_services_wakes_for_a_walked_name(self):
        # a name whose tag overflows LMDB's key keeps a marker summary (its
        # listing walks the instances): a new tag must still move the index
        name = "w" * 255
        self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": name, "ID": "walk-a", "Tags": ["t" * 256]}))
        idx = self.index("/v1/catalog/services")
        t = self.later(0.3, lambda: self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": name, "ID": "walk-b", "Tags": ["v2"]})))
        took, new, text = self.timed("/v1/catalog/services?index=%d&wait=4s" % idx)
        t.join()
        self.assertLess(took, 3)
        self.assertGreater(new, idx)
        self.assertIn("v2", json.loads(text)[name])

    def test_woken_without_a_change_parks_again(self):
        """As Consul's blocking loop: a wake that leaves the watched index at
        the one asked for (here a change to another node, which wakes every
        query) parks the query again for the rest of its wait instead of
        answering at once. A restore, even of the same data, answers at once
        (Consul abandons every blocking query then)."""
        d = Registryd().start()
        try:
            d.request("PUT", "/v1/agent/service/register",
                      json.dumps({"Name": "web", "ID": "web-1", "Port": 80}))
            with urllib.request.urlopen("http://%s/v1/snapshot" % d.addr, timeout=30) as r:
                snap = r.read()
            status, _, headers = d.request_full("GET", "/v1/health/service/web")
            idx = int(headers["X-Consul-Index"])
            woke = []
            t = self.later(0.3, lambda: woke.append(d.request("PUT", "/v1/catalog/register",
                json.dumps({"Node": "elsewhere", "Address": "10.0.0.1",
                            "NodeMeta": {"at": str(time.time())}}))[0]))
            start = time.monotonic()
            status, text, headers = d.request_full(
                "GET", "/v1/health/service/web?index=%d&wait=2s" % idx)
            took = time.monotonic() - start
            t.join()
            self.assertEqual(woke, [200])
            self.assertEqual(status, 200, text)
            self.assertEqual(int(headers["X-Consul-Index"]), idx)
            self.assertGreaterEqual(took, 1.9)
            self.assertLess(took, 4)
            # a restore of the same data answers at once, at a later index
            restored = []
            t = self.later(0.3, lambda: restored.append(d.request("PUT", "/v1/snapshot", snap)[0]))
            start = time.monotonic()
            status, text, headers = d.request_full(
                "GET", "/v1/health/service/web?index=%d&wait=5s" % idx)
            took = time.monotonic() - start
            t.join()
            self.assertEqual((restored, status), ([200], 200), text)
            self.assertGreater(int(headers["X-Consul-Index"]), idx)
            self.assertLess(took, 3)
            # a real change still answers at once
            self.later(0.3, lambda: d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "web", "ID": "web-2", "Port": 81}))).join()
            start = time.monotonic()
            status, text, headers = d.request_full(
                "GET", "/v1/health/service/web?index=%d&wait=10s" % idx)
            self.assertLess(time.monotonic() - start, 3)
            self.assertGreater(int(headers["X-Consul-Index"]), idx)
        finally:
            d.stop()

    def test_stale_index_returns_at_once(self):
        idx = self.index("/v1/health/service/web")
        took, _, _ = self.timed("/v1/health/service/web?index=%d&wait=10s" % max(idx - 1, 1))
        if idx > 1:
            self.assertLess(took, 1)

    def test_a_client_that_leaves_frees_its_parked_query(self):
        """A client that closes its connection while its query is parked
        frees the query and the connection at once: they stayed for the
        whole wait, counted against the client's connection cap, so a
        client that gave up on its queries (a timeout, a restart) was
        refused new connections for up to the wait (5 min by default)."""
        import socket
        import struct
        d = Registryd(extra_args=["--http-max-conns-per-client", "100"]).start()
        try:
            for round_ in range(2):  # 2 x 80 > the cap of 100, were they kept
                conns = d.park_queries(80, path="/v1/catalog/services?index=100000&wait=300s")
                for c in conns:
                    if round_ == 0:  # a close (FIN)
                        c.sock.shutdown(socket.SHUT_RDWR)
                    else:  # a reset (RST): libevent reports it as readable, not closed
                        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack("ii", 1, 0))
                    c.close()
                deadline = time.monotonic() + 5
                while (d.metric("registryd_blocking_queries_parked") > 0 or
                       d.metric("registryd_http_conns_open") > 1) and \
                        time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertEqual(d.metric("registryd_blocking_queries_parked"), 0, round_)
                self.assertLessEqual(d.metric("registryd_http_conns_open"), 1, round_)
            self.assertEqual(d.metric("registryd_http_conns_rejected_total"), 0)
            # a parked query with its next request pipelined behind it stays
            # parked (not taken for a goodbye) and both are answered
            with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
                index = int(d.request_full("GET", "/v1/health/service/web")[2]["X-Consul-Index"])
                s.sendall(b"GET /v1/health/service/web?index=%d&wait=1s HTTP/1.1\r\nHost: x"
                          b"\r\n\r\nGET /v1/status/leader HTTP/1.1\r\nHost: x\r\n"
                          b"Connection: close\r\n\r\n" % index)
                t0 = time.monotonic()
                got = b""
                while got.count(b"HTTP/1.1 200") < 2:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                self.assertEqual(got.count(b"HTTP/1.1 200"), 2, got[:300])
                self.assertGreaterEqual(time.monotonic() - t0, 0.9)
            # a query whose client stays is answered as before
            took, _, _ = self.timed("/v1/health/service/web?index=%d&wait=1s"
                                    % self.index("/v1/health/service/web"))
            self.assertGreaterEqual(took, 0.9)
        finally:
            d.stop()

    def test_many_parked_waiters_resolve_on_one_change(self):
        idx = self.index("/v1/health/service/web")
        results = []
        lock = threading.Lock()

        def waiter():
            took, new, _ = self.timed("/v1/health/service/web?index=%d&wait=30s" % idx)
            with lock:
                results.append((took, new))

        threads = [threading.Thread(target=waiter) for _ in range(300)]
        for t in threads:
            t.start()
        time.sleep(1.5)  # let them park
        self.d.request("PUT", "/v1/agent/service/register",
                       json.dumps({"Name": "web", "ID": "web-3", "Port": 83}))
        for t in threads:
            t.join(20)
        self.assertEqual(len(results), 300)
        self.assertTrue(all(new > idx for _, new in results))
        self.assertLess(max(took for took, _ in results), 15)
        self.d.request("PUT", "/v1/agent/service/deregister/web-3")


if __name__ == "__main__":
    unittest.main()
