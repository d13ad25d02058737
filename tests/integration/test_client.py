#!/usr/bin/python3
"""libregistry against real servers, through registryctl's watch and pick
(both are thin layers over the library's watcher and balancers)."""
import http.server
import json
import os
import queue
import socket
import subprocess
import threading
import time
import unittest

from harness import REGISTRYCTL, CannedServer, Registryd, free_port


class Watch:
    """registryctl --json watch NAME, its lines in a queue."""

    def __init__(self, addr, name):
        self.p = subprocess.Popen([REGISTRYCTL, "--http-addr", addr, "--json", "watch", name],
                                  stdout=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.p.stdout:
            self.lines.put((time.monotonic(), json.loads(line)))

    def next(self, timeout=5):
        return self.lines.get(timeout=timeout)

    def stop(self):
        self.p.terminate()
        return self.p.wait(10)


EXAMPLE = os.path.join(os.path.dirname(REGISTRYCTL), "..", "client", "discover_and_call")


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.d = Registryd().start()

    def tearDown(self):
        if self.d.proc is not None:
            self.d.stop()

    def register(self, sid, port, weight=1):
        status, text = self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "api", "ID": sid, "Address": "10.9.0.%d" % port, "Port": port,
             "Weights": {"Passing": weight, "Warning": 1}}))
        self.assertEqual(status, 200, text)

    def ids(self, event):
        return sorted(i["ID"] for i in event["Instances"])

    def test_watch_does_not_spin_on_a_server_that_does_not_block(self):
        """An answer at once without progress (no X-Consul-Index, or the same
        one: a proxy that strips it) was asked again at once: 1,300-4,000
        requests in 3 s. Now at most one a second."""
        for index in (None, "0", "7"):
            headers = {"X-Consul-Index": index} if index is not None else {}
            with CannedServer(lambda: (b"[]", headers)) as srv:
                w = Watch(srv.addr, "api")
                try:
                    self.assertEqual(w.next()[1]["Instances"], [])
                    time.sleep(3)
                finally:
                    w.stop()
            self.assertGreaterEqual(len(srv.hits), 2, index)
            # the first two come at once where an index first shows (0 -> 7)
            self.assertLessEqual(len(srv.hits), 6, index)

    def test_watch_of_an_unreachable_server_says_so(self):
        # it printed nothing, for ever, until a first list came
        w = Watch("127.0.0.1:%d" % free_port(), "api")
        try:
            at, event = w.next(timeout=10)
        finally:
            w.stop()
        self.assertEqual((event["Stale"], event["Instances"]), (True, []))

    def test_entries_no_server_should_send_are_never_picked(self):
        """Port and weight were cast to int as they came (a port of 2^40+80
        was called on port 80, a weight of 2^32+3 weighed 3) and two entries
        of one ID were two instances."""
        def entry(sid, port=80, weights=None, node="n1"):
            svc = {"ID": sid, "Service": "api", "Address": "127.0.0.1", "Port": port}
            if weights is not None:
                svc["Weights"] = weights
            return {"Node": {"Node": node, "Address": "127.0.0.1"}, "Service": svc,
                    "Checks": []}
        answer = json.dumps([
            # an ID is unique per node (Consul): "good" on n2 is another
            entry("good"), entry("good", port=81), entry("good", port=82, node="n2"),
            entry("neg", port=-1),
            entry("big", port=70000), entry("wrap", port=2 ** 40 + 80),
            entry("heavy", weights={"Passing": 2 ** 32 + 3, "Warning": 1}),
            entry("text", port="80"), entry(""),
            {"Node": {}, "Service": {"Service": "api", "Port": 80}, "Checks": []}]).encode()

        with CannedServer(lambda: (answer, {"X-Consul-Index": "5"})) as srv:
            w = Watch(srv.addr, "api")
            try:
                got = w.next()[1]["Instances"]
            finally:
                w.stop()
        self.assertEqual([(i["ID"], i["Port"]) for i in got], [("good", 80), ("good", 82)])

    def test_watch_sees_changes_within_a_second_and_fails_static(self):
        self.register("api-1", 1)
        w = Watch(self.d.addr, "api")
        try:
            _, first = w.next()
            self.assertEqual(self.ids(first), ["api-1"])
            self.assertFalse(first["Stale"])
            for action, want in (("register", ["api-1", "api-2"]), ("deregister", ["api-2"])):
                t0 = time.monotonic()
                if action == "register":
                    self.register("api-2", 2)
                else:
                    self.d.request("PUT", "/v1/agent/service/deregister/api-1")
                when, event = w.next()
                self.assertEqual(self.ids(event), want)
                self.assertLess(when - t0, 1.0, action)
            self.d.stop()  # every server gone: keep the last list, and say so
            _, event = w.next(timeout=10)
            self.assertTrue(event["Stale"])
            self.assertEqual(self.ids(event), ["api-2"])
            self.assertEqual(w.stop(), 0)
        finally:
            if w.p.poll() is None:
                w.p.kill()

    def test_failover_to_a_live_server(self):
        self.register("api-1", 1)
        dead = "127.0.0.1:%d" % free_port()
        w = Watch("%s,%s" % (dead, self.d.addr), "api")
        try:
            _, event = w.next()
            self.assertEqual(self.ids(event), ["api-1"])
            self.assertFalse(event["Stale"])
        finally:
            w.stop()

    def test_pick_strategies(self):
        self.register("api-1", 1, weight=3)
        self.register("api-2", 2, weight=1)
        for strategy, share in (("round_robin", 0.5), ("weighted", 0.75),
                                ("least_connections", None), ("latency", None)):
            out = subprocess.run([REGISTRYCTL, "--http-addr", self.d.addr, "--json", "pick",
                                  "api", "--strategy", strategy, "-n", "4000"],
                                 capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 0, out.stderr)
            picks = {r["ID"]: r["Picks"] for r in json.loads(out.stdout)}
            self.assertEqual(sum(picks.values()), 4000)
            if share is not None:
                self.assertEqual(picks["api-1"], int(4000 * share), strategy)
            else:
                self.assertGreater(min(picks.values()), 0, strategy)
        out = subprocess.run([REGISTRYCTL, "--http-addr", self.d.addr, "pick", "api",
                              "--strategy", "fastest"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 2)
        out = subprocess.run([REGISTRYCTL, "--http-addr", self.d.addr, "pick", "nothing"],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 1)


    def test_example_program_spreads_requests(self):
        servers = []
        for i in range(2):
            srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                                  http.server.SimpleHTTPRequestHandler)
            srv.RequestHandlerClass.log_message = lambda *a: None
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            servers.append(srv)
            status, _ = self.d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "files", "ID": "files-%d" % i, "Address": "127.0.0.1",
                 "Port": srv.server_address[1]}))
            self.assertEqual(status, 200)
        # and one that refuses connections: the resilient call retries elsewhere
        refusing = socket.socket()
        refusing.bind(("127.0.0.1", 0))
        status, _ = self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "files", "ID": "files-refusing", "Address": "127.0.0.1",
             "Port": refusing.getsockname()[1]}))
        self.assertEqual(status, 200)
        try:
            out = subprocess.run([EXAMPLE, "-a", self.d.addr, "-n", "40", "files", "/"],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            lines = out.stdout.splitlines()
            self.assertEqual(len(lines), 40)
            self.assertTrue(all(" ok " in l for l in lines))
            used = {l.split()[0] for l in lines}
            self.assertEqual(used, {"files-0", "files-1"})
            self.assertIn("retries", out.stderr)
            self.assertGreater(sum(int(l.split()[5]) for l in lines), 40)  # it cost retries
        finally:
            refusing.close()
            for srv in servers:
                srv.shutdown()
                srv.server_close()


if __name__ == "__main__":
    unittest.main()
