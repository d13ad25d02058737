#!/usr/bin/python3
"""Listings read from the store's derived indexes (tags per name, instances
per node; store.c): the answer is byte for byte the one a full walk renders (a ?filter= that keeps everything
takes the full walk), through registrations, tag changes, moves between
names and deregistrations, and after the remembered names are swept."""
import json
import unittest
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from harness import Registryd

EVERYTHING = "?filter=" + urllib.parse.quote('ServiceName != ""')


class CatalogServicesListingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Registryd().start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def register(self, body):
        status, text = self.d.request("PUT", "/v1/agent/service/register", json.dumps(body))
        self.assertEqual(status, 200, text)

    def assert_same_as_full_walk(self):
        status, fast = self.d.request("GET", "/v1/catalog/services")
        self.assertEqual(status, 200)
        status, full = self.d.request("GET", "/v1/catalog/services" + EVERYTHING)
        self.assertEqual(status, 200)
        self.assertEqual(fast, full)
        return json.loads(fast)

    def test_listing_follows_every_change(self):
        self.assertEqual(self.assert_same_as_full_walk(), {})
        # tags in order of first appearance over the instances (by ID)
        self.register({"Name": "web", "ID": "web-b", "Tags": ["z", "a"]})
        self.register({"Name": "web", "ID": "web-a", "Tags": ["m", "z"]})
        self.register({"Name": "db", "ID": "db-1"})
        got = self.assert_same_as_full_walk()
        self.assertEqual(got["web"], ["m", "z", "a"])
        self.assertEqual(got["db"], [])
        # a tag change, a move to another name, a deregistration
        self.register({"Name": "web", "ID": "web-a", "Tags": ["n"]})
        self.assertEqual(self.assert_same_as_full_walk()["web"], ["n", "z", "a"])
        self.register({"Name": "cache", "ID": "web-b", "Tags": ["q"]})
        got = self.assert_same_as_full_walk()
        self.assertEqual(got["web"], ["n"])
        self.assertEqual(got["cache"], ["q"])
        self.d.request("PUT", "/v1/agent/service/deregister/web-a")
        got = self.assert_same_as_full_walk()
        self.assertNotIn("web", got)
        # reads of one name between listings do not confuse the next listing
        self.d.request("GET", "/v1/catalog/service/cache")
        self.register({"Name": "web", "ID": "web-c", "Tags": ["back"]})
        self.assertEqual(self.assert_same_as_full_walk()["web"], ["back"])

    def test_many_names_then_most_gone(self):
        def reg(i):
            body = {"Name": "many-%d" % i, "ID": "many-%d" % i, "Tags": ["t%d" % (i % 5)]}
            return self.d.request("PUT", "/v1/agent/service/register", json.dumps(body))[0]

        with ThreadPoolExecutor(8) as pool:
            self.assertEqual(set(pool.map(reg, range(1200))), {200})
        got = self.assert_same_as_full_walk()
        self.assertEqual(got["many-7"], ["t2"])

        def dereg(i):
            return self.d.request("PUT", "/v1/agent/service/deregister/many-%d" % i)[0]

        with ThreadPoolExecutor(8) as pool:
            self.assertEqual(set(pool.map(dereg, range(0, 1200, 2))), {200})
        got = self.assert_same_as_full_walk()
        self.assertNotIn("many-8", got)
        self.assertEqual(got["many-9"], ["t4"])
        # a gone name that comes back lists its new tags only
        self.register({"Name": "many-8", "ID": "many-8", "Tags": ["again"]})
        self.assertEqual(self.assert_same_as_full_walk()["many-8"], ["again"])


class CatalogNodesListingTest(unittest.TestCase):
    """/v1/catalog/nodes, /v1/catalog/node/:node and /v1/health/node/:node
    learn instances' nodes from the store's index of instances by node (the
    instance with the smallest ID on a node, as the walk over every instance
    finds first); changes show at once. (Nodes known only through
    instances come from other servers: the cluster tests cover those.)"""

    @classmethod
    def setUpClass(cls):
        cls.d = Registryd().start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def put(self, path, body):
        status, text = self.d.request("PUT", path, json.dumps(body))
        self.assertEqual(status, 200, text)

    def nodes(self):
        status, text = self.d.request("GET", "/v1/catalog/nodes")
        self.assertEqual(status, 200)
        return {n["Node"]: n for n in json.loads(text)}

    def test_nodes_follow_instances(self):
        self.assertEqual(len(self.nodes()), 1)  # this server
        self.put("/v1/catalog/register", {"Node": "n1", "Address": "192.0.2.1",
                                          "Service": {"Service": "zz", "ID": "b-zz"}})
        self.put("/v1/catalog/register", {"Node": "n2", "Address": "192.0.2.2",
                                          "Service": {"Service": "aa", "ID": "a-aa"}})
        self.put("/v1/catalog/register", {"Node": "n1", "Address": "192.0.2.1",
                                          "Service": {"Service": "aa", "ID": "c-aa"}})
        got = self.nodes()
        self.assertEqual(len(got), 3)  # this server, n1, n2
        self.assertEqual(got["n1"]["Address"], "192.0.2.1")
        self.assertEqual(got["n2"]["Address"], "192.0.2.2")
        status, text = self.d.request("GET", "/v1/catalog/node/n2")
        self.assertEqual(json.loads(text)["Node"]["Address"], "192.0.2.2")
        # n2 deregistered (its record and its instance): gone at once
        self.put("/v1/catalog/deregister", {"Node": "n2"})
        self.assertNotIn("n2", self.nodes())
        status, text = self.d.request("GET", "/v1/catalog/node/n2")
        self.assertEqual(text.strip(), "null")
        status, text = self.d.request("GET", "/v1/health/node/n1")
        self.assertEqual(status, 200)
        self.assertIn("serfHealth", text)


if __name__ == "__main__":
    unittest.main()
