#!/usr/bin/python3
"""Consul compatibility, round two: the requests real clients send (go-bexpr
?filter=, ?node-meta= as Prometheus's consul_sd sends it, check ids, snake_case
bodies, ...) answered as Consul answers them, against a real registryd."""
import json
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

    def test_filter_is_cached_per_expression(self):
        a = self.get("/v1/agent/services?filter=" + q('Service == web'))
        b = self.get("/v1/agent/services?filter=" + q('Service == db'))
        self.assertEqual((set(a), set(b)), ({"web-1", "web-2"}, {"db-1"}))

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


if __name__ == "__main__":
    unittest.main()
