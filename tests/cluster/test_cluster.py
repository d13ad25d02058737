#!/usr/bin/python3
"""Three (and four) real registryd servers on loopback forming a Raft
cluster: forwarding, leader loss under load, rejoin, join and removal."""
import json
import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Registryd, TempDir  # noqa: E402


def leader_of(d):
    try:
        status, text = d.request("GET", "/v1/status/leader", timeout=2)
        return json.loads(text) if status == 200 else ""
    except OSError:
        return ""


class ClusterTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.servers = [Registryd(data_dir=os.path.join(self.tmp.path, "s%d" % i))
                        for i in range(3)]
        joins = []
        for d in self.servers:
            joins += ["--join", d.addr]
        for i, d in enumerate(self.servers):
            d.extra = ["--bootstrap-expect", "3", "--node", "s%d" % i] + joins
        for d in self.servers:
            d.start(wait=False)
        for d in self.servers:
            d.wait_ready(timeout=30)

    def tearDown(self):
        for d in self.servers:
            if d.proc is not None:
                d.stop(check=False)
        self.tmp.cleanup()

    def leader(self, among=None, timeout=10):
        deadline = time.monotonic() + timeout
        among = among or [d for d in self.servers if d.proc is not None]
        while time.monotonic() < deadline:
            seen = {leader_of(d) for d in among}
            if len(seen) == 1 and "" not in seen:
                addr = seen.pop()
                for d in among:
                    status, text = d.request("GET", "/v1/internal/raft/self")
                    if json.loads(text)["Raft"] == addr:
                        return d
            time.sleep(0.05)
        self.fail("no agreed leader within %ds" % timeout)

    def ids(self, d):
        status, text = d.request("GET", "/v1/agent/services?stale")
        self.assertEqual(status, 200, text)
        return set(json.loads(text))

    def test_forms_and_forwards_writes(self):
        leader = self.leader()
        peers = json.loads(leader.request("GET", "/v1/status/peers")[1])
        self.assertEqual(len(peers), 3)
        followers = [d for d in self.servers if d is not leader]
        status, text = followers[0].request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "web", "ID": "web-1", "Port": 80, "Check": {"TTL": "60s"}}))
        self.assertEqual(status, 200, text)
        status, text = followers[1].request("PUT", "/v1/agent/check/pass/service:web-1")
        self.assertEqual(status, 200, text)
        status, text = followers[1].request("PUT", "/v1/agent/check/pass/nope")
        self.assertEqual(status, 404)  # the leader's answer, relayed
        def passing(d):
            status, text = d.request("GET", "/v1/health/service/web?passing&stale")
            return [e["Service"]["ID"] for e in json.loads(text)]

        deadline = time.monotonic() + 5  # followers apply at the next heartbeat
        while time.monotonic() < deadline and not all(
                passing(d) == ["web-1"] for d in self.servers):
            time.sleep(0.05)
        for d in self.servers:
            self.assertEqual(passing(d), ["web-1"])
        conf = json.loads(followers[0].request("GET", "/v1/operator/raft/configuration")[1])
        self.assertEqual(len(conf["Servers"]), 3)
        self.assertEqual(sum(s["Leader"] for s in conf["Servers"]), 1)

    def test_leader_killed_during_a_burst(self):
        leader = self.leader()
        acked, lock, stop = set(), threading.Lock(), threading.Event()

        def writer(w):
            i = 0
            while not stop.is_set():
                sid = "w%d-%d" % (w, i)
                live = [d for d in self.servers if d.proc is not None]
                d = random.choice(live)
                try:
                    status, _ = d.request("PUT", "/v1/agent/service/register", json.dumps(
                        {"Name": "burst", "ID": sid, "Port": 1000 + (i % 50000)}), timeout=10)
                except OSError:
                    continue  # retry the same ID elsewhere: registration is idempotent
                if status == 200:
                    with lock:
                        acked.add(sid)
                    i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        with lock:
            before = len(acked)
        self.assertGreater(before, 10)
        leader.kill9()
        t_kill = time.monotonic()
        survivors = [d for d in self.servers if d is not leader]
        new_leader = self.leader(among=survivors, timeout=10)
        elected_after = time.monotonic() - t_kill
        self.assertLess(elected_after, 3.0)
        with lock:
            at_election = len(acked)
        time.sleep(1.5)
        with lock:
            self.assertGreater(len(acked), at_election, "writes did not resume")
        stop.set()
        for t in threads:
            t.join(30)
        leader.start(wait=False)  # the old leader comes back as a follower
        leader.wait_ready(timeout=30)
        with lock:
            expected = set(acked)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                expected <= self.ids(d) for d in self.servers):
            time.sleep(0.1)
        for d in self.servers:
            present = {i for i in self.ids(d) if i.startswith("w")}
            self.assertEqual(expected - present, set(), "acknowledged writes missing")
        self.assertIsNot(self.leader(), None)
        self.assertNotEqual(new_leader, None)
        print("leader re-elected in %.2fs; %d acknowledged writes, all on all three"
              % (elected_after, len(expected)), file=sys.stderr)

    def test_join_and_remove(self):
        leader = self.leader()
        extra = Registryd(data_dir=os.path.join(self.tmp.path, "s3"),
                          extra_args=["--join", self.servers[1].addr])
        self.servers.append(extra)
        extra.start(wait=False)
        extra.wait_ready(timeout=30)
        leader.request("PUT", "/v1/agent/service/register",
                       json.dumps({"Name": "late", "ID": "late-1"}))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "late-1" not in self.ids(extra):
            time.sleep(0.05)
        self.assertIn("late-1", self.ids(extra))
        conf = json.loads(leader.request("GET", "/v1/operator/raft/configuration")[1])
        self.assertEqual(len(conf["Servers"]), 4)
        raft = json.loads(extra.request("GET", "/v1/internal/raft/self")[1])["Raft"]
        extra.stop()
        status, text = self.servers[0].request(
            "DELETE", "/v1/operator/raft/peer?address=%s" % raft)
        self.assertEqual(status, 200, text)

        def members():
            conf = json.loads(leader.request("GET", "/v1/operator/raft/configuration")[1])
            return len(conf["Servers"])

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and members() != 3:
            time.sleep(0.05)
        self.assertEqual(members(), 3)
        self.assertEqual(leader.request("DELETE", "/v1/operator/raft/peer")[0], 400)


if __name__ == "__main__":
    unittest.main()
