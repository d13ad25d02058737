#!/usr/bin/python3
"""Durability: every acknowledged write survives kill -9 and restarts."""
import json
import threading
import time
import unittest

from harness import Registryd, TempDir, free_port


class DurabilityTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.servers = []

    def tearDown(self):
        for d in self.servers:
            if d.proc is not None:
                d.stop(check=False)
        self.tmp.cleanup()

    def server(self, **kw):
        d = Registryd(data_dir=self.tmp.path, **kw)
        self.servers.append(d)
        return d

    def ids(self, d):
        status, text = d.request("GET", "/v1/agent/services")
        self.assertEqual(status, 200)
        return set(json.loads(text))

    def test_kill9_mid_burst_keeps_every_acknowledged_write(self):
        d = self.server().start()
        acked, lock = set(), threading.Lock()
        enough = threading.Event()

        def writer(w):
            for i in range(1000):
                sid = "w%d-%d" % (w, i)
                body = json.dumps({"Name": "burst", "ID": sid, "Port": 1000 + i,
                                   "Meta": {"writer": str(w)}, "Check": {"TTL": "60s"}})
                try:
                    status, _ = d.request("PUT", "/v1/agent/service/register", body, timeout=5)
                except OSError:
                    return  # the server is gone: this write was never acknowledged
                if status == 200:
                    with lock:
                        acked.add(sid)
                        if len(acked) >= 150:
                            enough.set()

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        self.assertTrue(enough.wait(60), "the burst did not get going")
        d.kill9()
        for t in threads:
            t.join(30)
        with lock:
            acknowledged = set(acked)
        self.assertGreaterEqual(len(acknowledged), 150)

        d2 = self.server(http_port=free_port()).start()
        present = self.ids(d2)
        missing = acknowledged - present
        self.assertEqual(missing, set(), "%d acknowledged writes lost" % len(missing))
        # the restarted server takes writes again
        status, _ = d2.request("PUT", "/v1/agent/service/register",
                               json.dumps({"Name": "after", "ID": "after-1"}))
        self.assertEqual(status, 200)
        d2.stop()

    def test_clean_restarts_keep_data(self):
        d = self.server().start()
        for i in range(30):
            d.request("PUT", "/v1/agent/service/register",
                      json.dumps({"Name": "keep", "ID": "keep-%d" % i, "Port": i + 1}))
        d.request("PUT", "/v1/agent/service/deregister/keep-0")
        d.request("PUT", "/v1/agent/check/pass/nothing")
        expected = self.ids(d)
        self.assertEqual(len(expected), 29)
        d.stop()
        for _ in range(2):
            d = self.server().start()
            self.assertEqual(self.ids(d), expected)
            status, text = d.request("GET", "/v1/agent/service/keep-7")
            self.assertEqual(json.loads(text)["Port"], 8)
            d.stop()

    def test_data_dir_is_locked(self):
        d = self.server().start()
        other = self.server()
        other.start(wait=False)
        rc = other.proc.wait(15)
        self.assertNotEqual(rc, 0)
        self.assertIn("in use", other.log())
        other.proc = None
        self.assertEqual(d.request("GET", "/v1/status/leader")[0], 200)
        d.stop()


if __name__ == "__main__":
    unittest.main()
