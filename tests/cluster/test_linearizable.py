#!/usr/bin/python3
"""Linearizability of registrations under a leader crash.

Four clients register, deregister and read (?consistent) a few instance IDs
on random servers of a 3-server cluster while the leader is killed with
kill -9 and restarted. The recorded history is then checked, key by key (a
set of independent keys is linearizable iff each key is: P-compositionality),
with the Wing & Gong / Lowe search: is there an order of the operations,
consistent with their real-time order, in which every answer is right?
Writes that failed or timed out may have happened or not, at any time after
they started; they constrain nothing.
"""
import json
import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import TempDir, start_cluster  # noqa: E402

KEYS = ["lin-%d" % i for i in range(4)]
INF = float("inf")


class Op:
    __slots__ = ("kind", "key", "start", "end", "result")

    def __init__(self, kind, key, start, end, result):
        self.kind, self.key, self.start, self.end, self.result = kind, key, start, end, result


def step(op, present):
    """(allowed, new state) for op applied when the key is `present`."""
    if op.kind == "register":
        return True, True
    if op.kind == "deregister":
        if op.result is None:  # outcome unknown
            return True, False
        return op.result == present, False
    return op.result == present, present  # read


def linearizable(ops):
    """Wing & Gong search with memoisation; ops of one key."""
    ops = sorted(ops, key=lambda o: o.start)
    known = [i for i, o in enumerate(ops) if o.end != INF]
    seen = set()
    sys.setrecursionlimit(100000)

    def search(done, present):
        if all(i in done for i in known):
            return True
        memo = (done, present)
        if memo in seen:
            return False
        seen.add(memo)
        horizon = min(ops[i].end for i in range(len(ops)) if i not in done)
        for i, op in enumerate(ops):
            if i in done or op.start > horizon:
                continue
            ok, nxt = step(op, present)
            if ok and search(done | frozenset([i]), nxt):
                return True
        return False

    return search(frozenset(), False)


class LinearizabilityTest(unittest.TestCase):
    def test_checker_finds_a_stale_read(self):
        # the checker itself: a read that misses a completed registration fails
        good = [Op("register", "k", 0, 1, None), Op("read", "k", 2, 3, True)]
        bad = [Op("register", "k", 0, 1, None), Op("read", "k", 2, 3, False)]
        racy = [Op("register", "k", 0, 5, None), Op("read", "k", 1, 2, False),
                Op("read", "k", 3, 4, True)]
        self.assertTrue(linearizable(good))
        self.assertFalse(linearizable(bad))
        self.assertTrue(linearizable(racy))
        self.assertFalse(linearizable(racy + [Op("read", "k", 6, 7, False)]))

    def test_history_under_leader_crash(self):
        tmp = TempDir()
        servers = []
        history, lock = [], threading.Lock()
        stop = threading.Event()

        def client(seed):
            rnd = random.Random(seed)
            while not stop.is_set():
                d = rnd.choice(servers)
                kind = rnd.choice(["register", "deregister", "read", "read"])
                key = rnd.choice(KEYS)
                start = time.monotonic()
                try:
                    if kind == "register":
                        status, _ = d.request("PUT", "/v1/agent/service/register",
                                              json.dumps({"Name": "lin", "ID": key}), timeout=3)
                    elif kind == "deregister":
                        status, _ = d.request("PUT", "/v1/agent/service/deregister/" + key,
                                              timeout=3)
                    else:
                        status, text = d.request("GET", "/v1/catalog/service/lin?consistent",
                                                 timeout=3)
                except OSError:
                    status = None
                end = time.monotonic()
                with lock:
                    if kind == "read":
                        if status == 200:
                            present = {r["ServiceID"] for r in json.loads(text)}
                            for k in KEYS:
                                history.append(Op("read", k, start, end, k in present))
                    elif kind == "register":
                        history.append(Op(kind, key, start, end if status == 200 else INF, None))
                    elif status in (200, 404):
                        history.append(Op(kind, key, start, end, status == 200))
                    else:
                        history.append(Op(kind, key, start, INF, None))

        try:
            start_cluster(tmp.path, 3, servers=servers)
            threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
            for t in threads:
                t.start()
            time.sleep(2)
            leader = None
            for d in servers:
                if json.loads(d.request("GET", "/v1/internal/raft/self")[1])["Raft"] == \
                        json.loads(d.request("GET", "/v1/status/leader")[1]):
                    leader = d
            self.assertIsNotNone(leader)
            leader.kill9()
            time.sleep(2.5)
            leader.start(wait=False)
            time.sleep(2.5)
            stop.set()
            for t in threads:
                t.join(30)
        finally:
            stop.set()
            for d in servers:
                if d.proc is not None:
                    d.stop(check=False)
            tmp.cleanup()
        with lock:
            ops = list(history)
        reads = sum(1 for o in ops if o.kind == "read")
        writes = sum(1 for o in ops if o.kind != "read" and o.end != INF)
        self.assertGreater(writes, 20)
        self.assertGreater(reads, 20)
        for key in KEYS:
            key_ops = [o for o in ops if o.key == key]
            self.assertTrue(linearizable(key_ops), "history of %s is not linearizable" % key)
        print("checked %d operations (%d acknowledged writes, %d key reads): linearizable"
              % (len(ops), writes, reads), file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
