#!/usr/bin/python3
"""Durability: every acknowledged write survives kill -9 and restarts."""
import http.client
import hashlib
import json
import os
import re
import shutil
import threading
import time
import unittest

from harness import Registryd, TempDir, free_port


def map_resident_kib(pid, name):
    """Resident KiB of process pid's mappings of a file whose path ends in
    name (/proc/PID/smaps: a mapping's header line, then its fields)."""
    total, current = 0, ""
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = re.match(r"[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$", line)
            if head:
                current = head.group(1)
            elif line.startswith("Rss:") and current.endswith(name):
                total += int(line.split()[1])
    return total


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

    def test_checker_reloads_every_check_after_a_restart(self):
        """After a restart the checker reloads its checks from the store, by
        the instances' IDs: a service's TTL check, and one of an instance
        with more tags than the record scanner reads (its Node is then found
        by decoding), and a node's own. Each still expires after its TTL."""
        d = self.server().start()
        for sid, tags in (("plain-1", ["a"]), ("tagged-1", ["t%d" % i for i in range(40)])):
            status, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": sid.split("-")[0], "ID": sid, "Tags": tags, "Check": {"TTL": "2s"}}))
            self.assertEqual(status, 200, text)
        # and a node-level one (no ServiceID), reloaded by its node
        status, text = d.request("PUT", "/v1/agent/check/register",
                                 json.dumps({"Name": "node-ttl", "TTL": "2s"}))
        self.assertEqual(status, 200, text)
        ids = ("service:plain-1", "service:tagged-1", "node-ttl")
        for cid in ids:
            self.assertEqual(d.request("PUT", "/v1/agent/check/pass/" + cid)[0], 200)
        d.stop()
        d = self.server().start()
        self.assertIn("store kept", d.log())

        def statuses():
            return {c: json.loads(d.request("GET", "/v1/agent/checks")[1])[c]["Status"]
                    for c in ids}
        self.assertEqual(set(statuses().values()), {"passing"})
        deadline = time.monotonic() + 10
        while set(statuses().values()) != {"critical"} and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(statuses(), {c: "critical" for c in ids})
        d.stop()

    def test_clean_stop_keeps_the_store_and_what_follows_it(self):
        """A clean stop lets the next start keep the store instead of
        rebuilding it from raft; entries written after a kept start, across
        snapshots and log truncation, are applied on top exactly once."""
        args = ["--raft-snapshot-threshold", "16"]
        d = self.server(extra_args=args).start()
        for i in range(40):
            d.request("PUT", "/v1/agent/service/register",
                      json.dumps({"Name": "kept", "ID": "kept-%d" % i, "Port": i + 1}))
        expected = self.ids(d)
        d.stop()
        for round_ in range(3):
            d = self.server(extra_args=args).start()
            self.assertIn("store kept from the last clean stop", d.log())
            self.assertEqual(self.ids(d), expected)
            # changes on top of the kept store: enough to snapshot again
            for i in range(25):
                sid = "r%d-%d" % (round_, i)
                d.request("PUT", "/v1/agent/service/register",
                          json.dumps({"Name": "kept", "ID": sid, "Port": 100 + i}))
                expected.add(sid)
            d.request("PUT", "/v1/agent/service/deregister/kept-%d" % round_)
            expected.discard("kept-%d" % round_)
            status, text = d.request("GET", "/v1/health/service/kept")
            self.assertEqual(len(json.loads(text)), len(expected))
            d.stop()
        d = self.server(extra_args=args).start()
        self.assertEqual(self.ids(d), expected)
        d.stop()

    def test_kept_store_start_does_not_read_the_snapshot(self):
        """libraft reads its newest snapshot whole at start; a kept store
        needs none of it, so raft reads a stub in its place, and the real
        file is back, unchanged, once raft has started. A crash that left
        the stub in place is mended at the next start."""
        raft = os.path.join(self.tmp.path, "raft")

        def snapshot_files():
            out = {}
            for name in sorted(os.listdir(raft)):
                if name.startswith("snapshot-") or name.startswith("held-"):
                    with open(os.path.join(raft, name), "rb") as f:
                        out[name] = hashlib.sha256(f.read()).hexdigest()
            return out

        def assert_back_as_before(before):
            """No file held aside, no stub left, and every snapshot file
            that is still there (raft may have taken newer ones since and
            dropped older) as it was."""
            now = snapshot_files()
            self.assertFalse([n for n in now if n.startswith("held-")], now)
            for name in now:
                with open(os.path.join(raft, name), "rb") as f:
                    self.assertNotEqual(f.read(8), b"RGSTUB01", name)
            kept = [n for n in before if n in now]
            self.assertTrue(kept, (before, now))
            self.assertEqual({n: now[n] for n in kept}, {n: before[n] for n in kept})

        args = ["--raft-snapshot-threshold", "16"]
        d = self.server(extra_args=args).start()
        for i in range(60):
            d.request("PUT", "/v1/agent/service/register",
                      json.dumps({"Name": "held", "ID": "held-%d" % i, "Port": i + 1}))
        expected = self.ids(d)
        d.stop()
        before = snapshot_files()
        self.assertTrue([n for n in before if not n.endswith(".meta")], before)
        d = self.server(extra_args=args).start()
        self.assertIn("snapshot_bytes_read=16", d.log())  # the stub, not the snapshot
        self.assertEqual(self.ids(d), expected)
        assert_back_as_before(before)  # the real file is back as it was
        d.stop()
        # a crash while raft started: the stub in place, the real file aside
        before = snapshot_files()
        newest = max((n for n in before if n.endswith(".meta")),
                     key=lambda n: [int(x) for x in n[9:-5].split("-")])[:-5]
        os.rename(os.path.join(raft, newest), os.path.join(raft, "held-" + newest))
        with open(os.path.join(raft, newest), "wb") as f:
            f.write(b"RGSTUB01" + (1).to_bytes(8, "big"))
        d = self.server(extra_args=args).start()
        self.assertIn("store kept from the last clean stop", d.log())
        self.assertEqual(self.ids(d), expected)
        assert_back_as_before(before)
        d.kill9()
        # rebuilt after kill -9, from the real snapshot
        d = self.server(extra_args=args).start()
        self.assertNotIn("store kept", d.log())
        self.assertEqual(self.ids(d), expected)
        d.stop()

    def test_snapshot_copy_leaves_the_store_unmapped(self):
        """A raft snapshot's copy walks the whole store through LMDB's map;
        afterwards the map's pages leave the process's resident set (they
        stay in the page cache): at a million instances the resident size
        otherwise grew by the whole file after every snapshot. Nothing
        written is lost: a clean restart keeps the store and finds it all."""
        d = self.server(extra_args=["--raft-snapshot-threshold", "500"]).start()
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
        # 2 KB of Meta each: the few writes made between the copy's release
        # and this test's seeing its log line map their pages again (about
        # 300 pages under ASan), which must stay a small part of the store
        pad = {"p%d" % k: "x" * 500 for k in range(4)}

        def register(i):
            c.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "m%d" % (i % 400), "ID": "m-%d" % i, "Port": 1 + i,
                 "Meta": pad, "Check": {"TTL": "10m"}}))
            self.assertEqual(c.getresponse().read(), b"")

        n = 3000
        for i in range(n):
            register(i)
        # then one write at a time until a snapshot follows: few writes
        # touch the store after its copy
        taken = d.log().count('msg="snapshot taken"')
        while d.log().count('msg="snapshot taken"') == taken:
            self.assertLess(n, 3700, d.log())
            register(n)
            n += 1
            time.sleep(0.01)
        c.close()
        used = d.metric("registryd_store_bytes")
        resident = map_resident_kib(d.proc.pid, "data.mdb") * 1024
        self.assertGreater(used, 8 << 20)
        self.assertLess(resident, used / 3, "%d of %d bytes resident" % (resident, used))
        d.stop()
        d = self.server().start()
        self.assertIn("store kept", d.log())
        self.assertEqual(self.ids(d), {"m-%d" % i for i in range(n)})
        d.stop()

    def test_snapshots_compressed_or_not_are_read_either_way(self):
        """Raft snapshots are written plain by default (our format's magic
        first) and LZ4-framed with --raft-snapshot-compression; a server
        rebuilt after kill -9 reads the last one whichever way it was
        written, whichever way it now writes."""
        def snapshot_heads():
            raft = os.path.join(self.tmp.path, "raft")
            heads = set()
            for name in os.listdir(raft):
                if name.startswith("snapshot-") and not name.endswith(".meta"):
                    with open(os.path.join(raft, name), "rb") as f:
                        heads.add(f.read(8))
            return heads

        expected = set()
        n = 0
        for compressed in (True, False, True):
            args = ["--raft-snapshot-threshold", "16"]
            if compressed:
                args.append("--raft-snapshot-compression")
            d = self.server(extra_args=args).start()
            self.assertEqual(self.ids(d), expected)
            for _ in range(40):  # two snapshots of this run's kind at least
                sid = "snap-%d" % n
                n += 1
                d.request("PUT", "/v1/agent/service/register",
                          json.dumps({"Name": "snap", "ID": sid, "Port": n}))
                expected.add(sid)
            self.assertEqual(self.ids(d), expected)
            want = {b"\x04\x22\x4d\x18"} if compressed else {b"RSNA"}  # LZ4 frame / RSNAP002
            deadline = time.monotonic() + 10  # snapshots are written in the background
            while {h[:4] for h in snapshot_heads()} != want and time.monotonic() < deadline:
                time.sleep(0.05)
            heads = snapshot_heads()
            self.assertEqual({h[:4] for h in heads}, want, heads)
            if not compressed:
                self.assertEqual(heads, {b"RSNAP002"})
            # the snapshot was finished on its own thread below the front
            # end's priority (at a million instances it is seconds of CPU a
            # worker would lose); only its read of the store ran at normal
            # priority
            taken = re.findall(r'msg="snapshot taken" bytes=\d+ ms=[\d.]+ read_ms=[\d.]+ nice=(-?\d+)', d.log())
            self.assertTrue(taken, d.log())
            self.assertEqual(set(taken), {"10"}, d.log())
            d.kill9()  # the next start rebuilds the store from snapshot and log
        d = self.server().start()
        self.assertEqual(self.ids(d), expected)
        d.stop()

    def test_kept_store_stopped_before_raft_caught_up_is_not_applied_twice(self):
        """A cluster member that keeps its store and is stopped again before
        raft re-reached the store's applied index (no leader: the others are
        down) must record what the store holds, not raft's lower index: else
        the next start applies those entries a second time on top of the
        store (its index runs ahead of the other servers')."""
        from harness import start_cluster
        servers = start_cluster(self.tmp.path, 3, extra=["--raft-snapshot-threshold", "16"],
                                servers=self.servers)
        for i in range(40):
            status, _ = servers[1].request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "kept", "ID": "kept-%d" % i, "Port": i + 1}))
            self.assertEqual(status, 200)

        def index(d):
            deadline = time.monotonic() + 10
            while True:
                status, _, h = d.request_full("GET", "/v1/catalog/service/kept?stale")
                if status == 200 or time.monotonic() > deadline:
                    return int(h["X-Consul-Index"])
                time.sleep(0.1)

        deadline = time.monotonic() + 10
        while len({index(d) for d in servers}) != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        before = index(servers[0])
        for d in servers:
            d.stop()
        alone = servers[0]
        alone.start(wait=False)  # no quorum: raft never learns the commit index
        deadline = time.monotonic() + 15
        while "snapshot not restored" not in alone.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("store kept from the last clean stop", alone.log())
        time.sleep(0.5)
        alone.stop()
        for d in servers:
            d.start(wait=False)
        for d in servers:
            d.wait_ready(timeout=30)
        self.assertIn("store kept from the last clean stop", alone.log())
        self.assertEqual([index(d) for d in servers], [before] * 3)

    def test_store_is_rebuilt_after_a_crash_or_changed_raft_files(self):
        d = self.server().start()
        for i in range(10):
            d.request("PUT", "/v1/agent/service/register",
                      json.dumps({"Name": "rb", "ID": "rb-%d" % i, "Port": i + 1}))
        expected = self.ids(d)
        d.kill9()
        d = self.server().start()
        self.assertNotIn("store kept", d.log())
        self.assertEqual(self.ids(d), expected)
        d.stop()
        # a raft file written after the clean stop: the store is not trusted
        raft = os.path.join(self.tmp.path, "raft")
        newest = max((os.path.join(raft, f) for f in os.listdir(raft)), key=os.path.getmtime)
        os.utime(newest, None)
        d = self.server().start()
        self.assertNotIn("store kept", d.log())
        self.assertEqual(self.ids(d), expected)
        d.stop()

    def test_store_file_cut_short_is_rebuilt(self):
        # after a clean stop, a store file cut to a few pages (a full disk,
        # a bad copy) faulted with SIGBUS at start (found by probing)
        d = self.server().start()
        for i in range(200):
            d.request("PUT", "/v1/agent/service/register",
                      json.dumps({"Name": "cut", "ID": "cut-%d" % i, "Port": i + 1,
                                  "Meta": {"pad": "x" * 400}}))
        expected = self.ids(d)
        d.stop()
        store = os.path.join(self.tmp.path, "store", "data.mdb")
        for size in (16384, 12288):
            os.truncate(store, size)
            d = self.server().start()
            self.assertIn("store file shorter than its pages", d.log())
            self.assertNotIn("store kept", d.log())
            self.assertEqual(self.ids(d), expected)
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

    def test_raft_port_chosen_below_the_ephemeral_range(self):
        """A server given no raft_addr picks its raft port; libraft binds it
        later, so an outgoing connection must not be able to take it in
        between: it is chosen below the kernel's ephemeral range (it used to
        be the kernel's pick, from that range: a parallel test run once lost
        it to another connection and the server never started)."""
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
        for _ in range(3):
            d = self.server().start()
            with open(os.path.join(self.tmp.path, "server.json")) as f:
                port = int(json.load(f)["raft_addr"].rsplit(":", 1)[1])
            self.assertLess(port, lo)
            self.assertEqual(d.request("GET", "/v1/status/leader")[0], 200)
            d.stop()
            shutil.rmtree(self.tmp.path)  # a fresh data dir picks again
            os.makedirs(self.tmp.path)


if __name__ == "__main__":
    unittest.main()
