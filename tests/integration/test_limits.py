#!/usr/bin/python3
"""Issue 14's limits: connections per client address (http_max_conns_per_client)
and the global request rate limits (http_read_rate, http_write_rate).

Two loopback addresses stand for two clients: 127.0.0.1 floods, 127.0.0.2 (a
client socket bound to it) must still be served promptly. Every loop is
bounded in count and time."""
import http.client
import json
import re
import os
import socket
import ssl
import time
import unittest

from certs import make_certs
from harness import Registryd, TempDir, TlsRegistryd

OTHER = "127.0.0.2"  # the client that must not be starved


def request_from(d, source, method, path, body=None, timeout=5):
    """(status, text, headers) of one request from the source address."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=timeout,
                                   source_address=(source, 0))
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read().decode(), r.headers
    finally:
        c.close()


def metric(d, name, source=OTHER):
    """The value of one Prometheus series (name with its labels), read from
    source; None if absent. Retries a 429 for at most ~3 s."""
    for _ in range(15):
        status, text, _ = request_from(d, source, "GET", "/v1/agent/metrics?format=prometheus")
        if status != 429:
            break
        time.sleep(0.2)
    assert status == 200, (status, text)
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def closed_by_peer(sock, within):
    """True if the server closes sock (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def still_open(sock):
    """True if sock has not been closed by the server (nothing to read yet)."""
    sock.setblocking(False)
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return data != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def http_get(sock, path):
    sock.settimeout(5)
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def connect(d, source="127.0.0.1"):
    return socket.create_connection(("127.0.0.1", d.port), timeout=10,
                                    source_address=(source, 0))


class ConnCapTest(unittest.TestCase):
    CAP = 20

    def setUp(self):
        self.d = Registryd(extra_args=["--http-max-conns-per-client", str(self.CAP)]).start()
        self.socks = []
        time.sleep(0.6)  # the readiness probes' connections are released (one sweep)

    def tearDown(self):
        for s in self.socks:
            s.close()
        self.d.stop()

    def test_cap_per_address(self):
        d = self.d
        self.assertEqual(metric(d, "registryd_http_conns_rejected_total"), 0)
        for _ in range(self.CAP):
            self.socks.append(connect(d))
        # each of them is served (keep-alive)
        for s in self.socks[:3]:
            self.assertIn(b"200", http_get(s, "/v1/status/leader"))
        # the next one from the same address is closed at once; what it sent
        # (a write) is never read, let alone applied
        extra = connect(d)
        extra.sendall(b"PUT /v1/agent/service/register HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 33\r\n\r\n"
                      b'{"Name": "sneaky", "ID": "sn-1"} ')
        self.assertTrue(closed_by_peer(extra, 3), "the connection over the cap stayed open")
        extra.close()
        # another address is served promptly meanwhile
        start = time.monotonic()
        status, _, _ = request_from(d, OTHER, "GET", "/v1/agent/services")
        self.assertEqual(status, 200)
        self.assertLess(time.monotonic() - start, 3.0)  # not starved (ASan, a busy machine)
        self.assertEqual(json.loads(request_from(d, OTHER, "GET", "/v1/agent/services")[1]), {})
        self.assertEqual(metric(d, "registryd_http_conns_rejected_total"), 1)
        self.assertGreaterEqual(metric(d, "registryd_http_conns_open"), self.CAP)
        # the connections within the cap are untouched
        self.assertTrue(all(still_open(s) for s in self.socks))
        self.assertIn(b"200", http_get(self.socks[-1], "/v1/status/leader"))
        # closing some lets the address in again (counts drop within a sweep)
        for s in self.socks[:5]:
            s.close()
        self.socks = self.socks[5:]
        deadline = time.monotonic() + 5
        while True:
            s = connect(d)
            try:
                line = http_get(s, "/v1/status/leader")
            except OSError:
                line = b""
            s.close()
            if b"200" in line:
                break
            self.assertLess(time.monotonic(), deadline, "the address stayed locked out")
            time.sleep(0.1)
        self.assertTrue(any(l for l in self.d.log().splitlines()
                            if "too many connections from one client" in l))

    def test_short_connections_churn_within_cap(self):
        """Many short connections (one request each) from one address, never
        more than a few open at once, are all served: a closed connection
        stops counting before the cap is judged, not only at the next sweep."""
        from concurrent.futures import ThreadPoolExecutor

        def one(i):
            return self.d.request("GET", "/v1/agent/services", timeout=10)[0]

        with ThreadPoolExecutor(4) as pool:
            self.assertEqual(set(pool.map(one, range(self.CAP * 10))), {200})
        self.assertEqual(metric(self.d, "registryd_http_conns_rejected_total"), 0)

    def test_connections_closed_unused_in_a_burst_do_not_count(self):
        """Connections a client opened and closed without a request (a port
        probe, a client that gave up) and that the server accepts in one
        burst, before it has read their end: they are not open, and the
        client's real connection accepted with them is served. The server
        is paused so that all of them wait in its listen queue together."""
        import signal
        d = self.d
        d.proc.send_signal(signal.SIGSTOP)
        try:
            for _ in range(self.CAP * 2):
                connect(d).close()
            real = connect(d)
            self.socks.append(real)
            real.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            d.proc.send_signal(signal.SIGCONT)
        real.settimeout(10)
        try:
            line = real.recv(4096).split(b"\r\n", 1)[0]
        except OSError:
            line = b""
        self.assertIn(b"200", line, "the real connection was refused as over the cap")
        self.assertEqual(metric(d, "registryd_http_conns_rejected_total"), 0)

    def test_json_metrics(self):
        for _ in range(self.CAP + 2):
            self.socks.append(connect(self.d))
        deadline = time.monotonic() + 5  # until the server has accepted (and refused) them
        while True:
            status, text, _ = request_from(self.d, OTHER, "GET", "/v1/agent/metrics")
            self.assertEqual(status, 200)
            doc = json.loads(text)
            rejected = [c for c in doc["Counters"]
                        if c["Name"] == "registryd.http.conns.rejected"]
            if (rejected and rejected[0]["Count"] >= 2) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(rejected[0]["Count"], 2)
        gauges = {g["Name"]: g["Value"] for g in doc["Gauges"]}
        self.assertGreaterEqual(gauges["registryd_http_conns_open"], self.CAP)


class CapAcrossListenersTest(unittest.TestCase):
    """One cap per address over the plain and the HTTPS listener together."""

    def test_http_and_https_share_the_cap(self):
        tmp = TempDir()
        certs = make_certs(os.path.join(tmp.path, "certs"))
        d = TlsRegistryd(certs, plain=True, extra_args=["--http-max-conns-per-client", "6"])
        socks = []
        try:
            d.start()
            time.sleep(0.6)
            ctx = d.ssl_context()
            for _ in range(3):
                socks.append(connect(d))
                t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.https_port),
                                                             timeout=10),
                                    server_hostname="localhost")
                socks.append(t)
            for s in socks:
                self.assertIn(b"200", http_get(s, "/v1/status/leader"))
            # a seventh, on either listener, is closed at once
            extra = connect(d)
            self.assertTrue(closed_by_peer(extra, 3))
            extra.close()
            raw = socket.create_connection(("127.0.0.1", d.https_port), timeout=5)
            with self.assertRaises((ssl.SSLError, OSError)):
                t = ctx.wrap_socket(raw, server_hostname="localhost")
                http_get(t, "/v1/status/leader")
                if t.recv(1) == b"":
                    raise OSError("closed")
            raw.close()
            # another address over HTTPS is served
            c = http.client.HTTPSConnection("127.0.0.1", d.https_port, timeout=5,
                                            source_address=(OTHER, 0),
                                            context=d.ssl_context())
            c.request("GET", "/v1/agent/services")
            self.assertEqual(c.getresponse().status, 200)
            c.close()
            self.assertEqual(metric(d, "registryd_http_conns_rejected_total"), 2)
        finally:
            for s in socks:
                s.close()
            d.stop()
            tmp.cleanup()


