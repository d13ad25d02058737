#!/usr/bin/python3
"""libregistry's resilient calls against real HTTP backends on loopback,
through `registryctl call` and a real registryd: one instance refuses
connections, one accepts and never answers, one fails every other request
with 503, the rest are healthy. Calls succeed, breakers open (and close when
an instance heals), and under a total outage the retries stay bounded."""
import http.server
import json
import socket
import subprocess
import threading
import time
import unittest

from harness import REGISTRYCTL, Registryd


class Backend(http.server.BaseHTTPRequestHandler):
    """Behaviour per server: "ok", "flaky" (503 every other request), "down"
    (always 503), "heals" (503 until server.heal_at, then ok), "slow-ok"
    (ok after 10 ms)."""

    def log_message(self, *args):
        pass

    def answer(self):
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with srv.lock:
            srv.count += 1
            n = srv.count
            if srv.mode == "heals" and srv.heal_at is None:
                srv.heal_at = time.monotonic() + 1.0
        sick = (srv.mode == "down" or (srv.mode == "flaky" and n % 2 == 0) or
                (srv.mode == "heals" and time.monotonic() < srv.heal_at))
        if srv.mode in ("heals", "slow-ok"):
            time.sleep(0.01)
        if sick:
            out, status = b"sick\n", 503
        elif srv.mode == "binary":
            out, status = b"ok \xff\xfe \xc3\xa9 \xed\xa0\x80 \x00!", 200
        else:
            out = json.dumps({"port": srv.server_address[1], "method": self.command,
                              "path": self.path, "body": body.decode(),
                              "x-test": self.headers.get("X-Test")}).encode()
            status = 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = answer


