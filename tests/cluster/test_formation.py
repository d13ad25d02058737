#!/usr/bin/python3
"""Cluster formation from join graphs other than "everyone joins everyone":
servers learn each other transitively, so any connected join graph forms
exactly one cluster of --bootstrap-expect servers."""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import TempDir, start_cluster  # noqa: E402


class FormationTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.servers = []

    def tearDown(self):
        for d in self.servers:
            if d.proc is not None:
                d.stop(check=False)
        self.tmp.cleanup()

    def form(self, join_graph):
        start_cluster(self.tmp.path, 3, servers=self.servers, join_graph=join_graph)
        # one leader, agreed by all, and one configuration of all three
        raft_addrs = sorted(json.loads(d.request("GET", "/v1/internal/raft/self")[1])["Raft"]
                            for d in self.servers)
        deadline = time.monotonic() + 15
        while True:
            leaders = {json.loads(d.request("GET", "/v1/status/leader")[1])
                       for d in self.servers}
            peers = [sorted(json.loads(d.request("GET", "/v1/status/peers")[1]))
                     for d in self.servers]
            if len(leaders) == 1 and "" not in leaders and all(p == raft_addrs for p in peers):
                break
            if time.monotonic() > deadline:
                self.fail("no single cluster: leaders %s, peers %s (want %s)"
                          % (leaders, peers, raft_addrs))
            time.sleep(0.1)
        # and it replicates: a write through each server is seen by all
        for i, d in enumerate(self.servers):
            status, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "f", "ID": "f-%d" % i, "Port": 80 + i}))
            self.assertEqual(status, 200, text)
        for d in self.servers:
            status, text = d.request("GET", "/v1/catalog/service/f?consistent")
            self.assertEqual(status, 200, text)
            self.assertEqual(sorted(e["ServiceID"] for e in json.loads(text)),
                             ["f-0", "f-1", "f-2"])

    def test_one_joins_both_and_both_join_one(self):
        self.form({0: [1, 2], 1: [0], 2: [0]})

    def test_two_join_one_that_joins_no_one(self):
        self.form({0: [], 1: [0], 2: [0]})

    def test_chain(self):
        self.form({0: [1], 1: [2], 2: []})


if __name__ == "__main__":
    unittest.main()
