#!/usr/bin/python3
"""Consul compatibility, round two: the requests real clients send (go-bexpr
?filter=, ?node-meta= as Prometheus's consul_sd sends it, check ids, snake_case
bodies, ...) answered as Consul answers them, against a real registryd."""
import json
import subprocess
import threading
import time
import unittest
import urllib.parse

from harness import Registryd


def q(expr):
    return urllib.parse.quote(expr, safe="")


class CompatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Registryd(extra_args=["--node", "node-a", "--node-meta", "rack:r1",
                                      "--node-meta", "env:prod"]).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def put(self, path, body=None, status=200):
        code, text = self.d.request("PUT", path, json.dumps(body) if body is not None else None)
        self.assertEqual(code, status, "%s: %s" % (path, text))
        return text

    def get(self, path, status=200):
        code, text = self.d.request("GET", path)
        self.assertEqual(code, status, "%s: %s" % (path, text))
        return json.loads(text) if status == 200 else text

    def setUp(self):
        self.put("/v1/catalog/deregister", {"Node": "ext-node"})
        for sid in self.get("/v1/agent/services"):
            self.put("/v1/agent/service/deregister/" + sid)
        self.put("/v1/agent/service/register", {
            "Name": "web", "ID": "web-1", "Address": "10.0.0.5", "Port": 8080,
            "Tags": ["v1", "blue"], "Meta": {"zone": "a", "version": "1.2"},
            "Check": {"TTL": "30s"}})
        self.put("/v1/agent/service/register", {
            "Name": "web", "ID": "web-2", "Port": 8081, "Tags": ["v2"],
            "Meta": {"zone": "b"}, "Weights": {"Passing": 5, "Warning": 2},
            "Check": {"TTL": "30s"}})
        self.put("/v1/agent/service/register", {"Name": "db", "ID": "db-1", "Port": 5432})
        self.put("/v1/agent/check/pass/service:web-1")

    # ---- 1. ?filter= ------------------------------------------------------

    def test_filter_agent_services(self):
        got = self.get("/v1/agent/services?filter=" + q('Service == web and Port != 8081'))
        self.assertEqual(set(got), {"web-1"})
        got = self.get("/v1/agent/services?filter=" + q('"blue" in Tags'))
        self.assertEqual(set(got), {"web-1"})
        got = self.get("/v1/agent/services?filter=" + q('Tags not contains "blue"'))
        self.assertEqual(set(got), {"web-2", "db-1"})
        got = self.get("/v1/agent/services?filter=" + q('Meta.zone == "b" or Service == db'))
        self.assertEqual(set(got), {"web-2", "db-1"})
        got = self.get("/v1/agent/services?filter=" + q('Meta is empty'))
        self.assertEqual(set(got), {"db-1"})
        got = self.get("/v1/agent/services?filter=" + q('Meta["version"] matches "^1\\\\.[0-9]+$"'))
        self.assertEqual(set(got), {"web-1"})
        got = self.get("/v1/agent/services?filter=" + q('not (Service matches "^w") and Meta.zone != a'))
        self.assertEqual(set(got), {"db-1"})
        got = self.get("/v1/agent/services?filter=" + q('Weights.Passing == 5'))
        self.assertEqual(set(got), {"web-2"})
        got = self.get("/v1/agent/services?filter=" + q('Address is not empty'))
        self.assertEqual(set(got), {"web-1"})
        got = self.get("/v1/agent/services?filter=" + q('"zone" in Meta'))
        self.assertEqual(set(got), {"web-1", "web-2"})

    def test_filter_health_and_catalog(self):
        got = self.get("/v1/health/service/web?filter=" + q('Checks.Status == critical'))
        self.assertEqual([e["Service"]["ID"] for e in got], ["web-2"])
        got = self.get("/v1/health/service/web?filter=" + q('Service.Meta.zone == a'))
        self.assertEqual([e["Service"]["ID"] for e in got], ["web-1"])
        got = self.get("/v1/catalog/service/web?filter=" + q('ServicePort == 8081'))
        self.assertEqual([e["ServiceID"] for e in got], ["web-2"])
        got = self.get("/v1/catalog/services?filter=" + q('ServiceName != db'))
        self.assertEqual(set(got), {"web"})
        got = self.get("/v1/catalog/services?filter=" + q('"v2" in ServiceTags'))
        self.assertEqual(got, {"web": ["v2"]})
        got = self.get("/v1/catalog/nodes?filter=" + q('Meta.rack == r1'))
        self.assertEqual([n["Node"] for n in got], ["node-a"])
        self.assertEqual(self.get("/v1/catalog/nodes?filter=" + q('Node == other')), [])
        got = self.get("/v1/health/checks/web?filter=" + q('Status == passing'))
        self.assertEqual([c["CheckID"] for c in got], ["service:web-1"])
        got = self.get("/v1/health/state/critical?filter=" + q('ServiceName == web'))
        self.assertEqual([c["CheckID"] for c in got], ["service:web-2"])
        got = self.get("/v1/agent/checks?filter=" + q('ServiceID == "web-2"'))
        self.assertEqual(set(got), {"service:web-2"})
        # the node endpoints filter too (they answered everything): a node's
        # checks, its services (not the node itself), the members
        got = self.get("/v1/health/node/node-a?filter=" + q('Status == critical'))
        self.assertEqual([c["CheckID"] for c in got], ["service:web-2"])
        got = self.get("/v1/catalog/node/node-a?filter=" + q('Port == 8081'))
        self.assertEqual((got["Node"]["Node"], set(got["Services"])), ("node-a", {"web-2"}))
        got = self.get("/v1/catalog/node-services/node-a?filter=" + q('Service == db'))
        self.assertEqual([s["ID"] for s in got["Services"]], ["db-1"])
        self.assertEqual(self.get("/v1/agent/members?filter=" + q('Name == nobody')), [])
        self.assertEqual(len(self.get("/v1/agent/members?filter=" + q('Name == "node-a"'))), 1)
        for path in ("/v1/health/node/node-a", "/v1/catalog/node/node-a",
                     "/v1/catalog/node-services/node-a", "/v1/agent/members"):
            self.assertIn("Failed to create boolean expression evaluator",
                          self.get(path + "?filter=" + q("((("), status=400))

    def test_filter_is_cached_per_expression(self):
        a = self.get("/v1/agent/services?filter=" + q('Service == web'))
        b = self.get("/v1/agent/services?filter=" + q('Service == db'))
        self.assertEqual((set(a), set(b)), ({"web-1", "web-2"}, {"db-1"}))

    def test_cache_key_keeps_decoded_separators(self):
        # "tag=t1%26dc%3Ddc1" asks for the tag "t1&dc=dc1": its (empty)
        # answer must not be cached as the answer to "tag=t1&dc=dc1"
        self.put("/v1/agent/service/register", {"Name": "api", "ID": "api1", "Tags": ["t1"]})
        for path in ("/v1/catalog/service/api", "/v1/health/service/api"):
            with self.subTest(path=path):
                self.assertEqual(self.get(path + "?tag=t1%26dc%3Ddc1"), [])
                self.assertEqual(len(self.get(path + "?tag=t1&dc=dc1")), 1)
                self.assertEqual(self.get(path + "?tag=t1%3D"), [])
                self.assertEqual(len(self.get(path + "?tag=t1&=")), 1)

    def test_bad_filter_is_400_with_reason(self):
        # the same mistakes against each endpoint's own selectors
        for path, svc, port, tags in [
                ("/v1/agent/services", "Service", "Port", "Tags"),
                ("/v1/health/service/web", "Service.Service", "Service.Port", "Service.Tags"),
                ("/v1/catalog/services", "ServiceName", "ServicePort", "ServiceTags"),
                ("/v1/catalog/service/web", "ServiceName", "ServicePort", "ServiceTags")]:
            for expr, why in [(svc + " ==", "value"), ("Nope == 1", 'Selector "Nope" is not valid'),
                              (port + " == abc", "integer"), ("(%s == web" % svc, "parenthes"),
                              ('%s == "web' % svc, "Unterminated"), (tags + " == x", "operator"),
                              (svc + " = web", "character"), (svc + ' matches "("', "regular"),
                              (svc + " == web or", "end of the expression"),
                              (svc + " == web-2", "unexpected"),
                              ("(" * 100 + svc + " == web" + ")" * 100, "nested"),
                              ("x" * 5000, "longer")]:
                with self.subTest(expr=expr[:40], path=path):
                    code, text = self.d.request("GET", path + "?filter=" + q(expr))
                    self.assertEqual(code, 400, text)
                    self.assertIn(why.lower(), text.lower())

    # ---- 2. node meta -------------------------------------------------------

    def test_node_meta_shown_and_filtered(self):
        nodes = self.get("/v1/catalog/nodes")
        self.assertEqual(nodes[0]["Meta"], {"rack": "r1", "env": "prod"})
        entry = self.get("/v1/catalog/service/web")[0]
        self.assertEqual(entry["NodeMeta"], {"rack": "r1", "env": "prod"})
        self.assertEqual(self.get("/v1/health/service/web")[0]["Node"]["Meta"]["rack"], "r1")
        # what Prometheus's consul_sd sends
        self.assertEqual(len(self.get("/v1/health/service/web?node-meta=rack:r1&stale")), 2)
        self.assertEqual(len(self.get("/v1/health/service/web?node-meta=rack:r1"
                                      "&node-meta=env:prod")), 2)
        self.assertEqual(self.get("/v1/health/service/web?node-meta=rack:r2"), [])
        self.assertEqual(self.get("/v1/catalog/services?node-meta=env:dev"), {})
        self.assertEqual(set(self.get("/v1/catalog/services?node-meta=env:prod")), {"web", "db"})
        self.assertEqual(len(self.get("/v1/catalog/nodes?node-meta=env:prod")), 1)
        self.assertEqual(self.get("/v1/catalog/nodes?node-meta=env:dev"), [])
        self.assertEqual(len(self.get("/v1/catalog/service/web?node-meta=env:prod")), 2)
        self.assertIn("node-meta", self.get("/v1/catalog/nodes?node-meta=nocolon", status=400))

    # ---- 3. check ids -------------------------------------------------------

    def test_one_check_in_checks_is_service_id(self):
        self.put("/v1/agent/service/register", {
            "Name": "api", "ID": "api-1", "Checks": [{"TTL": "10s"}]})
        self.assertIn("service:api-1", self.get("/v1/agent/checks"))
        self.put("/v1/agent/check/pass/service:api-1")  # the heartbeat finds it
        self.assertEqual(self.get("/v1/agent/checks")["service:api-1"]["Status"], "passing")
        # Check and Checks are numbered as one list when there are several
        self.put("/v1/agent/service/register?replace-existing-checks", {
            "Name": "api", "ID": "api-1", "Check": {"TTL": "10s"},
            "Checks": [{"TTL": "20s"}]})
        ids = sorted(c for c in self.get("/v1/agent/checks") if c.startswith("service:api-1"))
        self.assertEqual(ids, ["service:api-1:1", "service:api-1:2"])

    # ---- 4. re-registration keeps checks ------------------------------------

    def test_reregistration_keeps_checks_unless_replace(self):
        self.put("/v1/agent/service/register", {"Name": "web", "ID": "web-1", "Port": 9999})
        self.assertEqual(self.get("/v1/agent/service/web-1")["Port"], 9999)
        checks = self.get("/v1/agent/checks")
        self.assertIn("service:web-1", checks)
        self.assertEqual(checks["service:web-1"]["Status"], "passing")
        # Consul replaces only when the parameter is bare or exactly "true"
        for value in ("1", "false", "True"):
            self.put("/v1/agent/service/register?replace-existing-checks=" + value,
                     {"Name": "web", "ID": "web-1", "Port": 9999})
            self.assertIn("service:web-1", self.get("/v1/agent/checks"), value)
        self.put("/v1/agent/service/register?replace-existing-checks=true",
                 {"Name": "web", "ID": "web-1", "Port": 9999})
        self.assertNotIn("service:web-1", self.get("/v1/agent/checks"))

    # ---- 5 and 6. snake_case keys, TaggedAddresses --------------------------

    def test_snake_case_and_tagged_addresses(self):
        self.put("/v1/agent/service/register", {
            "name": "snake", "id": "snake-1", "port": 7000,
            "enable_tag_override": True,
            "tagged_addresses": {"lan": {"address": "10.1.0.1", "port": 7001},
                                 "wan": {"Address": "198.51.100.1", "Port": 7002}},
            "checks": [{"check_id": "snake-ttl", "name": "snake ttl", "ttl": "30s",
                        "deregister_critical_service_after": "90m",
                        "success_before_passing": 2, "failures_before_critical": 3}]})
        svc = self.get("/v1/agent/service/snake-1")
        self.assertTrue(svc["EnableTagOverride"])
        want = {"lan": {"Address": "10.1.0.1", "Port": 7001},
                "wan": {"Address": "198.51.100.1", "Port": 7002}}
        self.assertEqual(svc["TaggedAddresses"], want)
        self.assertEqual(self.get("/v1/agent/services")["snake-1"]["TaggedAddresses"], want)
        self.assertEqual(self.get("/v1/catalog/service/snake")[0]["ServiceTaggedAddresses"], want)
        self.assertEqual(self.get("/v1/health/service/snake")[0]["Service"]["TaggedAddresses"],
                         want)
        check = self.get("/v1/agent/checks")["snake-ttl"]
        self.assertEqual(check["Name"], "snake ttl")
        d = check["Definition"]
        self.assertEqual(d["DeregisterCriticalServiceAfter"], "1h30m0s")
        self.assertEqual((d["SuccessBeforePassing"], d["FailuresBeforeCritical"]), (2, 3))
        # without TaggedAddresses none are shown (Consul's omitempty)
        self.assertNotIn("TaggedAddresses", self.get("/v1/agent/service/db-1"))
        got = self.get("/v1/agent/services?filter=" + q('TaggedAddresses.lan.Port == 7001'))
        self.assertEqual(set(got), {"snake-1"})
        code, text = self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "snake", "TaggedAddresses": {"lan": "10.0.0.1"}}))
        self.assertEqual(code, 400, text)
        self.assertIn("TaggedAddresses", text)

    # ---- 7. enable=True ------------------------------------------------------

    def test_maintenance_enable_parsebool(self):
        for on, off in (("True", "False"), ("1", "0"), ("t", "f"), ("TRUE", "FALSE")):
            with self.subTest(on=on):
                self.put("/v1/agent/service/maintenance/web-1?enable=%s&reason=x" % on)
                self.assertIn("_service_maintenance:web-1", self.get("/v1/agent/checks"))
                self.put("/v1/agent/service/maintenance/web-1?enable=" + off)
                self.assertNotIn("_service_maintenance:web-1", self.get("/v1/agent/checks"))
        code, text = self.d.request("PUT", "/v1/agent/service/maintenance/web-1?enable=yes")
        self.assertEqual(code, 400, text)

    def test_python_consul_maintenance(self):
        import consul
        c = consul.Consul(host="127.0.0.1", port=self.d.port)
        self.assertTrue(c.agent.service.maintenance("web-1", True, "deploy"))
        self.assertIn("_service_maintenance:web-1", self.get("/v1/agent/checks"))
        self.assertTrue(c.agent.service.maintenance("web-1", False))
        self.assertNotIn("_service_maintenance:web-1", self.get("/v1/agent/checks"))

    # ---- 8. long output is truncated ----------------------------------------

    def test_long_output_truncated(self):
        out = "x" * 10000
        self.put("/v1/agent/check/update/service:web-1",
                 {"Status": "warning", "Output": out})
        check = self.get("/v1/agent/checks")["service:web-1"]
        self.assertEqual(check["Status"], "warning")
        self.assertTrue(check["Output"].startswith("x" * 4096 + " ..."), check["Output"][4090:])
        self.assertIn("captured 4096 of 10000 bytes", check["Output"])
        # (a new status: an output alone waits for check_update_interval)
        self.put("/v1/agent/check/fail/service:web-1?note=" + "y" * 5000)
        check = self.get("/v1/agent/checks")["service:web-1"]
        self.assertTrue(check["Output"].startswith("y" * 4096 + " ..."))

    # ---- HTTP: OPTIONS, Allow on 405, stale with consistent -----------------

    def test_options_allow_and_conflicting_consistency(self):
        code, text, headers = self.d.request_full("OPTIONS", "/v1/agent/services")
        self.assertEqual(code, 200, text)
        self.assertEqual(headers["Allow"], "GET,OPTIONS")
        code, text, headers = self.d.request_full("OPTIONS", "/v1/agent/service/register")
        self.assertEqual((code, headers["Allow"]), (200, "PUT,OPTIONS"))
        code, text, headers = self.d.request_full("DELETE", "/v1/agent/services")
        self.assertEqual(code, 405, text)
        self.assertEqual(headers["Allow"], "GET,OPTIONS")
        code, text, headers = self.d.request_full("POST", "/v1/catalog/service/web")
        self.assertEqual(code, 405, text)
        self.assertIn("GET", headers["Allow"])
        self.assertEqual(self.d.request("OPTIONS", "/v1/no/such")[0], 404)
        code, text = self.d.request("GET", "/v1/health/service/web?stale&consistent")
        self.assertEqual(code, 400, text)
        self.assertIn("conflicting", text)

    # ---- agent: self, version, members, health by name/id; node-services ----

    def test_agent_self_version_members(self):
        import consul
        c = consul.Consul(host="127.0.0.1", port=self.d.port)
        me = c.agent.self()
        self.assertEqual(me["Config"]["NodeName"], "node-a")
        self.assertEqual(me["Config"]["Product"], "registryd")
        raft = me["Stats"]["raft"]
        self.assertEqual(raft["state"], "Leader")
        self.assertEqual(raft["last_contact"], "0")
        self.assertEqual(raft["num_peers"], "0")
        self.assertGreater(int(raft["commit_index"]), 0)
        self.assertGreaterEqual(int(raft["applied_index"]), int(raft["term"]) and 1)
        # every Stats value is a string (Go: map[string]map[string]string)
        self.assertEqual({(s, k) for s, m in me["Stats"].items() for k, v in m.items()
                          if not isinstance(v, str)}, set())
        self.assertEqual(me["Stats"]["health"]["self_preservation"], "false")
        self.assertEqual(me["Member"]["Tags"]["role"], "consul")
        self.assertEqual(me["DebugConfig"]["NodeName"], "node-a")
        self.assertEqual(me["DebugConfig"]["DNSDomain"], "registry.")
        self.assertEqual(me["DebugConfig"]["HTTPAddrs"], [self.d.addr])
        self.assertEqual(me["DebugConfig"]["EnableScriptChecks"], False)
        self.assertEqual(me["Meta"], {"rack": "r1", "env": "prod"})
        members = c.agent.members()
        self.assertEqual([m["Name"] for m in members], ["node-a"])
        self.assertEqual(members[0]["Status"], 1)
        self.assertIn("registryd", self.get("/v1/agent/version")["HumanVersion"])

    def test_agent_health_by_id_and_name(self):
        code, text, h = self.d.request_full("GET", "/v1/agent/health/service/id/web-1")
        self.assertEqual(code, 200, text)
        body = json.loads(text)
        self.assertEqual(body["AggregatedStatus"], "passing")
        self.assertEqual(body["Service"]["ID"], "web-1")
        self.assertEqual([c["CheckID"] for c in body["Checks"]], ["service:web-1"])
        code, text = self.d.request("GET", "/v1/agent/health/service/id/web-2")
        self.assertEqual((code, json.loads(text)["AggregatedStatus"]), (503, "critical"))
        self.put("/v1/agent/check/warn/service:web-2")
        code, text = self.d.request("GET", "/v1/agent/health/service/id/web-2?format=text")
        self.assertEqual((code, text), (429, "warning"))
        code, text = self.d.request("GET", "/v1/agent/health/service/name/web")
        self.assertEqual(code, 429, text)  # the worst of passing and warning
        self.assertEqual(sorted(e["AggregatedStatus"] for e in json.loads(text)),
                         ["passing", "warning"])
        code, text = self.d.request("GET", "/v1/agent/health/service/name/db?format=text")
        self.assertEqual((code, text), (200, "passing"))
        self.put("/v1/agent/service/maintenance/db-1?enable=true")
        code, text = self.d.request("GET", "/v1/agent/health/service/name/db?format=text")
        self.assertEqual((code, text), (503, "maintenance"))
        # Consul's returnTextPlain: an Accept of text/plain asks for text too
        code, text, h = self.d.request_full("GET", "/v1/agent/health/service/id/web-2",
                                            headers={"Accept": "text/plain"})
        self.assertEqual((code, text, h["X-Consul-Reason"]), (429, "warning", "warning"))
        # not found: JSON that decodes as the found answer does, the reason
        # in X-Consul-Reason (agent_endpoint.go AgentHealthServiceByID/ByName)
        code, text, h = self.d.request_full("GET", "/v1/agent/health/service/id/nope")
        self.assertEqual(code, 404)
        self.assertEqual(h["Content-Type"], "application/json")
        self.assertEqual(json.loads(text),
                         {"AggregatedStatus": "critical", "Service": None, "Checks": None})
        self.assertEqual(h["X-Consul-Reason"], "ServiceId nope not found")
        code, text, h = self.d.request_full("GET", "/v1/agent/health/service/name/nope")
        self.assertEqual((code, json.loads(text)), (404, []))
        self.assertEqual(h["X-Consul-Reason"], "ServiceName nope Not Found")
        code, text = self.d.request("GET", "/v1/agent/health/service/name/nope?format=text")
        self.assertEqual((code, text), (404, "ServiceName nope Not Found"))
        # a name that is not UTF-8 is not found either (jansson refused the
        # text: a 500 "out of memory")
        import http.client
        conn = http.client.HTTPConnection(self.d.addr, timeout=10)
        conn.request("GET", "/v1/agent/health/service/id/x%FFy?format=text")
        resp = conn.getresponse()
        self.assertEqual((resp.status, resp.read()), (404, b"ServiceId x\xffy not found"))
        conn.close()

    def test_catalog_node_services(self):
        got = self.get("/v1/catalog/node-services/node-a")
        self.assertEqual(got["Node"]["Node"], "node-a")
        self.assertEqual(got["Node"]["Meta"]["rack"], "r1")
        self.assertEqual(sorted(s["ID"] for s in got["Services"]), ["db-1", "web-1", "web-2"])
        # Consul answers its empty NodeServiceList, not null
        self.assertEqual(self.get("/v1/catalog/node-services/elsewhere"),
                         {"Node": None, "Services": None})

    # ---- catalog register/deregister (the ESM pattern), check endpoints ------

    def test_an_id_on_another_node_is_a_conflict_not_a_takeover(self):
        """Consul keys instances by (node, ID); here an ID is one key. The
        same ID registered on a second node took the first node's instance
        away (200, and it was gone): now a 409 says so and nothing changes."""
        self.addCleanup(self.put, "/v1/catalog/deregister", {"Node": "ext-2"})
        self.put("/v1/catalog/register", {"Node": "ext-node", "Address": "10.1.1.1",
                                          "Service": {"Service": "dup", "ID": "dup-1",
                                                      "Port": 1}})
        for path, body in (
                ("/v1/catalog/register", {"Node": "ext-2", "Address": "10.1.1.2",
                                          "Service": {"Service": "dup", "ID": "dup-1",
                                                      "Port": 2}}),
                ("/v1/agent/service/register", {"Name": "dup", "ID": "dup-1", "Port": 3})):
            code, text = self.d.request("PUT", path, json.dumps(body))
            self.assertEqual(code, 409, text)
            self.assertIn("registered on another node", text)
        rows = self.get("/v1/catalog/service/dup")
        self.assertEqual([(e["Node"], e["ServicePort"]) for e in rows], [("ext-node", 1)])
        self.assertIsNone(self.get("/v1/catalog/node/ext-2"))  # the refused node too
        # on its own node it is re-registered as ever
        self.put("/v1/catalog/register", {"Node": "ext-node", "Address": "10.1.1.1",
                                          "Service": {"Service": "dup", "ID": "dup-1",
                                                      "Port": 4}})
        self.assertEqual([e["ServicePort"] for e in self.get("/v1/catalog/service/dup")], [4])
        # and the agent's own instances are not the catalog's to take
        code, text = self.d.request("PUT", "/v1/catalog/register", json.dumps(
            {"Node": "ext-2", "Address": "10.1.1.2",
             "Service": {"Service": "web", "ID": "web-1", "Port": 9}}))
        self.assertEqual(code, 409, text)
        self.assertEqual(self.get("/v1/agent/service/web-1")["Port"], 8080)

    def test_catalog_register_external_service(self):
        import consul
        c = consul.Consul(host="127.0.0.1", port=self.d.port)
        self.assertTrue(c.catalog.register(
            "ext-node", "192.0.2.10",
            service={"Service": "redis", "ID": "redis1", "Tags": ["primary"], "Port": 6379},
            check={"Node": "ext-node", "CheckID": "service:redis1", "Name": "redis alive",
                   "Status": "passing", "ServiceID": "redis1"}))
        rows = self.get("/v1/catalog/service/redis")
        self.assertEqual(len(rows), 1)
        self.assertEqual((rows[0]["Node"], rows[0]["Address"], rows[0]["ServicePort"]),
                         ("ext-node", "192.0.2.10", 6379))
        entries = self.get("/v1/health/service/redis?passing")
        self.assertEqual([e["Checks"][-1]["CheckID"] for e in entries], ["service:redis1"])
        self.assertIn("ext-node", [n["Node"] for n in self.get("/v1/catalog/nodes")])
        # a node-level check from the ESM: critical takes the node's services down
        self.put("/v1/catalog/register", {
            "Node": "ext-node", "Address": "192.0.2.10", "NodeMeta": {"external-node": "true"},
            "Check": {"CheckID": "externalNodeHealth", "Name": "node alive",
                      "Status": "critical"}})
        self.assertEqual(self.get("/v1/health/service/redis?passing"), [])
        checks = self.get("/v1/health/node/ext-node")
        self.assertIn("externalNodeHealth", [x["CheckID"] for x in checks])
        self.assertEqual(self.get("/v1/catalog/node/ext-node")["Node"]["Meta"],
                         {"external-node": "true"})
        self.assertEqual(len(self.get("/v1/health/checks/redis")), 1)  # the service's own only
        # the checker never probes catalog checks: the status stays as given
        self.assertEqual(self.get("/v1/agent/checks")["service:redis1"]["Status"], "passing")
        self.put("/v1/catalog/register", {
            "Node": "ext-node", "Address": "192.0.2.10",
            "Check": {"CheckID": "externalNodeHealth", "Name": "node alive",
                      "Status": "passing"}})
        self.assertEqual(len(self.get("/v1/health/service/redis?passing")), 1)
        # a check is deregistered only on its own node: naming another (one
        # the caller may write) deleted it wherever it was
        self.put("/v1/catalog/register", {"Node": "other-node", "Address": "192.0.2.11"})
        self.assertTrue(c.catalog.deregister("other-node", check_id="externalNodeHealth"))
        self.assertTrue(c.catalog.deregister("no-such-node", check_id="externalNodeHealth"))
        self.assertIn("externalNodeHealth",
                      [x["CheckID"] for x in self.get("/v1/health/node/ext-node")])
        # deregister: one check, one service, then the whole node
        self.assertTrue(c.catalog.deregister("ext-node", check_id="externalNodeHealth"))
        self.assertNotIn("externalNodeHealth",
                         [x["CheckID"] for x in self.get("/v1/health/node/ext-node")])
        self.assertTrue(c.catalog.deregister("ext-node", service_id="redis1"))
        self.assertEqual(self.get("/v1/catalog/service/redis"), [])
        self.assertIn("ext-node", [n["Node"] for n in self.get("/v1/catalog/nodes")])
        self.assertTrue(c.catalog.deregister("ext-node"))
        self.assertNotIn("ext-node", [n["Node"] for n in self.get("/v1/catalog/nodes")])

    def test_catalog_check_definition_decoded_as_consul(self):
        """A catalog check's Definition is decoded as Consul decodes it: the
        known fields of their types (a wrong one is a 400), durations in
        Go's form, others dropped. Stored as given, a Definition with
        Interval "bogus" or HTTP 1 was served back, and Consul's Go client
        (Prometheus, consul-template, Traefik, Nomad) could not decode that
        service's health."""
        def register(defn, extra=""):
            body = json.dumps({
                "Node": "ext-node", "Address": "192.0.2.10",
                "Service": {"Service": "defn", "ID": "defn1"},
                "Checks": [{"CheckID": "c", "ServiceID": "defn1", "Status": "passing",
                            "Definition": defn}]})
            if extra:  # raw text into the Definition (too deep for json.dumps)
                body = body.replace('"Definition": {', '"Definition": {' + extra + ",", 1)
            return self.d.request("PUT", "/v1/catalog/register", body)
        deep = '"Unknown": ' + '{"x": ' * 1000 + "{}" + "}" * 1000
        for defn, why in (({"Interval": "bogus"}, "Definition.Interval"),
                          ({"HTTP": 1}, "HTTP"),
                          ({"TLSSkipVerify": "yes"}, "Definition.TLSSkipVerify"),
                          ({"Header": {"A": "b"}}, "Definition.Header"),
                          ({"Header": {"A": [1]}}, "Definition.Header"),
                          ("text", "Definition must be an object")):
            with self.subTest(defn=defn):
                code, text = register(defn)
                self.assertEqual(code, 400, text)
                self.assertIn(why, text)
        self.assertEqual(self.get("/v1/catalog/service/defn"), [])
        code, text = register({"http": "http://192.0.2.10/health", "Interval": "1m30s",
                               "Timeout": 5000000000, "Header": {"A": ["b"]},
                               "TLSSkipVerify": True, "Body": "a\r\nb"}, deep)
        self.assertEqual(code, 200, text)
        [entry] = self.get("/v1/health/service/defn")
        [check] = [c for c in entry["Checks"] if c["CheckID"] == "c"]
        self.assertEqual(check["Definition"], {"HTTP": "http://192.0.2.10/health",
                                               "Interval": "1m30s", "Timeout": "5s",
                                               "Header": {"A": ["b"]}, "TLSSkipVerify": True,
                                               "Body": "a\r\nb"})
        self.assertEqual((check["Interval"], check["Timeout"]), ("1m30s", "5s"))

    def test_check_shows_interval_and_timeout(self):
        # Consul's HealthCheck repeats Interval and Timeout from the
        # definition ("" when unset) and has ExposedPort
        self.addCleanup(self.put, "/v1/agent/service/deregister/iv-1")
        self.put("/v1/agent/service/register", {
            "Name": "iv", "ID": "iv-1", "Check": {
                "HTTP": "http://127.0.0.1:1/", "Interval": "15s", "Timeout": "2s"}})
        for c in (self.get("/v1/agent/checks")["service:iv-1"],
                  self.get("/v1/health/checks/iv")[0],
                  self.get("/v1/health/service/iv")[0]["Checks"][-1]):
            self.assertEqual((c["Interval"], c["Timeout"], c["ExposedPort"]), ("15s", "2s", 0))
        ttl = self.get("/v1/agent/checks")["service:web-1"]
        self.assertEqual((ttl["Interval"], ttl["Timeout"]), ("", ""))
        got = self.get("/v1/health/checks/iv?filter=" + urllib.parse.quote('Interval == "15s"'))
        self.assertEqual([c["CheckID"] for c in got], ["service:iv-1"])

    def test_node_update_reaches_its_services(self):
        # found by Prometheus's consul SD: a node registered again with a new
        # address and meta kept the old ones in /v1/health/service and
        # /v1/catalog/service (and in ?node-meta= matching), while
        # /v1/catalog/node showed the new; Consul joins the node's current row
        self.put("/v1/catalog/register", {
            "Node": "ext-node", "Address": "192.0.2.10", "NodeMeta": {"rack": "r1"},
            "TaggedAddresses": {"lan": "192.0.2.10", "wan": "203.0.113.10"},
            "Service": {"ID": "pg-1", "Service": "pg", "Port": 5432}})
        entry = self.get("/v1/health/service/pg")[0]
        self.assertEqual(entry["Node"]["TaggedAddresses"],
                         {"lan": "192.0.2.10", "wan": "203.0.113.10"})
        index = int(self.d.request_full("GET", "/v1/health/service/pg")[2]["X-Consul-Index"])
        self.put("/v1/catalog/register", {
            "Node": "ext-node", "Address": "192.0.2.20", "NodeMeta": {"rack": "r9"}})
        entry = self.get("/v1/health/service/pg")[0]
        self.assertEqual((entry["Node"]["Address"], entry["Node"]["Meta"]),
                         ("192.0.2.20", {"rack": "r9"}))
        # tagged addresses not given again: made from the address, as an agent's
        self.assertEqual(entry["Node"]["TaggedAddresses"]["lan"], "192.0.2.20")
        row = self.get("/v1/catalog/service/pg")[0]
        self.assertEqual((row["Address"], row["NodeMeta"]), ("192.0.2.20", {"rack": "r9"}))
        self.assertEqual(len(self.get("/v1/health/service/pg?node-meta=rack:r9")), 1)
        self.assertEqual(self.get("/v1/health/service/pg?node-meta=rack:r1"), [])
        self.assertEqual(self.get("/v1/catalog/services?node-meta=rack:r9"), {"pg": []})
        # a watch of the service wakes for it
        code, _, h = self.d.request_full("GET", "/v1/health/service/pg?index=%d&wait=1s" % index)
        self.assertGreater(int(h["X-Consul-Index"]), index)
        # DNS answers the new node address (the instance has none of its own)
        out = subprocess.run(["dig", "-p", str(self.d.dns_port), "@127.0.0.1", "+short",
                              "pg.service.registry.", "A"], capture_output=True, text=True,
                             timeout=20).stdout.split()
        self.assertEqual(out, ["192.0.2.20"])
        # the agent's own node: lan/wan with their IPv4 forms, as Consul's agent
        own = self.get("/v1/catalog/node/node-a")["Node"]["TaggedAddresses"]
        self.assertEqual(set(own), {"lan", "lan_ipv4", "wan", "wan_ipv4"})
        # the node's tagged addresses are the node's, not the service's
        self.assertNotIn("NodeTaggedAddresses", self.get("/v1/health/service/pg")[0]["Service"])
        # SkipNodeUpdate: a service added to a known node leaves the node as
        # it is, and takes the node's address and meta (review finding: the
        # node's meta was wiped from every instance there)
        self.put("/v1/catalog/register", {
            "Node": "ext-node", "Address": "192.0.2.99", "SkipNodeUpdate": True,
            "Service": {"ID": "pg-2", "Service": "pg", "Port": 5433}})
        rows = {r["ServiceID"]: r for r in self.get("/v1/catalog/service/pg")}
        for sid in ("pg-1", "pg-2"):
            self.assertEqual((rows[sid]["Address"], rows[sid]["NodeMeta"]),
                             ("192.0.2.20", {"rack": "r9"}), sid)
        self.assertEqual(len(self.get("/v1/catalog/service/pg?node-meta=rack:r9")), 2)
        self.assertEqual(self.get("/v1/catalog/node/ext-node")["Node"]["Address"], "192.0.2.20")

    def test_agent_check_register_and_deregister(self):
        import consul
        c = consul.Consul(host="127.0.0.1", port=self.d.port)
        self.assertTrue(c.agent.check.register("db ttl", check=consul.Check.ttl("30s"),
                                               check_id="db-ttl", service_id="db-1"))
        checks = self.get("/v1/agent/checks")
        self.assertEqual(checks["db-ttl"]["ServiceID"], "db-1")
        self.assertEqual(checks["db-ttl"]["Status"], "critical")
        self.put("/v1/agent/check/pass/db-ttl")  # the checker knows it: a TTL heartbeat works
        self.assertEqual(self.get("/v1/agent/checks")["db-ttl"]["Status"], "passing")
        self.assertEqual(len(self.get("/v1/health/checks/db")), 1)
        self.assertTrue(c.agent.check.deregister("db-ttl"))
        self.assertNotIn("db-ttl", self.get("/v1/agent/checks"))
        self.assertEqual(self.d.request("PUT", "/v1/agent/check/deregister/db-ttl")[0], 404)
        code, text = self.d.request("PUT", "/v1/agent/check/register",
                                    json.dumps({"Name": "x", "TTL": "5s", "ServiceID": "nope"}))
        self.assertEqual((code, text.strip()), (404, 'ServiceID "nope" does not exist'))

    def test_same_registration_again_changes_nothing(self):
        # Consul's ensureServiceTxn/ensureCheckTxn write nothing for what is
        # stored already: a registrator re-registering on a timer must not
        # move the index nor wake every watcher of the service.
        def index(service):
            code, _, h = self.d.request_full("GET", "/v1/health/service/" + service)
            self.assertEqual(code, 200)
            return int(h["X-Consul-Index"])

        # (TTL checks only: a probe's first result is a write of its own)
        agent = {"Name": "api", "ID": "api-1", "Port": 9000, "Tags": ["a"],
                 "Meta": {"k": "v"}, "Check": {"TTL": "30s"},
                 "Checks": [{"Name": "second", "TTL": "60s", "Notes": "n"}]}
        catalog = {"Node": "ext-node", "Address": "10.0.0.9", "NodeMeta": {"r": "1"},
                   "Service": {"ID": "pg-1", "Service": "pg", "Port": 5432},
                   "Check": {"CheckID": "pg-alive", "Name": "alive", "ServiceID": "pg-1",
                             "Status": "passing"}}
        for path, body, service in (("/v1/agent/service/register", agent, "api"),
                                    ("/v1/agent/service/register?replace-existing-checks",
                                     agent, "api"),
                                    ("/v1/catalog/register", catalog, "pg")):
            with self.subTest(path=path):
                self.put(path, body)
                before = index(service)
                t0 = time.monotonic()
                # a query parked at the index: the same registration again
                # must not wake it (it answers when its 1 s wait ends)
                parked = subprocess.Popen(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     "http://127.0.0.1:%d/v1/health/service/%s?index=%d&wait=1s"
                     % (self.d.port, service, before)], stdout=subprocess.PIPE)
                time.sleep(0.2)
                self.put(path, body)
                self.assertEqual(parked.communicate(timeout=30)[0], b"200")
                self.assertGreaterEqual(time.monotonic() - t0, 0.9)
                self.assertEqual(index(service), before)
        # a change is still a change: the index moves, the checks stay
        self.put("/v1/agent/service/register", dict(agent, Port=9001))
        self.assertGreater(index("api"), before)
        self.assertEqual(self.get("/v1/agent/service/api-1")["Port"], 9001)
        self.assertIn("service:api-1:2", self.get("/v1/agent/checks"))
        before = index("pg")
        self.put("/v1/catalog/register", dict(catalog, NodeMeta={"r": "2"}))
        self.assertGreater(index("pg"), before)
        before = index("pg")
        self.put("/v1/catalog/register",
                 dict(catalog, Check=dict(catalog["Check"], Status="critical")))
        self.assertGreater(index("pg"), before)
        self.assertEqual(self.get("/v1/health/checks/pg")[0]["Status"], "critical")

    def test_catalog_check_of_a_service_already_there(self):
        # consul-esm and external health updaters send a service's check
        # without the service (ensureCheckTxn takes it when the service is
        # on the node); it was a 400
        ext = {"Node": "ext-node", "Address": "10.0.0.9",
               "Service": {"ID": "pg-1", "Service": "pg", "Port": 5432, "Tags": ["primary"]}}
        self.put("/v1/catalog/register", ext)
        for status in ("critical", "passing"):
            self.put("/v1/catalog/register", {
                "Node": "ext-node", "Address": "10.0.0.9",
                "Check": {"CheckID": "pg-alive", "Name": "alive", "ServiceID": "pg-1",
                          "Status": status, "Output": "probe says " + status}})
            got = self.get("/v1/health/service/pg")
            self.assertEqual(len(got), 1)
            self.assertEqual(got[0]["Service"]["Tags"], ["primary"])  # the service as it was
            mine = [c for c in got[0]["Checks"] if c["CheckID"] == "pg-alive"]
            self.assertEqual([(c["Status"], c["ServiceID"], c["ServiceName"]) for c in mine],
                             [(status, "pg-1", "pg")])
        # a service on another node, or none, is still refused
        text = self.put("/v1/catalog/register", {
            "Node": "other-node", "Address": "10.0.0.8",
            "Check": {"CheckID": "x", "Name": "x", "ServiceID": "pg-1"}}, status=400)
        self.assertIn("Missing service registration", text)
        self.assertEqual(self.get("/v1/catalog/node/other-node"), None)

    def test_ttl_output_alone_waits_for_the_update_interval(self):
        # Consul's agent writes a TTL check's new output with an unchanged
        # status at most once per check_update_interval: a heartbeat that
        # carries a timestamp woke every watcher of its service each time
        d = Registryd(extra_args=["--check-update-interval", "1s"]).start()
        self.addCleanup(d.stop)

        def put(path):
            self.assertEqual(d.request("PUT", path)[0], 200, path)

        def state():
            code, text, h = d.request_full("GET", "/v1/health/checks/hb")
            c = json.loads(text)[0]
            return c["Status"], c["Output"], int(h["X-Consul-Index"])

        self.assertEqual(d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "hb", "ID": "hb-1", "Check": {"TTL": "60s"}}))[0], 200)
        put("/v1/agent/check/pass/service:hb-1?note=t1")  # a new status: at once
        status, output, index = state()
        self.assertEqual((status, output), ("passing", "t1"))
        put("/v1/agent/check/pass/service:hb-1?note=t2")  # output alone: held
        self.assertEqual(state(), ("passing", "t1", index))
        # with no heartbeat after it, the held output is written once the
        # interval is over (the checker's tick: within a second more)
        deadline = time.monotonic() + 5
        while state()[1] != "t2" and time.monotonic() < deadline:
            time.sleep(0.1)
        status, output, later = state()
        self.assertEqual((status, output), ("passing", "t2"))
        self.assertGreater(later, index)
        time.sleep(1.2)
        put("/v1/agent/check/pass/service:hb-1?note=t3")  # the interval is over
        status, output, index = state()
        self.assertEqual((status, output), ("passing", "t3"))
        put("/v1/agent/check/warn/service:hb-1?note=t4")  # a new status: at once
        self.assertEqual(state()[:2], ("warning", "t4"))
        # an output held back, then the stored one again: nothing is written
        # when the interval ends (the held one is no longer the newest)
        put("/v1/agent/check/warn/service:hb-1?note=t5")
        put("/v1/agent/check/warn/service:hb-1?note=t4")
        time.sleep(2.5)
        self.assertEqual(state()[:2], ("warning", "t4"))

    def test_node_check_renders_without_a_store_error(self):
        # a node's own check has no ServiceID: the render looked up the
        # instance "" and LMDB refused the empty key, one error line each
        self.addCleanup(self.put, "/v1/agent/check/deregister/node-beat")
        self.put("/v1/agent/check/register", {"Name": "node-beat", "TTL": "30s"})
        for path in ("/v1/health/state/critical", "/v1/health/state/any", "/v1/agent/checks"):
            self.assertIn("node-beat", json.dumps(self.get(path)), path)
        self.assertNotIn("MDB_BAD_VALSIZE", self.d.log())

    def test_node_check_has_no_service_tags(self):
        # in /v1/health/service/NAME each entry's node checks carried that
        # entry's service tags; Consul's have none (ServiceTags: [])
        self.addCleanup(self.put, "/v1/agent/check/deregister/node-tagless")
        self.addCleanup(self.put, "/v1/agent/service/deregister/tagged-1")
        self.put("/v1/agent/service/register", {"Name": "tagged", "ID": "tagged-1",
                                                "Tags": ["v1", "x"],
                                                "Check": {"TTL": "30s", "CheckID": "tagged-ttl"}})
        self.put("/v1/agent/check/register", {"Name": "node-tagless", "TTL": "30s"})
        for path in ("/v1/health/service/tagged", "/v1/health/service/tagged?passing=false"):
            checks = {c["CheckID"]: c for c in self.get(path)[0]["Checks"]}
            self.assertEqual(checks["node-tagless"]["ServiceTags"], [], path)
            self.assertEqual(checks["serfHealth"]["ServiceTags"], [], path)
            self.assertEqual(checks["tagged-ttl"]["ServiceTags"], ["v1", "x"], path)
        checks = {c["CheckID"]: c for c in self.get("/v1/health/state/any")}
        self.assertEqual(checks["node-tagless"]["ServiceTags"], [])

    def test_server_fields_in_consuls_names(self):
        # the raft configuration's protocol is Consul's ProtocolVersion (list-peers'
        # RaftProtocol column reads it); agent/self's Member is a members entry
        conf = self.get("/v1/operator/raft/configuration")
        self.assertEqual(conf["Servers"][0]["ProtocolVersion"], "3")
        member = self.get("/v1/agent/self")["Member"]
        listed = self.get("/v1/agent/members")[0]
        self.assertEqual(sorted(member), sorted(listed))
        self.assertEqual(member["DelegateCur"], listed["DelegateCur"])

    def test_kv_reads_absent_and_block(self):
        # registryd keeps no key-value store: a key reads as Consul's missing
        # one, a 404 that is a blocking query (a KV watch asked again at once
        # on a plain 404: thousands of requests a second per watcher)
        import consul
        c = consul.Consul(host="127.0.0.1", port=self.d.port)
        index, value = c.kv.get("fabio/config")
        self.assertIsNone(value)
        self.assertGreater(int(index), 0)
        t0 = time.monotonic()
        code, text, h = self.d.request_full(
            "GET", "/v1/kv/fabio/config?recurse&index=%s&wait=1s" % index)
        took = time.monotonic() - t0
        self.assertEqual(code, 404, text)
        self.assertEqual(h["X-Consul-Index"], str(index))
        self.assertGreaterEqual(took, 0.9)
        # a change elsewhere wakes it with the new index, still absent
        t = threading.Timer(0.3, lambda: self.put("/v1/agent/service/register",
                                                   {"Name": "kvwake", "ID": "kvwake-1"}))
        self.addCleanup(self.put, "/v1/agent/service/deregister/kvwake-1")
        t.start()
        code, _, h = self.d.request_full("GET", "/v1/kv/x?index=%s&wait=10s" % index)
        t.join()
        self.assertEqual(code, 404)
        self.assertGreater(int(h["X-Consul-Index"]), int(index))
        # no coordinates: none for the nodes, this datacenter with none
        self.assertEqual(self.get("/v1/coordinate/nodes"), [])
        self.assertEqual(self.get("/v1/coordinate/datacenters"),
                         [{"Datacenter": "dc1", "AreaID": "wan", "Coordinates": []}])
        self.assertEqual(self.d.request("GET", "/v1/coordinate/node/node-a")[0], 404)

    def test_ttl_update_errors_in_consuls_words(self):
        # Clients tell "register again" from these: Spring Cloud Consul
        # re-registers on a 404 or a 500, go-kit and others match the text.
        self.put("/v1/agent/check/register", {"Name": "db port", "CheckID": "db-tcp",
                                               "ServiceID": "db-1", "TCP": "127.0.0.1:1",
                                               "Interval": "30s"})
        for path, body in (("/v1/agent/check/pass/db-tcp", None),
                           ("/v1/agent/check/update/db-tcp", '{"Status": "passing"}')):
            code, text = self.d.request("PUT", path, body)
            self.assertEqual((code, text.strip()),
                             (500, 'CheckID "db-tcp" does not have associated TTL'), path)
        for path in ("/v1/agent/check/fail/gone", "/v1/agent/check/deregister/gone"):
            code, text = self.d.request("PUT", path)
            self.assertEqual((code, text.strip()),
                             (404, 'Unknown check ID "gone". Ensure that the check ID is '
                                   'passed, not the check name.'), path)
        code, text = self.d.request("PUT", "/v1/agent/service/deregister/web")
        self.assertEqual((code, text.strip()),
                         (404, 'Unknown service ID "web". Ensure that the service ID is '
                               'passed, not the service name.'))

    def test_node_maintenance(self):
        import consul
        c = consul.Consul(host="127.0.0.1", port=self.d.port)
        self.assertTrue(c.agent.maintenance("true", "kernel upgrade"))
        m = self.get("/v1/agent/checks")["_node_maintenance"]
        self.assertEqual((m["Status"], m["Notes"]), ("critical", "kernel upgrade"))
        self.assertEqual(self.get("/v1/health/service/web?passing"), [])
        from test_dns import dig, status
        self.assertEqual(status(dig(self.d.dns_port, "web.service.registry.")), "NXDOMAIN")
        self.assertTrue(c.agent.maintenance("false"))
        self.assertNotIn("_node_maintenance", self.get("/v1/agent/checks"))
        self.assertEqual(len(self.get("/v1/health/service/web?passing")), 1)

    # ---- hash-based blocking on /v1/agent/service/:id ------------------------

    def test_agent_service_content_hash_blocking(self):
        import threading
        import time
        code, text, headers = self.d.request_full("GET", "/v1/agent/service/web-1")
        self.assertEqual(code, 200, text)
        body = json.loads(text)
        h = body["ContentHash"]
        self.assertRegex(h, "^[0-9a-f]{16}$")
        self.assertEqual(headers["X-Consul-ContentHash"], h)
        # a check status change is not the service's content: same hash
        self.put("/v1/agent/check/fail/service:web-1")
        self.assertEqual(self.get("/v1/agent/service/web-1")["ContentHash"], h)
        t0 = time.monotonic()
        code, text, headers = self.d.request_full(
            "GET", "/v1/agent/service/web-1?hash=%s&wait=400ms" % h)
        self.assertGreaterEqual(time.monotonic() - t0, 0.35)  # blocked until wait passed
        self.assertEqual((code, json.loads(text)["ContentHash"]), (200, h))
        # a change to the service wakes it with the new hash
        timer = threading.Timer(0.3, lambda: self.put("/v1/agent/service/register", {
            "Name": "web", "ID": "web-1", "Address": "10.0.0.5", "Port": 8090,
            "Tags": ["v1", "blue"], "Meta": {"zone": "a", "version": "1.2"}}))
        timer.start()
        t0 = time.monotonic()
        code, text, headers = self.d.request_full(
            "GET", "/v1/agent/service/web-1?hash=%s&wait=10s" % h)
        timer.join()
        elapsed = time.monotonic() - t0
        self.assertEqual(code, 200, text)
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 5)
        self.assertEqual(json.loads(text)["Port"], 8090)
        self.assertNotEqual(headers["X-Consul-ContentHash"], h)
        self.assertEqual(self.d.request("GET", "/v1/agent/service/nope?hash=x")[0], 404)

    # ---- check kinds: UDP ------------------------------------------------------

    def wait_status(self, check_id, want, timeout=10, output=""):
        """The check once it has status `want` and output containing `output`
        (a probe's, not the initial empty one)."""
        import time
        deadline, got = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            got = self.get("/v1/agent/checks").get(check_id, {})
            if got.get("Status") == want and got.get("Output") and output in got["Output"]:
                return got
            time.sleep(0.05)
        self.fail("%s is %s, wanted %s with %r" % (check_id, got, want, output))

    def test_udp_checks(self):
        import socket
        import threading
        from harness import free_port
        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        echo.bind(("127.0.0.1", 0))
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        stop = threading.Event()

        def serve():
            echo.settimeout(0.1)
            while not stop.is_set():
                try:
                    data, peer = echo.recvfrom(512)
                    echo.sendto(data, peer)
                except OSError:
                    pass
        t = threading.Thread(target=serve)
        t.start()
        try:
            closed = free_port()
            for sid, port in (("udp-echo", echo.getsockname()[1]),
                              ("udp-silent", silent.getsockname()[1]), ("udp-closed", closed)):
                self.put("/v1/agent/service/register", {
                    "Name": "udp", "ID": sid, "Port": port,
                    "Check": {"UDP": "127.0.0.1:%d" % port, "Interval": "200ms",
                              "Timeout": "150ms"}})
            c = self.wait_status("service:udp-echo", "passing")
            self.assertEqual(c["Type"], "udp")
            self.assertIn("Success", c["Output"])
            self.wait_status("service:udp-silent", "passing")  # no answer is no error
            self.wait_status("service:udp-closed", "critical", output="refused")
        finally:
            stop.set()
            t.join()
            echo.close()
            silent.close()

    # ---- check kinds: GRPC and H2PING against a real gRPC server --------------

    def test_grpc_and_h2ping_checks(self):
        import os
        import subprocess
        import tempfile
        from concurrent import futures
        import grpc
        statuses = {"": b"\x08\x01", "web": b"\x08\x01", "sick": b"\x08\x02"}

        def check(request, context):  # HealthCheckRequest {1: service} -> {1: status}
            service = request[2:].decode() if request[:1] == b"\x0a" else ""
            if service not in statuses:
                context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
            return statuses[service]
        handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(check)})
        tmp = tempfile.mkdtemp(prefix="registryd-grpc-")
        key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        server.add_generic_rpc_handlers((handler,))
        plain = server.add_insecure_port("127.0.0.1:0")
        with open(key, "rb") as k, open(cert, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        tls = server.add_secure_port("127.0.0.1:0", creds)
        server.start()
        try:
            checks = {
                "g-plain": {"GRPC": "127.0.0.1:%d" % plain},
                "g-web": {"GRPC": "127.0.0.1:%d/web" % plain},
                "g-sick": {"GRPC": "127.0.0.1:%d/sick" % plain},
                "g-unknown": {"GRPC": "127.0.0.1:%d/nope" % plain},
                "g-tls": {"GRPC": "127.0.0.1:%d/web" % tls, "GRPCUseTLS": True,
                          "TLSSkipVerify": True},
                "g-tls-verify": {"GRPC": "127.0.0.1:%d" % tls, "GRPCUseTLS": True},
                "h-plain": {"H2PING": "127.0.0.1:%d" % plain, "H2PingUseTLS": False},
                "h-tls": {"H2PING": "127.0.0.1:%d" % tls, "TLSSkipVerify": True},
                "h-closed": {"H2PING": "127.0.0.1:1", "H2PingUseTLS": False},
            }
            for sid, c in checks.items():
                c.update({"Interval": "300ms", "Timeout": "250ms"})
                self.put("/v1/agent/service/register", {"Name": "grpc", "ID": sid, "Check": c})
            self.assertEqual(self.get("/v1/agent/checks")["service:g-plain"]["Type"], "grpc")
            for sid in ("g-plain", "g-web", "g-tls"):
                self.wait_status("service:" + sid, "passing", output="success")
            self.wait_status("service:g-sick", "critical", output="NOT_SERVING")
            self.wait_status("service:g-unknown", "critical", output="code = 5")
            self.wait_status("service:g-tls-verify", "critical", output="certificate")
            for sid in ("h-plain", "h-tls"):
                self.wait_status("service:" + sid, "passing", output="ping was successful")
            self.wait_status("service:h-closed", "critical", output="refused")
        finally:
            server.stop(0)
            for f in (key, cert):
                os.unlink(f)
            os.rmdir(tmp)

    # ---- check kinds: alias ------------------------------------------------------

    def test_alias_checks(self):
        self.put("/v1/agent/service/register", {
            "Name": "backend", "ID": "backend-1", "Check": {"TTL": "60s"}})
        self.put("/v1/agent/service/register", {
            "Name": "frontend", "ID": "frontend-1",
            "Check": {"Name": "backend alive", "AliasService": "backend-1"}})
        c = self.get("/v1/agent/checks")["service:frontend-1"]
        self.assertEqual(c["Type"], "alias")
        self.wait_status("service:frontend-1", "critical", output="backend-1")
        self.put("/v1/agent/check/warn/service:backend-1")
        self.wait_status("service:frontend-1", "warning", output="backend-1")
        self.put("/v1/agent/check/pass/service:backend-1")
        self.wait_status("service:frontend-1", "passing", output="passing")
        self.put("/v1/agent/service/deregister/backend-1")
        self.wait_status("service:frontend-1", "critical", output="could not be found")
        # AliasNode: the node's own checks (read from the node's index),
        # not another node's, nor a service's on that node (the nodes go
        # after: the other tests of this server list its nodes)
        for node in ("db-node", "other-node"):
            self.addCleanup(self.put, "/v1/catalog/deregister", {"Node": node})
        self.addCleanup(self.put, "/v1/agent/service/deregister/dbwatch-1")
        self.put("/v1/catalog/register", {
            "Node": "db-node", "Address": "10.1.1.1",
            "Check": {"CheckID": "db-alive", "Name": "alive", "Status": "critical"}})
        self.put("/v1/catalog/register", {
            "Node": "other-node", "Address": "10.1.1.2",
            "Check": {"CheckID": "other-alive", "Name": "alive", "Status": "passing"}})
        self.put("/v1/agent/service/register", {
            "Name": "dbwatch", "ID": "dbwatch-1",
            "Check": {"Name": "db node", "AliasNode": "db-node"}})
        self.wait_status("service:dbwatch-1", "critical", output="db-node")
        self.put("/v1/catalog/register", {
            "Node": "db-node", "Address": "10.1.1.1",
            "Service": {"Service": "db", "ID": "db-remote-1"},
            "Check": {"CheckID": "db-svc", "Name": "svc", "Status": "critical",
                      "ServiceID": "db-remote-1"}})
        self.put("/v1/catalog/register", {
            "Node": "db-node", "Address": "10.1.1.1",
            "Check": {"CheckID": "db-alive", "Name": "alive", "Status": "passing"}})
        self.wait_status("service:dbwatch-1", "passing", output="passing")
        self.put("/v1/catalog/register", {
            "Node": "other-node", "Address": "10.1.1.2",
            "Check": {"CheckID": "other-alive", "Name": "alive", "Status": "critical"}})
        time.sleep(1.5)
        self.wait_status("service:dbwatch-1", "passing", output="passing")


    # ---- found by a real client (the npm consul package) ---------------

    def test_empty_index_and_wait_are_absent(self):
        # Consul's parseWait skips empty values: a watch loop's first call
        # sends index= before it has one
        for path in ("/v1/health/service/web?index=", "/v1/health/service/web?wait=",
                     "/v1/health/service/web?index=&wait="):
            got = self.get(path)
            self.assertEqual(len(got), 2, path)
        self.get("/v1/health/service/web?index=x", status=400)
        self.get("/v1/health/service/web?wait=x", status=400)
        # a wait under a millisecond is not 0 (the 5 min default): it ends
        # at once, as Consul's
        import time
        index = self.d.request_full("GET", "/v1/health/service/web")[2]["X-Consul-Index"]
        t0 = time.monotonic()
        self.get("/v1/health/service/web?index=%s&wait=1us" % index)
        self.assertLess(time.monotonic() - t0, 2)

    def test_consul_meta_headers(self):
        # X-Consul-Default-ACL-Policy on every answer (http.go wrap)
        for path in ("/v1/catalog/services", "/v1/agent/self", "/v1/status/leader", "/v1/nope"):
            _, _, h = self.d.request_full("GET", path)
            self.assertEqual(h["X-Consul-Default-ACL-Policy"], "allow", path)
        # X-Consul-Effective-Consistency on catalog and health reads (setMeta)
        for query, want in (("", "leader"), ("?stale", "stale"), ("?consistent", "consistent"),
                            ("?max_stale=5s", "stale"), ("?max_stale=0s", "leader")):
            for path in ("/v1/catalog/services", "/v1/health/service/web"):
                code, _, h = self.d.request_full("GET", path + query)
                self.assertEqual((code, h["X-Consul-Effective-Consistency"]), (200, want), path)
        _, _, h = self.d.request_full("GET", "/v1/agent/services")
        self.assertIsNone(h["X-Consul-Effective-Consistency"])
        # parseConsistency: a bad max_stale is a 400, a stale one with
        # ?consistent conflicts
        for query, why in (("?max_stale=bogus", 'Invalid max_stale value "bogus"'),
                           ("?max_stale=1s&consistent", "conflicting semantics")):
            code, text = self.d.request("GET", "/v1/catalog/services" + query)
            self.assertEqual(code, 400, query)
            self.assertIn(why, text)
        # an answer without a body has no type (it said text/html)
        code, text, h = self.d.request_full("PUT", "/v1/agent/check/pass/service:web-1")
        self.assertEqual((code, text, h["Content-Type"]), (200, "", None))
        _, _, h = self.d.request_full("PUT", "/v1/catalog/register", json.dumps(
            {"Node": "ext-node", "Address": "10.1.1.1"}))
        self.assertEqual(h["Content-Type"], "application/json")

    def test_agent_listings_do_not_block(self):
        # Consul's AgentServices/AgentChecks ignore ?index=, and AgentService
        # blocks on ?hash= only: a Go client reusing its QueryOptions waited
        # here for the whole wait
        for path in ("/v1/agent/services", "/v1/agent/checks", "/v1/agent/service/web-1"):
            t0 = time.monotonic()
            code, _ = self.d.request("GET", path + "?index=999999&wait=5s")
            self.assertEqual(code, 200)
            self.assertLess(time.monotonic() - t0, 2.5, path)

    def test_catalog_writes_answer_true(self):
        self.addCleanup(self.put, "/v1/catalog/deregister", {"Node": "ext-node"})
        self.assertEqual(self.put("/v1/catalog/register",
                                  {"Node": "ext-node", "Address": "10.9.9.9"}), "true")
        self.assertEqual(self.put("/v1/catalog/deregister", {"Node": "ext-node"}), "true")
        self.assertEqual(self.put("/v1/agent/service/register", {"Name": "db", "ID": "db-1"}), "")

    def test_refused_as_consul_refuses(self):
        for body, why in (
                ({"Name": "x", "Address": "0.0.0.0"}, "Invalid service address"),
                ({"Name": "x", "Address": "::"}, "Invalid service address"),
                ({"Name": "x", "Check": {"TTL": "10s", "Interval": "5s"}},
                 "Interval and TTL cannot both be specified"),
                ({"Name": "x", "Meta": {"consul-version": "1"}}, "reserved"),
                ({"Name": "x", "Check": {"TTL": "9s", "FailuresBeforeCritical": 2,
                                         "FailuresBeforeWarning": 3}},
                 "FailuresBeforeWarning can't be higher than FailuresBeforeCritical"),
                # not Consul's rules, this server's: a path segment cannot
                # carry a slash, and a node's own checks are filed under
                # "_node:NAME" (a service of that ID took them for its own,
                # and its deregistration deleted them)
                ({"Name": "x", "ID": "a/b"}, "slash"),
                ({"Name": "x", "ID": "tab\there"}, "control character"),
                ({"Name": "x/y"}, "slash"),
                ({"Name": "x", "ID": "_node:node-a"}, "reserved")):
            text = self.put("/v1/agent/service/register", body, status=400)
            self.assertIn(why, text, body)
        self.assertNotIn("x", self.get("/v1/agent/services"))
        text = self.put("/v1/catalog/register", {
            "Node": "ext-node", "Address": "10.1.1.1",
            "Service": {"Service": "x", "ID": "_node:ext-node"}}, status=400)
        self.assertIn("reserved", text)


    def test_accepted_as_consul_accepts(self):
        self.addCleanup(self.put, "/v1/agent/service/deregister/acc-1")
        self.addCleanup(self.put, "/v1/agent/service/deregister/acc-2")
        # an empty Check is no check (CheckType.Empty)
        self.put("/v1/agent/service/register", {"Name": "acc", "ID": "acc-1", "Check": {}})
        self.assertEqual([c for c in self.get("/v1/agent/checks").values()
                          if c["ServiceID"] == "acc-1"], [])
        # a TTL as a number is nanoseconds (Go's Duration)
        self.put("/v1/agent/service/register", {"Name": "acc", "ID": "acc-2",
                                                "Check": {"TTL": 10000000000}})
        c = self.get("/v1/agent/checks")["service:acc-2"]
        self.assertEqual(c["Type"], "ttl")
        self.assertEqual(c["Definition"]["TTL"], "10s")
        # a numeric TTL of 0 and an empty one are no TTL (an HTTP check's)
        self.addCleanup(self.put, "/v1/agent/service/deregister/acc-3")
        for ttl in (0, ""):
            self.put("/v1/agent/service/register", {
                "Name": "acc", "ID": "acc-3", "Check": {
                    "HTTP": "http://127.0.0.1:1/", "Interval": "10s", "TTL": ttl}})
            self.assertEqual(self.get("/v1/agent/checks")["service:acc-3"]["Type"], "http")
        # "" is an unset CheckID, ID, Name or Status (Go's zero value, what
        # Java and .NET serializers send for a field left alone)
        self.addCleanup(self.put, "/v1/agent/service/deregister/acc-4")
        self.put("/v1/agent/service/register", {
            "Name": "acc", "ID": "acc-4",
            "Check": {"CheckID": "", "ID": "", "Name": "", "Status": "", "TTL": "10s"}})
        c = self.get("/v1/agent/checks")["service:acc-4"]
        self.assertEqual((c["Name"], c["Status"]), ("Service 'acc' check", "critical"))
        self.addCleanup(self.put, "/v1/agent/check/deregister/acc%20beat")
        self.put("/v1/agent/check/register", {"Name": "acc beat", "ID": "", "TTL": "10s",
                                              "Status": ""})
        self.assertEqual(self.get("/v1/agent/checks")["acc beat"]["Status"], "critical")
        self.put("/v1/catalog/register", {
            "Node": "ext-node", "Address": "10.1.1.1",
            "Check": {"CheckID": "", "Name": "ext alive", "Status": ""}})
        c = self.get("/v1/health/node/ext-node")
        self.assertIn(("ext alive", "critical"), [(x["CheckID"], x["Status"]) for x in c])
        # names and IDs are any text (Consul warns of names DNS cannot
        # carry, no more), "" is a tag, and a Timeout past the Interval is
        # held to it (these were 400s: the instance was never registered)
        odd = "web@host 2+x=#~%"
        self.addCleanup(self.put, "/v1/agent/service/deregister/" + urllib.parse.quote(odd, safe=""))
        self.put("/v1/agent/service/register", {
            "Name": "my service", "ID": odd, "Tags": [""],
            "Check": {"HTTP": "http://127.0.0.1:1/", "Interval": "5s", "Timeout": "6s"}})
        svc = self.get("/v1/agent/service/" + urllib.parse.quote(odd, safe=""))
        self.assertEqual((svc["ID"], svc["Service"], svc["Tags"]), (odd, "my service", [""]))
        self.assertEqual(self.get("/v1/agent/checks")["service:" + odd]["Definition"]["Timeout"],
                         "5s")
        got = self.get("/v1/health/service/" + urllib.parse.quote("my service", safe=""))
        self.assertEqual([e["Service"]["ID"] for e in got], [odd])
        self.assertEqual(self.get("/v1/catalog/services")["my service"], [""])
        self.addCleanup(self.put, "/v1/catalog/deregister", {"Node": "ext node@1"})
        self.put("/v1/catalog/register", {"Node": "ext node@1", "Address": "10.1.1.2",
                                          "Check": {"CheckID": "probe #1", "Status": "passing"}})
        self.assertEqual([c["CheckID"] for c in self.get(
            "/v1/health/node/" + urllib.parse.quote("ext node@1", safe=""))
            if c["CheckID"] != "serfHealth"], ["probe #1"])
        # such a name is one quoted value in the log, not fields of its own
        sid = 'inj level=error msg="forged'
        self.addCleanup(self.put, "/v1/agent/service/deregister/" + urllib.parse.quote(sid, safe=""))
        self.put("/v1/agent/service/register", {"Name": "inj", "ID": sid,  # expires: logged
                                                "Check": {"TTL": "1s", "Status": "passing"}})
        deadline = time.monotonic() + 10
        want = 'service="inj level=error msg=\\"forged"'
        while want not in self.d.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn(want, self.d.log())
        # Weights given: what is left out is Go's zero (absent: {1, 1})
        self.put("/v1/agent/service/register", {"Name": "acc", "ID": "acc-2",
                                                "Weights": {"Passing": 5}})
        self.assertEqual(self.get("/v1/agent/services")["acc-2"]["Weights"],
                         {"Passing": 5, "Warning": 0})


    def test_renamed_instance_renames_its_kept_checks(self):
        self.addCleanup(self.put, "/v1/agent/service/deregister/ren-1")
        self.put("/v1/agent/service/register", {"Name": "ra", "ID": "ren-1",
                                                "Check": {"TTL": "60s"}})
        self.put("/v1/agent/service/register", {"Name": "rb", "ID": "ren-1"})  # keeps the check
        got = self.get("/v1/health/checks/rb")
        self.assertEqual([(c["CheckID"], c["ServiceName"]) for c in got],
                         [("service:ren-1", "rb")])
        self.assertEqual(self.get("/v1/health/checks/ra"), [])
        self.assertEqual(self.get("/v1/agent/checks")["service:ren-1"]["ServiceName"], "rb")

    def test_namespace_and_partition_refused_as_consul_ce(self):
        # Consul CE answers 400 to a namespace or partition rather than serve
        # the default one's data under another's name
        for path, headers, why in (
                ("/v1/health/service/web?ns=team-a", {}, 'query parameter: "ns"'),
                ("/v1/catalog/services?partition=p1", {}, 'query parameter: "partition"'),
                ("/v1/catalog/services", {"X-Consul-Namespace": "team-a"},
                 'header: "X-Consul-Namespace"'),
                ("/v1/agent/services", {"X-Consul-Partition": "p1"},
                 'header: "X-Consul-Partition"')):
            code, text = self.d.request("GET", path, headers=headers)
            self.assertEqual(code, 400, path)
            self.assertIn(why, text)
            self.assertIn("Consul Enterprise feature", text)
        code, text = self.d.request("PUT", "/v1/agent/service/register?ns=team-a",
                                    json.dumps({"Name": "nsx"}))
        self.assertEqual(code, 400)
        self.assertNotIn("nsx", self.get("/v1/agent/services"))
        # the one scope there is may be named; empty is absent
        self.assertEqual(len(self.get("/v1/health/service/web?ns=default&partition=")), 2)
        code, _ = self.d.request("GET", "/v1/catalog/services",
                                 headers={"X-Consul-Namespace": "default"})
        self.assertEqual(code, 200)
        # in a body too (Consul CE's decoder knows no such field): they were
        # taken, and the instance served from the default namespace
        for path, body in (
                ("/v1/agent/service/register", {"Name": "nsb", "Namespace": "team-a"}),
                ("/v1/agent/service/register", {"Name": "nsb", "Partition": "p1"}),
                ("/v1/agent/service/register", {"Name": "nsb",
                                                "Check": {"TTL": "9s", "Namespace": "t"}}),
                ("/v1/agent/check/register", {"Name": "nsc", "TTL": "9s", "Namespace": "t"}),
                ("/v1/catalog/register", {"Node": "ext-node", "Address": "10.1.1.1",
                                          "Namespace": "team-a"}),
                ("/v1/catalog/register", {"Node": "ext-node", "Address": "10.1.1.1",
                                          "Service": {"Service": "nsb", "Namespace": "t"}}),
                ("/v1/catalog/register", {"Node": "ext-node", "Address": "10.1.1.1",
                                          "Check": {"CheckID": "nsc", "Partition": "p"}})):
            text = self.put(path, body, status=400)
            self.assertIn("Consul Enterprise feature", text)
        self.assertNotIn("nsb", self.get("/v1/catalog/services"))
        self.assertNotIn("nsc", self.get("/v1/agent/checks"))
        self.assertEqual(self.get("/v1/catalog/node/ext-node"), None)
        # the default one, or none named, is the one there is
        self.addCleanup(self.put, "/v1/agent/service/deregister/nsb")
        self.put("/v1/agent/service/register", {"Name": "nsb", "Namespace": "default",
                                                "Partition": ""})


class PrettyTest(unittest.TestCase):
    """?pretty, as Consul's marshalJSON: the JSON indented by four spaces
    and a newline at the end, whatever its value; the same document. It
    was ignored (the docs' own `curl .../v1/catalog/nodes?pretty`)."""

    def test_pretty(self):
        d = Registryd().start()
        try:
            status, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "web", "ID": "web-1", "Tags": ["a", "b"], "Meta": {"k": "v"}}))
            self.assertEqual(status, 200, text)
            for path in ("/v1/catalog/services", "/v1/health/service/web",
                         "/v1/agent/services", "/v1/status/leader", "/v1/agent/metrics"):
                status, compact = d.request("GET", path)
                self.assertEqual(status, 200, compact)
                for q in ("?pretty", "?pretty=false"):
                    status, pretty = d.request("GET", path + q)
                    self.assertEqual(status, 200, pretty)
                    self.assertTrue(pretty.endswith("\n"), (path, pretty[-40:]))
                    if path == "/v1/agent/metrics":  # its Timestamp moves
                        self.assertIn('\n    "Gauges": [\n        {\n', pretty)
                        continue
                    self.assertEqual(json.loads(pretty), json.loads(compact), path)
                    self.assertEqual(pretty, json.dumps(json.loads(compact), indent=4) + "\n",
                                     path)
            status, text = d.request("GET", "/v1/catalog/service/web?pretty&index=x")
            self.assertEqual(status, 400, text)  # errors stay one line of text
            self.assertEqual(text.count("\n"), 1, text)
        finally:
            d.stop()


