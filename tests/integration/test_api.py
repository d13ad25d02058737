#!/usr/bin/python3
"""The Consul-shaped HTTP API, route by route, against a real registryd."""
import json
import time
import unittest

from harness import Registryd


class ApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Registryd(extra_args=["--node", "node-a", "--datacenter", "dc7"]).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def put(self, path, body=None):
        status, text = self.d.request("PUT", path, json.dumps(body) if body is not None else None)
        self.assertEqual(status, 200, "%s: %s" % (path, text))
        return text

    def get(self, path, status=200):
        code, text, headers = self.d.request_full("GET", path)
        self.assertEqual(code, status, "%s: %s" % (path, text))
        for h in ("X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-LastContact"):
            self.assertIn(h, headers, path)
        self.assertTrue(headers["X-Consul-Index"].isdigit())
        self.assertTrue(headers["X-Consul-LastContact"].isdigit())
        return json.loads(text) if status == 200 else text

    def register_web(self):
        self.put("/v1/agent/service/register", {
            "Name": "web", "ID": "web-1", "Address": "10.0.0.5", "Port": 8080,
            "Tags": ["v1", "blue"], "Meta": {"zone": "a"}, "Check": {"TTL": "30s"}})
        self.put("/v1/agent/service/register", {
            "Name": "web", "ID": "web-2", "Port": 8081, "Tags": ["v2", "blue"],
            "Weights": {"Passing": 5, "Warning": 2}})

    def setUp(self):
        for sid in self.get("/v1/agent/services"):
            self.put("/v1/agent/service/deregister/" + sid)
        self.register_web()

    def test_agent_services_and_service(self):
        services = self.get("/v1/agent/services")
        self.assertEqual(set(services), {"web-1", "web-2"})
        w1 = services["web-1"]
        self.assertEqual(w1["Service"], "web")
        self.assertEqual(w1["Address"], "10.0.0.5")
        self.assertEqual(w1["Port"], 8080)
        self.assertEqual(w1["Tags"], ["v1", "blue"])
        self.assertEqual(w1["Meta"], {"zone": "a"})
        self.assertEqual(w1["Weights"], {"Passing": 1, "Warning": 1})
        self.assertEqual(services["web-2"]["Weights"], {"Passing": 5, "Warning": 2})
        self.assertEqual(self.get("/v1/agent/service/web-1")["ID"], "web-1")
        self.get("/v1/agent/service/nope", status=404)

    def test_health_service_shape_and_filters(self):
        entries = self.get("/v1/health/service/web")
        self.assertEqual(len(entries), 2)
        for e in entries:
            self.assertEqual(set(e), {"Node", "Service", "Checks"})
            self.assertEqual(e["Node"]["Node"], "node-a")
            self.assertEqual(e["Node"]["Datacenter"], "dc7")
        by_id = {e["Service"]["ID"]: e for e in entries}
        checks = {c["CheckID"]: c for c in by_id["web-1"]["Checks"]}
        self.assertEqual(checks["service:web-1"]["Status"], "critical")  # TTL starts critical
        self.assertEqual(checks["service:web-1"]["ServiceID"], "web-1")
        self.assertEqual(checks["serfHealth"]["Status"], "passing")

        self.assertEqual([e["Service"]["ID"] for e in self.get("/v1/health/service/web?passing")],
                         ["web-2"])
        # Consul reads ?passing with Go's strconv.ParseBool
        for value, want in (("t", 1), ("True", 1), ("F", 2), ("0", 2), ("false", 2)):
            self.assertEqual(len(self.get("/v1/health/service/web?passing=" + value)), want, value)
        self.put("/v1/agent/check/pass/service:web-1?note=ok")
        ids = sorted(e["Service"]["ID"] for e in self.get("/v1/health/service/web?passing=1"))
        self.assertEqual(ids, ["web-1", "web-2"])
        self.assertEqual(
            [e["Service"]["ID"] for e in self.get("/v1/health/service/web?tag=v1")], ["web-1"])
        # repeated tag= means every tag
        self.assertEqual(len(self.get("/v1/health/service/web?tag=blue")), 2)
        self.assertEqual(len(self.get("/v1/health/service/web?tag=blue&tag=v2")), 1)
        self.assertEqual(self.get("/v1/health/service/nosuch"), [])

    def test_check_updates(self):
        for verb, status in (("pass", "passing"), ("warn", "warning"), ("fail", "critical")):
            self.put("/v1/agent/check/%s/service:web-1?note=%s-note" % (verb, verb))
            c = self.get("/v1/agent/checks")["service:web-1"]
            self.assertEqual(c["Status"], status)
            self.assertEqual(c["Output"], "%s-note" % verb)
        self.put("/v1/agent/check/update/service:web-1", {"Status": "passing", "Output": "fine"})
        c = self.get("/v1/agent/checks")["service:web-1"]
        self.assertEqual((c["Status"], c["Output"]), ("passing", "fine"))
        status, text = self.d.request("PUT", "/v1/agent/check/pass/nosuch")
        self.assertEqual(status, 404)
        self.assertIn("nosuch", text)

    def test_several_checks_get_numbered_ids(self):
        self.put("/v1/agent/service/register", {
            "Name": "db", "ID": "db-1", "Checks": [{"TTL": "10s"}, {"TTL": "20s"}]})
        checks = self.get("/v1/health/checks/db")
        self.assertEqual(sorted(c["CheckID"] for c in checks), ["service:db-1:1", "service:db-1:2"])

    def test_maintenance(self):
        self.put("/v1/agent/check/pass/service:web-1")
        self.put("/v1/agent/service/maintenance/web-1?enable=true&reason=deploying")
        checks = self.get("/v1/agent/checks")
        m = checks["_service_maintenance:web-1"]
        self.assertEqual(m["Status"], "critical")
        self.assertEqual(m["Notes"], "deploying")
        self.assertNotIn("web-1", [e["Service"]["ID"] for e in
                                   self.get("/v1/health/service/web?passing")])
        self.put("/v1/agent/service/maintenance/web-1?enable=false")
        self.assertNotIn("_service_maintenance:web-1", self.get("/v1/agent/checks"))
        self.assertIn("web-1", [e["Service"]["ID"] for e in
                                self.get("/v1/health/service/web?passing")])

    def test_catalog(self):
        self.assertEqual(sorted(self.get("/v1/catalog/services")["web"]), ["blue", "v1", "v2"])
        rows = self.get("/v1/catalog/service/web")
        self.assertEqual(sorted(r["ServiceID"] for r in rows), ["web-1", "web-2"])
        row = [r for r in rows if r["ServiceID"] == "web-1"][0]
        self.assertEqual(row["ServiceAddress"], "10.0.0.5")
        self.assertEqual(row["ServicePort"], 8080)
        self.assertEqual(row["ServiceMeta"], {"zone": "a"})
        self.assertEqual(row["Node"], "node-a")
        self.assertEqual([r["ServiceID"] for r in self.get("/v1/catalog/service/web?tag=v2")],
                         ["web-2"])
        nodes = self.get("/v1/catalog/nodes")
        self.assertEqual([n["Node"] for n in nodes], ["node-a"])

    def test_nodes_and_datacenters(self):
        self.assertEqual(self.get("/v1/catalog/datacenters"), ["dc7"])
        node = self.get("/v1/catalog/node/node-a")
        self.assertEqual(node["Node"]["Node"], "node-a")
        self.assertEqual(node["Node"]["Datacenter"], "dc7")
        self.assertEqual(node["Node"]["ID"], self.get("/v1/catalog/nodes")[0]["ID"])
        self.assertEqual(sorted(node["Services"]), ["web-1", "web-2"])
        self.assertEqual(node["Services"]["web-1"]["Port"], 8080)
        self.assertEqual(node["Services"]["web-1"]["Service"], "web")
        self.assertIsNone(self.get("/v1/catalog/node/nobody"))
        checks = self.get("/v1/health/node/node-a")
        self.assertEqual([c["CheckID"] for c in checks], ["serfHealth", "service:web-1"])
        self.assertTrue(all(c["Node"] == "node-a" for c in checks))
        self.assertEqual(self.get("/v1/health/node/nobody"), [])

    def test_datacenter_parameter(self):
        self.assertIn("web", self.get("/v1/catalog/services?dc=dc7"))
        text = self.get("/v1/catalog/services?dc=dc1", status=500)
        self.assertIn("No path to datacenter", text)
        status, text = self.d.request("PUT", "/v1/agent/service/register?dc=elsewhere",
                                      json.dumps({"Name": "x", "ID": "x-1"}))
        self.assertEqual(status, 500, text)
        self.assertNotIn("x-1", self.get("/v1/agent/services"))

    def test_health_checks_and_state(self):
        checks = self.get("/v1/health/checks/web")
        self.assertEqual([c["CheckID"] for c in checks], ["service:web-1"])
        critical = [c["CheckID"] for c in self.get("/v1/health/state/critical")]
        self.assertIn("service:web-1", critical)
        passing = [c["CheckID"] for c in self.get("/v1/health/state/passing")]
        self.assertNotIn("service:web-1", passing)
        self.assertIn("service:web-1", [c["CheckID"] for c in self.get("/v1/health/state/any")])
        self.get("/v1/health/state/bogus", status=400)

    def test_deregister(self):
        self.put("/v1/agent/service/deregister/web-1")
        self.assertEqual(set(self.get("/v1/agent/services")), {"web-2"})
        self.assertNotIn("service:web-1", self.get("/v1/agent/checks"))
        status, text = self.d.request("PUT", "/v1/agent/service/deregister/web-1")
        self.assertEqual(status, 404)
        self.put("/v1/agent/service/deregister/web-2")
        self.assertEqual(self.get("/v1/catalog/services"), {})

    def test_reregister_replaces(self):
        # the checks stay unless ?replace-existing-checks (Consul's rule)
        self.put("/v1/agent/service/register?replace-existing-checks",
                 {"Name": "web", "ID": "web-1", "Port": 9999})
        self.assertEqual(self.get("/v1/agent/service/web-1")["Port"], 9999)
        self.assertNotIn("service:web-1", self.get("/v1/agent/checks"))

    def test_status_and_self(self):
        leader = self.get("/v1/status/leader")
        self.assertRegex(leader, r"^127\.0\.0\.1:\d+$")
        self.assertEqual(self.get("/v1/status/peers"), [leader])
        me = self.get("/v1/agent/self")
        self.assertEqual(me["Config"]["Datacenter"], "dc7")
        self.assertEqual(me["Config"]["NodeName"], "node-a")

    def test_index_moves_with_writes(self):
        _, _, h1 = self.d.request_full("GET", "/v1/health/service/web")
        self.put("/v1/agent/check/pass/service:web-1")
        _, _, h2 = self.d.request_full("GET", "/v1/health/service/web")
        self.assertGreater(int(h2["X-Consul-Index"]), int(h1["X-Consul-Index"]))

    def test_lowercase_keys_token_and_no_content_type(self):
        status, text = self.d.request(
            "PUT", "/v1/agent/service/register?token=secret",
            json.dumps({"name": "lower", "id": "lower-1", "port": 1234, "tags": ["x"],
                        "check": {"ttl": "10s"}}).encode())
        self.assertEqual(status, 200, text)
        svc = self.get("/v1/agent/service/lower-1")
        self.assertEqual((svc["Service"], svc["Port"], svc["Tags"]), ("lower", 1234, ["x"]))
        self.assertIn("service:lower-1", self.get("/v1/agent/checks"))

    def test_404_carries_headers(self):
        text = self.get("/v1/no/such/path", status=404)
        self.assertIn("/v1/no/such/path", text)

    def test_internal_headers_are_not_trusted_on_public_routes(self):
        # a plain client naming another node, or claiming to be a forwarding
        # server, is not believed: the write belongs to the node it reached
        status, text = self.d.request(
            "PUT", "/v1/agent/service/register",
            json.dumps({"Name": "forged", "ID": "forged-1", "Port": 1}),
            headers={"X-Registry-Forwarded": "1", "X-Registry-Node": "other",
                     "X-Registry-Node-Address": "10.9.9.9"})
        self.assertEqual(status, 200, text)
        entry, = self.get("/v1/catalog/service/forged")
        self.assertEqual(entry["Node"], "node-a")
        self.assertNotEqual(entry["Address"], "10.9.9.9")

    def test_forward_envelope_is_checked(self):
        # the internal forwarding route refuses what a server would not send
        for headers in ({}, {"X-Registry-Method": "PUT", "X-Registry-URI": "/v1/internal/forward",
                             "X-Registry-Node": "n", "X-Registry-Node-Address": "a"},
                        {"X-Registry-Method": "BREW", "X-Registry-URI": "/v1/agent/services",
                         "X-Registry-Node": "n", "X-Registry-Node-Address": "a"},
                        {"X-Registry-Method": "GET", "X-Registry-URI": "http://x/",
                         "X-Registry-Node": "n", "X-Registry-Node-Address": "a"}):
            status, text = self.d.request("PUT", "/v1/internal/forward", "", headers=headers)
            self.assertEqual(status, 400, "%s: %s" % (headers, text))
        status, _ = self.d.request("GET", "/v1/internal/forward")
        self.assertEqual(status, 405)

    def test_forwarded_blocking_query_ends_before_the_channel_gives_up(self):
        # a follower sends a blocking query on before its wait when the
        # leader must judge its token, or when no leader was known at first;
        # the leader held it the whole wait (here 60 s) and the follower's
        # channel gave up at 30 s: the client got 500. It ends before.
        _, _, h = self.d.request_full("GET", "/v1/health/service/fwd-wait")
        hdr = {"X-Registry-Method": "GET", "X-Registry-Node": "n2",
               "X-Registry-Node-Address": "127.0.0.1",
               "X-Registry-URI": "/v1/health/service/fwd-wait?index=%s&wait=60s"
               % h["X-Consul-Index"]}
        t0 = time.monotonic()
        status, text, h2 = self.d.request_full("PUT", "/v1/internal/forward", "", hdr, timeout=40)
        took = time.monotonic() - t0
        self.assertEqual(status, 200, text)
        self.assertEqual(h2["X-Consul-Index"], h["X-Consul-Index"])
        self.assertLess(took, 25)
        self.assertGreater(took, 10)  # still a blocking query

    def test_apply_batch_is_checked(self):
        for body in (b"", b"\x00\x00\x00", b"\x00\x00\x00\x09abc", b"\xff\xff\xff\xff"):
            status, text = self.d.request("PUT", "/v1/internal/apply", body)
            self.assertEqual(status, 400, "%r: %s" % (body, text))
        # a well-framed batch of a command a follower never proposes is refused per command
        cmd = b"\x01\x04" + b'{"ServiceID":"x","Enable":true,"Reason":""}'
        cmd += b" " * (-len(cmd) % 8)
        status, text = self.d.request("PUT", "/v1/internal/apply",
                                      len(cmd).to_bytes(4, "big") + cmd)
        self.assertEqual(status, 200, text)
        self.assertEqual(len(json.loads(text)), 1)
        self.assertLess(json.loads(text)[0], 0)
        self.assertEqual(self.get("/v1/catalog/service/x"), [])


if __name__ == "__main__":
    unittest.main()
