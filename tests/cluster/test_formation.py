#!/usr/bin/python3
"""Cluster formation from join graphs other than "everyone joins everyone":
servers learn each other transitively, so any connected join graph forms
exactly one cluster of --bootstrap-expect servers."""
import errno
import json
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Registryd, TempDir, start_cluster  # noqa: E402


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

    def test_join_naming_only_itself_says_so(self):
        """A fresh server whose --join names only itself has nothing to
        join: it says so (once) and keeps waiting. It waited in silence."""
        d = Registryd(data_dir=os.path.join(self.tmp.path, "alone"))
        d.extra = ["--join", d.addr]
        self.servers.append(d)
        d.start(wait=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "nothing to join" not in d.log():
            time.sleep(0.1)
        self.assertIn("nothing to join: --join names only this server", d.log())
        time.sleep(1)
        self.assertEqual(d.log().count("nothing to join"), 1, d.log())
        self.assertIsNone(d.proc.poll())  # still running, waiting

    def test_leave_before_the_cluster_formed(self):
        """A server still waiting for --bootstrap-expect servers is in no
        cluster: PUT /v1/agent/leave answers 200 at once and it stops (it
        asked for a leader for 10 s, then answered 500 and went on)."""
        d = Registryd(data_dir=os.path.join(self.tmp.path, "waiting"),
                      extra_args=["--bootstrap-expect", "3"])
        self.servers.append(d)
        d.start(wait=False)
        deadline = time.monotonic() + 10
        while True:
            try:
                started = time.monotonic()
                status, text = d.request("PUT", "/v1/agent/leave", timeout=20)
                break
            except OSError:
                self.assertLess(time.monotonic(), deadline, d.log())
                time.sleep(0.1)
        self.assertEqual(status, 200, text)
        self.assertLess(time.monotonic() - started, 3)
        self.assertEqual(d.proc.wait(10), 0, d.log())
        d.proc = None

    def test_raft_port_held_alone_while_forming(self):
        """A server given no raft address picks a port and holds it, not
        listening, for as long as the cluster forms. It holds it alone: a
        socket that sets SO_REUSEADDR (as libuv's binds do) cannot bind it
        too. Held with SO_REUSEADDR, two servers started together could both
        bind one port, give the same raft address, and never form."""
        d = Registryd(data_dir=os.path.join(self.tmp.path, "alone"),
                      extra_args=["--bootstrap-expect", "3"]).start(wait=False)
        self.servers.append(d)
        deadline = time.monotonic() + 15
        while True:
            try:
                status, text = d.request("GET", "/v1/internal/raft/self", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            self.assertLess(time.monotonic(), deadline, d.log())
            time.sleep(0.05)
        port = int(json.loads(text)["Raft"].rsplit(":", 1)[1])
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            with self.assertRaises(OSError) as e:
                s.bind(("127.0.0.1", port))
            self.assertEqual(e.exception.errno, errno.EADDRINUSE)
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
