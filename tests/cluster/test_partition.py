#!/usr/bin/python3
"""A real network partition: three registryd servers in network namespaces
of their own, joined by a bridge (no address outside the namespaces). The
leader is cut off with blackhole routes; the majority elects a new leader and
takes writes, the minority refuses writes but answers stale reads, and after
healing the old leader follows with the majority's data."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import REGISTRYD  # noqa: E402

TAG = "rg%d" % (os.getpid() % 100000)
NET = "10.251.%d" % (os.getpid() % 250)
HTTP, RAFT = 8500, 8300


def sh(*args, ns=None, check=True, timeout=30):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


def can_make_namespaces():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = TAG + "p"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


@unittest.skipUnless(can_make_namespaces(),
                     "needs root and network namespaces (ip netns) to cut real links")
class PartitionTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="registryd-partition-")
        self.procs = {}
        self.bridge = TAG + "br"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "link", "set", self.bridge, "up")
        self.ns = []
        for i in (1, 2, 3):
            ns, host, peer = "%sn%d" % (TAG, i), "%sh%d" % (TAG, i), "%sp%d" % (TAG, i)
            sh("ip", "netns", "add", ns)
            self.ns.append(ns)
            sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
            sh("ip", "link", "set", peer, "netns", ns)
            sh("ip", "link", "set", host, "master", self.bridge)
            sh("ip", "link", "set", host, "up")
            sh("ip", "addr", "add", "%s.%d/24" % (NET, i), "dev", peer, ns=ns)
            sh("ip", "link", "set", peer, "up", ns=ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        joins = []
        for i in (1, 2, 3):
            joins += ["--join", "%s.%d:%d" % (NET, i, HTTP)]
        for i in (1, 2, 3):
            log = open(os.path.join(self.tmp, "log%d" % i), "w")
            self.procs[i] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[i - 1], REGISTRYD,
                 "--data-dir", os.path.join(self.tmp, "d%d" % i),
                 "--http-addr", "0.0.0.0:%d" % HTTP, "--dns-addr", "127.0.0.1:8600",
                 "--raft-addr", "%s.%d:%d" % (NET, i, RAFT), "--bootstrap-expect", "3"] + joins,
                stdout=log, stderr=subprocess.STDOUT)

    def tearDown(self):
        problems = []
        for i, p in self.procs.items():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    problems.append("server %d ignored SIGTERM" % i)
            with open(os.path.join(self.tmp, "log%d" % i), errors="replace") as f:
                log = f.read()
            if p.returncode != 0 or "Sanitizer" in log or "runtime error:" in log:
                problems.append("server %d exited %s:\n%s" % (i, p.returncode, log[-6000:]))
        for i, ns in enumerate(self.ns, 1):
            subprocess.run(["ip", "link", "del", "%sh%d" % (TAG, i)], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(problems, [])

    def req(self, i, method, path, body=None, timeout=20):
        """HTTP to server i over its namespace's loopback: (status, text)."""
        args = ["curl", "-s", "-m", str(timeout), "-o", "-", "-w", "\\n%{http_code}",
                "-X", method, "http://127.0.0.1:%d%s" % (HTTP, path)]
        if body is not None:
            args += ["-d", body]
        out = sh(*args, ns=self.ns[i - 1], check=False, timeout=timeout + 5).stdout
        text, _, code = out.rpartition("\n")
        return int(code or 0), text

    def leader(self, among, timeout=15, not_=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = set()
            for i in among:
                status, text = self.req(i, "GET", "/v1/status/leader", timeout=2)
                seen.add(json.loads(text) if status == 200 and text else "")
            if len(seen) == 1 and "" not in seen:
                who = int(seen.pop().split(":")[0].rsplit(".", 1)[1])
                if who != not_:
                    return who
            time.sleep(0.2)
        self.fail("no agreed leader among %s" % (among,))

    def register(self, i, sid, timeout=20):
        return self.req(i, "PUT", "/v1/agent/service/register",
                        json.dumps({"Name": "p", "ID": sid}), timeout=timeout)

    def ids(self, i):
        status, text = self.req(i, "GET", "/v1/agent/services?stale")
        return set(json.loads(text)) if status == 200 else set()

    def cut(self, i, others, add=True):
        verb = "add" if add else "del"
        for j in others:
            sh("ip", "route", verb, "blackhole", "%s.%d/32" % (NET, j), ns=self.ns[i - 1])
            sh("ip", "route", verb, "blackhole", "%s.%d/32" % (NET, i), ns=self.ns[j - 1])

    def test_partitioned_leader(self):
        old = self.leader([1, 2, 3], timeout=40)
        self.assertEqual(self.register(old, "before")[0], 200)
        rest = [i for i in (1, 2, 3) if i != old]
        self.cut(old, rest)
        t0 = time.monotonic()
        new = self.leader(rest, timeout=15, not_=old)
        print("majority elected a new leader in %.2fs" % (time.monotonic() - t0),
              file=sys.stderr)
        self.assertNotEqual(new, old)
        status, text = self.register(rest[0], "majority")
        self.assertEqual(status, 200, text)
        # the minority: no writes, but its copy stays readable with ?stale
        status, text = self.register(old, "minority", timeout=25)
        self.assertEqual(status, 500, text)
        self.assertIn("before", self.ids(old))
        status, text = self.req(old, "GET", "/v1/catalog/service/p?stale")
        self.assertEqual(status, 200)
        self.cut(old, rest, add=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.ids(old) != {"before", "majority"}:
            time.sleep(0.2)
        self.assertEqual(self.ids(old), {"before", "majority"})
        for i in rest:
            self.assertEqual(self.ids(i), {"before", "majority"})
        self.assertNotEqual(self.leader([1, 2, 3]), None)
        status, text = self.req(old, "GET", "/v1/operator/raft/configuration")
        servers = json.loads(text)["Servers"]
        me = [s for s in servers if s["Address"] == "%s.%d:%d" % (NET, old, RAFT)]
        self.assertEqual(len(me), 1)
        self.assertFalse(me[0]["Leader"])  # rejoined as a follower


if __name__ == "__main__":
    unittest.main()
