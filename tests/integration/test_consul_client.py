#!/usr/bin/python3
"""An unmodified Consul client library (Debian's python3-consul) against registryd."""
import threading
import time
import unittest

import consul
import consul.base

from harness import Registryd


class ConsulClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Registryd().start()
        cls.c = consul.Consul(host="127.0.0.1", port=cls.d.port)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    # python-consul 0.7 (Debian's) sends GET for deregister and the TTL
    # updates, as Consul did before 1.0; Consul now answers 405 to that and
    # so does registryd (GET never mutates), so these go as PUT.
    def put(self, path, **params):
        return self.c.http.put(consul.base.CB.bool(), path, params=params)

    def test_register_pass_watch_deregister(self):
        c = self.c
        self.assertTrue(c.agent.service.register("api", service_id="api-1", address="10.1.0.1",
                                                 port=9000, tags=["v1"],
                                                 check=consul.Check.ttl("30s")))
        self.assertIn("api-1", c.agent.services())
        index, nodes = c.health.service("api", passing=True)
        self.assertEqual(nodes, [])  # a TTL check starts critical
        self.assertFalse(c.agent.check.ttl_pass("service:api-1", notes="warm"))  # GET: 405
        self.assertTrue(self.put("/v1/agent/check/pass/service:api-1", note="warm"))
        index, nodes = c.health.service("api", passing=True)
        self.assertEqual([n["Service"]["ID"] for n in nodes], ["api-1"])
        self.assertEqual(nodes[0]["Service"]["Port"], 9000)
        self.assertEqual(nodes[0]["Service"]["Address"], "10.1.0.1")

        # a blocking query returns as soon as another client changes the service
        def change():
            time.sleep(0.5)
            other = consul.Consul(host="127.0.0.1", port=self.d.port)
            other.agent.service.register("api", service_id="api-2", port=9001)

        t = threading.Thread(target=change)
        t.start()
        start = time.monotonic()
        new_index, nodes = c.health.service("api", index=index, wait="5s", passing=True)
        took = time.monotonic() - start
        t.join()
        self.assertLess(took, 4)
        self.assertGreater(int(new_index), int(index))
        self.assertEqual(sorted(n["Service"]["ID"] for n in nodes), ["api-1", "api-2"])

        _, services = c.catalog.services()
        self.assertEqual(sorted(services["api"]), ["v1"])
        _, rows = c.catalog.service("api", tag="v1")
        self.assertEqual([r["ServiceID"] for r in rows], ["api-1"])

        self.assertTrue(c.agent.service.maintenance("api-1", "true", reason="upgrade"))
        _, nodes = c.health.service("api", passing=True)
        self.assertEqual([n["Service"]["ID"] for n in nodes], ["api-2"])
        self.assertTrue(c.agent.service.maintenance("api-1", "false"))

        self.assertFalse(c.agent.service.deregister("api-1"))  # GET: 405
        self.assertIn("api-1", c.agent.services())
        self.assertTrue(self.put("/v1/agent/service/deregister/api-1"))
        self.assertTrue(self.put("/v1/agent/service/deregister/api-2"))
        self.assertNotIn("api-1", c.agent.services())
        _, nodes = c.health.service("api")
        self.assertEqual(nodes, [])

    def test_agent_self_and_status(self):
        me = self.c.agent.self()
        self.assertEqual(me["Config"]["Datacenter"], "dc1")
        self.assertTrue(me["Config"]["NodeName"])
        self.assertRegex(self.c.status.leader(), r"^127\.0\.0\.1:\d+$")
        self.assertEqual(len(self.c.status.peers()), 1)

    def test_unknown_check_is_refused(self):
        self.assertFalse(self.put("/v1/agent/check/pass/service:nope"))
        self.assertFalse(self.put("/v1/agent/service/deregister/nope"))


if __name__ == "__main__":
    unittest.main()