class HeadTest(unittest.TestCase):
    """The response head as bytes on the wire: the status line with its
    reason, then each header once, on a line of its own. The Consul headers
    and the content type travel after evhttp's reason phrase (reply's
    consul_head); this reads what a client parses, for a read, an error,
    a relayed header (Allow) beside them, HTTP/1.0 and a stream."""

    def raw(self, d, request):
        import socket
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        try:
            s.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                self.assertTrue(chunk, data)
                data += chunk
        finally:
            s.close()
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        lines = head.split("\r\n")
        names = [line.split(":", 1)[0].lower() for line in lines[1:]]
        for line in lines[1:]:
            self.assertRegex(line, r"^[A-Za-z-]+: \S", head)
        self.assertEqual(len(names), len(set(names)), head)  # each once
        return lines[0], dict(line.split(": ", 1) for line in lines[1:])

    def test_heads(self):
        d = Registryd().start()
        self.addCleanup(d.stop)
        status, text = d.request("PUT", "/v1/agent/service/register",
                                 json.dumps({"Name": "web", "ID": "web-1"}))
        self.assertEqual(status, 200, text)
        line, h = self.raw(d, b"GET /v1/health/service/web HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(line, "HTTP/1.1 200 OK")
        self.assertEqual(h["Content-Type"], "application/json")
        self.assertGreater(int(h["X-Consul-Index"]), 1)
        self.assertEqual(h["X-Consul-KnownLeader"], "true")
        self.assertEqual(h["X-Consul-LastContact"], "0")
        self.assertEqual(h["X-Consul-Default-ACL-Policy"], "allow")
        self.assertEqual(h["X-Consul-Effective-Consistency"], "leader")
        self.assertIn("GMT", h["Date"])
        self.assertGreater(int(h["Content-Length"]), 10)

        line, h = self.raw(d, b"GET /v1/catalog/service/web?index=x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(line, "HTTP/1.1 400 Bad Request")
        self.assertEqual(h["Content-Type"], "text/plain; charset=utf-8")
        self.assertIn("X-Consul-Index", h)

        line, h = self.raw(d, b"POST /v1/status/leader HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: 0\r\n\r\n")
        self.assertEqual(line, "HTTP/1.1 405 Method Not Allowed")
        self.assertEqual(h["Allow"], "GET,OPTIONS")
        self.assertNotIn("X-Consul-Effective-Consistency", h)  # a status read

        line, h = self.raw(d, b"GET /v1/agent/services HTTP/1.0\r\n\r\n")
        self.assertEqual(line, "HTTP/1.0 200 OK")
        self.assertIn("X-Consul-Index", h)
        self.assertNotIn("X-Consul-Effective-Consistency", h)  # an agent read

        line, h = self.raw(d, b"GET /v1/snapshot HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(line, "HTTP/1.1 200 OK")  # a stream, its length known
        self.assertGreater(int(h["Content-Length"]), 0)
        self.assertEqual(h["Content-Type"], "application/octet-stream")
        self.assertIn("X-Consul-Index", h)


class FreshIndexTest(unittest.TestCase):
    """An empty registry answers X-Consul-Index 1; its first write must
    carry a higher index, or a query blocked at ?index=1 (what a watch
    sends after its first read) sleeps through it."""

    def test_first_write_wakes_a_query_at_index_1(self):
        d = Registryd().start()
        self.addCleanup(d.stop)
        status, _, headers = d.request_full("GET", "/v1/health/service/svc")
        self.assertEqual(status, 200)
        self.assertEqual(headers["X-Consul-Index"], "1")
        got = {}

        def watch():
            t0 = time.monotonic()
            got["answer"] = d.request_full("GET", "/v1/health/service/svc?index=1&wait=8s")
            got["seconds"] = time.monotonic() - t0

        import threading
        t = threading.Thread(target=watch)
        t.start()
        time.sleep(0.5)
        status, text = d.request("PUT", "/v1/agent/service/register",
                                 json.dumps({"Name": "svc", "ID": "svc-1"}))
        self.assertEqual(status, 200, text)
        t.join(15)
        status, body, headers = got["answer"]
        self.assertEqual(status, 200)
        self.assertLess(got["seconds"], 5, "the first write did not wake the query")
        self.assertGreater(int(headers["X-Consul-Index"]), 1)
        self.assertEqual([e["Service"]["ID"] for e in json.loads(body)], ["svc-1"])


class ScriptCheckTest(unittest.TestCase):
    """Args checks: refused without enable_script_checks (Consul's message),
    run with it: exit 0 passing, 1 warning, else critical, killed at the
    timeout."""

    def test_script_checks(self):
        # refused without the setting: test_bad_input's table
        d = Registryd(extra_args=["--enable-script-checks"]).start()
        try:
            cases = {
                "ok": (["sh", "-c", "echo all good; exit 0"], "passing", "all good"),
                "warn": (["sh", "-c", "echo degraded >&2; exit 1"], "warning", "degraded"),
                "bad": (["sh", "-c", "echo broken; exit 3"], "critical", "broken"),
                "slow": (["sleep", "30"], "critical", "Timed out"),
                "missing": (["/no/such/program"], "critical", "cannot run"),
            }
            for sid, (args, _, _) in cases.items():
                code, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                    {"Name": "s", "ID": sid, "Check": {"Args": args, "Interval": "500ms",
                                                       "Timeout": "300ms"}}))
                self.assertEqual(code, 200, text)
            import time
            for sid, (_, want, out) in cases.items():
                deadline, got = time.monotonic() + 10, {}
                while time.monotonic() < deadline:
                    got = json.loads(d.request("GET", "/v1/agent/checks")[1])["service:" + sid]
                    if got["Status"] == want and out in got["Output"]:
                        break
                    time.sleep(0.05)
                self.assertEqual((got["Status"], out in got["Output"]), (want, True), got)
                self.assertEqual(got["Type"], "script")
            code, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "s", "Check": {"Args": [], "Interval": "1s"}}))
            self.assertEqual(code, 400, text)
            self.assertIn("Args", text)
        finally:
            d.stop()


