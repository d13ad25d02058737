#!/usr/bin/python3
"""Listings served from the store's derived indexes (issue 16): GET
/v1/health/state/<state> from the index of checks by state, GET
/v1/catalog/services from the index of tags per service name. Each answer
must equal what a walk of every record gives, computed here from answers
that walk (/v1/health/state/any, /v1/catalog/service/<name>), after every
kind of change, a snapshot restore, a clean restart (the store file kept),
a crash (rebuilt from raft) and a damaged store file.
"""
import http.client
import json
import os
import unittest

from harness import Registryd, TempDir

STATES = ("passing", "warning", "critical")


def ordered(text):
    """JSON with objects as lists of pairs, so that order is compared too."""
    return json.loads(text, object_pairs_hook=list)


class ListingIndexTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.d = Registryd(data_dir=os.path.join(self.tmp.path, "data")).start()

    def tearDown(self):
        self.d.stop()
        self.tmp.cleanup()

    def req(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=60)
        c.request(method, path, json.dumps(body) if body is not None else None)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def put(self, path, body=None):
        status, data = self.req("PUT", path, body)
        self.assertEqual(status, 200, (path, data))

    def get(self, path):
        status, data = self.req("GET", path)
        self.assertEqual(status, 200, (path, data))
        return data

    def register(self, sid, name, tags, status=None):
        body = {"Name": name, "ID": sid, "Port": 80, "Tags": tags}
        if status is not None:
            body["Check"] = {"CheckID": "ttl-" + sid, "TTL": "10m", "Status": status}
        self.put("/v1/agent/service/register", body)

    def verify(self, stage):
        # checks by state: what the walk of every check (any) says, in order
        every = ordered(self.get("/v1/health/state/any"))
        for state in STATES:
            with self.subTest(stage=stage, state=state):
                want = [c for c in every if dict(c)["Status"] == state]
                self.assertEqual(ordered(self.get("/v1/health/state/" + state)), want)
        # tags per name: first appearance walking each name's instances by ID
        listing = ordered(self.get("/v1/catalog/services"))
        names = [n for n, _ in listing]
        self.assertEqual(names, sorted(names, key=lambda s: s.encode()), stage)
        on_node = {}
        for name, tags in listing:
            insts = json.loads(self.get("/v1/catalog/service/" + name))
            self.assertTrue(insts, (stage, name))
            for inst in insts:
                on_node.setdefault(inst["Node"], []).append(inst["ServiceID"])
            want = []
            for inst in insts:
                for t in inst["ServiceTags"]:
                    if t not in want:
                        want.append(t)
            self.assertEqual(tags, want, (stage, name))
        # instances by node: every node listed, each with its instances by ID
        nodes = [n["Node"] for n in json.loads(self.get("/v1/catalog/nodes"))]
        for node, ids in on_node.items():
            self.assertIn(node, nodes, stage)
            services = ordered(self.get("/v1/catalog/node/" + node))
            got = [sid for sid, _ in dict(services)["Services"]]
            self.assertEqual(got, sorted(ids, key=lambda s: s.encode()), (stage, node))
            listed = json.loads(self.get("/v1/catalog/node-services/" + node))
            self.assertEqual([x["ID"] for x in listed["Services"]], got, (stage, node))
        return listing, every

    def test_listings_follow_changes_restore_and_restarts(self):
        # a name and a tag too long together for an index key (511 bytes):
        # that name is listed by walking its instances
        long_tag, long_name = "L" * 256, "long" + "n" * 252
        for i in range(30):
            tags = [["v1", "zone-%d" % (i % 3)], ["zone-%d" % (i % 3), "v1", "v1"], [],
                    ["caf\u00e9", "q\"uote", "back\\slash"]][i % 4]
            self.register("web-%02d" % (29 - i), "web" if i % 5 else "api", tags,
                          STATES[i % 3] if i % 7 else None)
        self.register("long-1", long_name, ["a", long_tag, "b"], "critical")
        self.register("long-0", long_name, ["b", "c"], "passing")
        self.put("/v1/catalog/register", {
            "Node": "ext-node", "Address": "192.0.2.10",
            "Service": {"ID": "ext1", "Service": "ext", "Port": 6379, "Tags": ["x", "y"]},
            "Checks": [{"CheckID": "service:ext1", "Name": "redis", "Status": "passing",
                        "ServiceID": "ext1"},
                       {"CheckID": "ext-node-alive", "Name": "alive", "Status": "warning"}]})
        self.verify("registered")

        # status changes, maintenance, tag and name changes, deregistrations
        self.put("/v1/agent/check/pass/ttl-web-00")
        self.put("/v1/agent/check/warn/ttl-web-09")
        self.put("/v1/agent/check/fail/ttl-web-02")
        self.put("/v1/agent/service/maintenance/web-03?enable=true&reason=kernel")
        self.put("/v1/agent/maintenance?enable=true&reason=node")
        self.register("web-04", "web", ["new", "v1"], "passing")
        self.register("web-05", "moved", ["zone-9"], "warning")
        self.put("/v1/agent/service/deregister/web-06")
        self.put("/v1/agent/service/deregister/long-1")
        self.put("/v1/catalog/register", {
            "Node": "ext-node", "Address": "192.0.2.10",
            "Check": {"CheckID": "ext-node-alive", "Name": "alive", "Status": "critical"}})
        self.verify("changed")
        self.put("/v1/agent/service/maintenance/web-03?enable=false")
        self.put("/v1/agent/maintenance?enable=false")
        self.verify("maintenance off")

        # a snapshot restored over later changes gives back its listings
        snap = self.get("/v1/snapshot")
        at_snapshot = self.verify("at snapshot")
        self.register("later", "later", ["l"], "critical")
        self.put("/v1/agent/check/pass/ttl-web-02")
        self.put("/v1/catalog/deregister", {"Node": "ext-node"})
        self.assertNotEqual(self.verify("after snapshot"), at_snapshot)
        self.restore(snap)
        self.assertEqual(self.verify("restored"), at_snapshot)

        # a clean restart keeps the store file (and its indexes)
        self.d.stop()
        self.d.start()
        self.assertIn("store kept from the last clean stop", self.d.log())
        self.assertEqual(self.verify("kept"), at_snapshot)
        self.put("/v1/agent/check/fail/ttl-web-00")
        self.register("web-07", "web", ["after-restart"], "passing")
        after = self.verify("changed after restart")

        # a crash: the store is rebuilt from raft's snapshot and log
        self.d.kill9()
        self.d.start()
        self.assertEqual(self.verify("rebuilt"), after)

        # a damaged store file (its meta pages overwritten) never brings the
        # daemon down: it is rebuilt from raft
        self.d.stop()
        path = os.path.join(self.d.data_dir, "store", "data.mdb")
        with open(path, "r+b") as f:
            f.write(os.urandom(8192))
        self.d.start()
        self.assertEqual(self.verify("damaged file"), after)

    def restore(self, snap):
        c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=60)
        c.request("PUT", "/v1/snapshot", snap)
        r = c.getresponse()
        body = r.read()
        c.close()
        self.assertEqual(r.status, 200, body)


if __name__ == "__main__":
    unittest.main()