def serve(mode):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    srv.daemon_threads = True
    srv.mode, srv.count, srv.lock, srv.heal_at = mode, 0, threading.Lock(), None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class ResilienceTest(unittest.TestCase):
    def setUp(self):
        self.d = Registryd().start()
        self.servers, self.sockets = [], []

    def tearDown(self):
        for srv in self.servers:
            srv.shutdown()
            srv.server_close()
        for s in self.sockets:
            s.close()
        self.d.stop()

    def add(self, service, sid, mode):
        """Start a backend in `mode` ("refusing" and "blackhole" are bare
        sockets) and register it as sid of service."""
        if mode in ("refusing", "blackhole"):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if mode == "blackhole":
                s.listen(64)  # the kernel accepts; nobody reads or answers
            self.sockets.append(s)
            port = s.getsockname()[1]
        else:
            srv = serve(mode)
            self.servers.append(srv)
            port = srv.server_address[1]
        status, text = self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": service, "ID": sid, "Address": "127.0.0.1", "Port": port}))
        self.assertEqual(status, 200, text)
        return port

    def call(self, *args, timeout=120):
        p = subprocess.run([REGISTRYCTL, "--http-addr", self.d.addr] + list(args),
                           capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def summary(self, *args):
        rc, out, err = self.call("--json", "call", *args)
        self.assertIn(rc, (0, 1), err)
        return rc, json.loads(out)

    def test_sick_fleet_calls_succeed_and_breakers_open(self):
        for i in range(3):
            self.add("shop", "ok-%d" % i, "ok")
        self.add("shop", "refusing", "refusing")
        self.add("shop", "blackhole", "blackhole")
        self.add("shop", "flaky", "flaky")
        rc, s = self.summary("shop", "/items", "-n", "300", "-c", "6", "--timeout", "300ms",
                             "--retries", "3")  # 4 attempts, on 4 different instances
        self.assertEqual(rc, 0, s)
        self.assertEqual(s["Requests"], 300)
        self.assertEqual(s["Succeeded"], 300)
        self.assertEqual(sum(s["Failed"].values()), 0)
        by_id = {i["ID"]: i for i in s["Instances"]}
        for sick in ("refusing", "blackhole"):
            self.assertGreaterEqual(by_id[sick]["BreakerOpened"], 1, sick)
            self.assertEqual(by_id[sick]["Failures"], by_id[sick]["Attempts"], sick)
        self.assertGreater(by_id["flaky"]["Failures"], 0)
        for i in range(3):
            ok = by_id["ok-%d" % i]
            self.assertEqual(ok["Failures"], 0)
            self.assertEqual(ok["BreakerOpened"], 0)
            self.assertEqual(ok["Breaker"], "closed")
        # the sick cost some retries, not one per request
        self.assertLess(s["Attempts"], 300 * 1.3)
        self.assertEqual(s["Attempts"], sum(i["Attempts"] for i in s["Instances"]))

    def test_breaker_closes_when_the_instance_heals(self):
        self.add("cart", "steady", "slow-ok")
        self.add("cart", "heals", "heals")  # 503 for a second, then well
        # 2 in flight, >= 10 ms per request: the 2000 requests take >= 10 s,
        # longer than the 5 s the breaker stays open plus its trials
        rc, s = self.summary("cart", "-n", "2000", "-c", "2")
        self.assertEqual(rc, 0, s)
        self.assertEqual(s["Succeeded"], 2000)
        heals = {i["ID"]: i for i in s["Instances"]}["heals"]
        self.assertGreaterEqual(heals["BreakerOpened"], 1)
        self.assertEqual(heals["Breaker"], "closed", s)
        self.assertGreaterEqual(s["InstanceBreakerClosed"], 1)
        self.assertGreater(heals["Attempts"], heals["Failures"])  # it got traffic back

    def test_total_outage_keeps_attempts_near_one(self):
        for i in range(4):
            self.add("down", "down-%d" % i, "down")
        rc, s = self.summary("down", "-n", "400", "-c", "4")
        self.assertEqual(rc, 1)
        self.assertEqual(s["Succeeded"], 0)
        self.assertEqual(sum(s["Failed"].values()), 400)
        self.assertLessEqual(s["AttemptsPerCall"], 1.2)
        self.assertGreater(s["Failed"]["breaker_open"], 0)  # failing fast, not hammering
        self.assertEqual(s["ServiceBreakerOpened"] >= 1 or s["InstanceBreakerOpened"] >= 4, True)

    def test_one_call_prints_the_body_and_sends_what_it_is_told(self):
        port = self.add("echo", "echo-1", "ok")
        rc, out, err = self.call("call", "echo", "/v1/thing?x=1", "-X", "PUT", "-d", "hello",
                                 "-H", "X-Test: yes")
        self.assertEqual(rc, 0, err)
        got = json.loads(out)
        self.assertEqual(got, {"port": port, "method": "PUT", "path": "/v1/thing?x=1",
                               "body": "hello", "x-test": "yes"})
        rc, out, err = self.call("--json", "call", "echo", "-d", "x")  # -d alone: POST
        self.assertEqual(rc, 0, err)
        answer = json.loads(out)
        self.assertEqual(answer["Status"], 200)
        self.assertEqual(answer["Attempts"], 1)
        self.assertEqual(json.loads(answer["Body"])["method"], "POST")

    def test_json_call_of_a_body_that_is_not_utf8(self):
        # --json printed nothing and exited 0; bytes that are not UTF-8 are
        # U+FFFD now, as Go's encoding/json writes them
        self.add("bin", "bin-1", "binary")
        rc, out, err = self.call("--json", "call", "bin")
        self.assertEqual(rc, 0, err)
        answer = json.loads(out)
        self.assertEqual(answer["Status"], 200)
        self.assertEqual(answer["Body"], "ok \ufffd\ufffd \u00e9 \ufffd\ufffd\ufffd \x00!")

    def test_refused_and_black_holed_calls_fail_with_their_reason(self):
        self.add("gone", "gone-1", "refusing")
        rc, out, err = self.call("call", "gone", "--retries", "1")
        self.assertEqual(rc, 1)
        self.assertIn("after 2 attempts", err)
        self.assertIn("connection refused", err)
        self.add("hole", "hole-1", "blackhole")
        rc, out, err = self.call("call", "hole", "--timeout", "200ms", "--deadline", "500ms",
                                 "--retries", "5")
        self.assertEqual(rc, 1)
        self.assertIn("deadline exceeded", err)
        rc, out, err = self.call("call", "nothing")
        self.assertEqual(rc, 1)
        self.assertIn("no passing instance", err)
        for bad in (["--retries", "99"], ["--timeout", "soon"], ["-c", "0"], ["-X", "GE T"],
                    ["--strategy", "fastest"], ["--frobnicate", "1"]):
            rc, _, err = self.call("call", "gone", *bad)
            self.assertEqual(rc, 2, bad)


if __name__ == "__main__":
    unittest.main()