class NodeMetaConfigTest(unittest.TestCase):
    """node_meta in YAML (a mapping) and --node-meta's malformed values."""

    def test_yaml_mapping_and_bad_values(self):
        import os
        import subprocess
        from harness import REGISTRYD, TempDir
        tmp = TempDir()
        try:
            path = os.path.join(tmp.path, "r.yaml")
            with open(path, "w") as f:
                f.write("node: yaml-node\nnode_meta:\n  rack: r9\n  env: \"dev:blue\"\n")
            # a flag wins over the file, key by key (keys stay unique)
            d = Registryd(extra_args=["--config", path, "--node-meta", "rack:r10"]).start()
            try:
                code, text = d.request("GET", "/v1/catalog/nodes?node-meta=env:dev:blue")
                self.assertEqual(code, 200, text)
                self.assertEqual(json.loads(text)[0]["Meta"], {"rack": "r10", "env": "dev:blue"})
            finally:
                d.stop()
            for args, why in ((["--node-meta", "nocolon"], "KEY:VALUE"),
                              (["--node-meta", ":v"], "KEY:VALUE"),
                              (["--node-meta", "bad key:v"], "KEY:VALUE"),
                              (["--node-meta", "consul-x:v"], "reserved"),
                              (["--node-meta", "k:" + "v" * 600], "512"),
                              # 65 pairs were taken (at most 64)
                              (sum((["--node-meta", "k%d:v" % i] for i in range(65)), []),
                               "at most 64"),
                              ):
                p = subprocess.run([REGISTRYD, "--dev"] + args, capture_output=True, text=True,
                                   timeout=20)
                self.assertEqual(p.returncode, 2, (args, p.stderr))
                self.assertIn("--node-meta", p.stderr)
                self.assertIn(why, p.stderr)
            with open(path, "w") as f:
                f.write("dev: true\nnode_meta:\n  rack: [r1]\n")
            p = subprocess.run([REGISTRYD, "--config", path], capture_output=True, text=True,
                               timeout=20)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("%s:3:" % path, p.stderr)
        finally:
            tmp.cleanup()