class FloodTest(unittest.TestCase):
    """5,000 idle connections from one address, the default cap (200)."""

    def test_idle_flood_does_not_starve_another_address(self):
        self.flood(workers=1)

    def test_idle_flood_over_two_http_workers(self):
        """The cap holds across worker threads: the kernel spreads the
        connections over both, the count is one (which 200 stay open
        depends on the order the two workers take theirs)."""
        self.flood(workers=2)

    def flood(self, workers):
        d = Registryd(extra_args=["--http-workers", str(workers)]).start()
        socks = []
        try:
            time.sleep(0.6)
            start = time.monotonic()
            for _ in range(5000):
                socks.append(connect(d))
            self.assertLess(time.monotonic() - start, 60)
            # another address is served at once, during the flood's refusals
            self.assertEqual(request_from(d, OTHER, "GET", "/v1/status/leader")[0], 200)
            # exactly the first 200 are kept; the others were closed
            deadline = time.monotonic() + 10
            while True:
                n_open = sum(1 for s in socks if still_open(s))
                if n_open == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(n_open, 200)
            # and promptly while the 200 are held. Timed only once the refusals
            # are done: closing the other 4,800 keeps the loop busy for a while
            # under ASan beside another test, and a request timed during that
            # paid for it (1.03 s once in a CI run) with nothing starved
            for _ in range(5):
                start = time.monotonic()
                self.assertEqual(request_from(d, OTHER, "GET", "/v1/status/leader")[0], 200)
                self.assertEqual(request_from(d, OTHER, "GET", "/v1/agent/services")[0], 200)
                self.assertLess(time.monotonic() - start, 3.0)
            if workers == 1:  # one accept queue: the first 200 are kept
                self.assertTrue(all(still_open(s) for s in socks[:200]))
            self.assertEqual(metric(d, "registryd_http_conns_rejected_total"), 4800)
            deadline = time.monotonic() + 5  # the other address's are released (a sweep)
            while (metric(d, "registryd_http_conns_open") != 200 + 1 and
                   time.monotonic() < deadline):
                time.sleep(0.1)
            self.assertEqual(metric(d, "registryd_http_conns_open"), 200 + 1)  # + its own
        finally:
            for s in socks:
                s.close()
            d.stop()


class RateLimitTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Registryd(extra_args=["--http-read-rate", "5", "--http-write-rate", "2"]).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def burst(self, method, path, n, body=None):
        t0 = time.monotonic()
        answers = [self.d.request_full(method, path, body, timeout=5) for _ in range(n)]
        self.took = time.monotonic() - t0
        return answers

    def most_allowed(self, size, rate):
        """What a full bucket of size lets through in the last burst, with
        what the rate refilled while it ran (a slow machine takes longer),
        and one for rounding."""
        return size + int(self.took * rate) + 1

    def check_429(self, answers, kind):
        limited = [a for a in answers if a[0] == 429]
        self.assertTrue(limited, "no 429 in %r" % [a[0] for a in answers])
        for status, text, headers in limited:
            self.assertRegex(headers["Retry-After"], r"^[1-9][0-9]*$")
            self.assertEqual(text.count("\n"), 1, text)
            self.assertIn("http_%s_rate" % kind, text)
        return len(limited)

    def test_reads(self):
        time.sleep(1.2)  # a full bucket
        answers = self.burst("GET", "/v1/agent/services", 20)
        ok = sum(1 for a in answers if a[0] == 200)
        self.assertGreaterEqual(ok, 5)
        self.assertLessEqual(ok, self.most_allowed(5, 5))  # the burst and what refilled
        if self.took < 3:  # (20 requests slower than the refill: no 429 to see)
            n = self.check_429(answers, "read")
        else:
            n = 0
        # exempt: the registry's own status routes and internal routes
        for status, _, _ in self.burst("GET", "/v1/status/leader", 20):
            self.assertEqual(status, 200)
        for status, _, _ in self.burst("GET", "/v1/internal/raft/self", 5):
            self.assertNotEqual(status, 429)
        # tokens come back at the rate
        time.sleep(1.2)
        self.assertEqual(self.d.request("GET", "/v1/agent/services")[0], 200)
        self.assertGreaterEqual(metric(self.d, 'registryd_http_rate_limited_total{kind="read"}',
                                       source="127.0.0.1"), n)

    def test_writes(self):
        time.sleep(1.2)
        body = json.dumps({"Name": "rl", "ID": "rl-1", "Port": 1})
        answers = self.burst("PUT", "/v1/agent/service/register", 8, body)
        ok = sum(1 for a in answers if a[0] == 200)
        self.assertGreaterEqual(ok, 2)
        self.assertLessEqual(ok, self.most_allowed(2, 2))
        if self.took < 3:
            n = self.check_429(answers, "write")
        else:
            n = 0
        # reads have their own bucket
        self.assertEqual(self.d.request("GET", "/v1/agent/services")[0], 200)
        self.assertGreaterEqual(
            metric(self.d, 'registryd_http_rate_limited_total{kind="write"}', source="127.0.0.1"),
            n)


if __name__ == "__main__":
    unittest.main()