class NodeMetaClusterTest(unittest.TestCase):
    """A registration a follower forwards keeps that follower's node meta."""

    def test_forwarded_registration_keeps_node_meta(self):
        from harness import TempDir, start_cluster
        import time
        tmp, servers = TempDir(), []
        try:
            start_cluster(tmp.path, 3, extra=["--node-meta", "zone:z1"], servers=servers)
            follower = None
            deadline = time.monotonic() + 20
            while follower is None and time.monotonic() < deadline:
                for d in servers:
                    code, text = d.request("GET", "/v1/agent/self")
                    if code == 200 and json.loads(text)["Stats"]["raft"]["state"] == "Follower":
                        follower = d
                        break
                time.sleep(0.1)
            self.assertIsNotNone(follower)
            code, text = follower.request("PUT", "/v1/agent/service/register",
                                          json.dumps({"Name": "fwd", "ID": "fwd-1"}))
            self.assertEqual(code, 200, text)
            for d in servers:
                rows, deadline = [], time.monotonic() + 10
                while not rows and time.monotonic() < deadline:  # replication lag
                    rows = json.loads(d.request("GET", "/v1/catalog/service/fwd?stale")[1])
                    time.sleep(0.05)
                self.assertEqual(len(rows), 1)
                # on every server, not only the follower whose configuration it is
                self.assertEqual(rows[0]["Node"], "s%d" % servers.index(follower))
                self.assertEqual(rows[0]["NodeMeta"], {"zone": "z1"})
                code, text = d.request("GET", "/v1/catalog/service/fwd?stale&node-meta=zone:z1")
                self.assertEqual(len(json.loads(text)), 1)
            # the follower's node in DNS on the others: a node known from the
            # instances on it (no catalog record), by the node index, in any case
            from test_dns import answers, dig
            name = "s%d" % servers.index(follower)
            for d in servers:
                if d is follower:
                    continue
                for asked in (name, name.upper()):
                    out = dig(d.dns_port, "%s.node.registry." % asked)
                    self.assertEqual(answers(out, "A"), ["127.0.0.1"], out)
        finally:
            for d in servers:
                d.stop(check=False)
            tmp.cleanup()


if __name__ == "__main__":
    unittest.main()
