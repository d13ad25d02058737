#!/usr/bin/python3
"""ACLs: bootstrap once, policies and tokens with Consul's JSON shapes, a
table of (token, method, path, body) -> (status, what the answer holds) over
every route under default deny and default allow, list filtering, python-consul
with a token, DNS under the default token, forged internal requests, secrets
never stored, persistence across restart and snapshot restore, the audit trail.
"""
import datetime
import json
import os
import socket
import subprocess
import time
import unittest
import urllib.request

import consul

from harness import REGISTRYCTL, REGISTRYD, Registryd, TempDir

MGMT = "11111111-2222-4333-8444-555555555555"
SERVER = "server-token-0123456789abcdef"


def dig(port, name, qtype="A"):
    p = subprocess.run(["dig", "-p", str(port), "@127.0.0.1", "+norec", "+time=2", "+tries=1",
                        name, qtype], capture_output=True, text=True, timeout=20)
    for line in p.stdout.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    return None


class AclBase(unittest.TestCase):
    policy = "deny"

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        secret_file = os.path.join(cls.tmp.path, "mgmt")
        with open(secret_file, "w") as f:
            f.write(MGMT + "\n")
        cls.d = Registryd(extra_args=["--acl-enabled", "--acl-default-policy", cls.policy,
                                      "--acl-initial-management-token-file", secret_file,
                                      "--acl-server-token", SERVER]).start()
        cls.setup_tokens()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.tmp.cleanup()

    @classmethod
    def req(cls, method, path, body=None, token=None, how="header"):
        headers = {}
        if token and how == "header":
            headers["X-Consul-Token"] = token
        elif token and how == "bearer":
            headers["Authorization"] = "Bearer " + token
        elif token and how == "query":
            path += ("&" if "?" in path else "?") + "token=" + token
        if body is not None and not isinstance(body, str):
            body = json.dumps(body)
        return cls.d.request_full(method, path, body, headers)

    @classmethod
    def ok(cls, method, path, body=None, token=MGMT):
        status, text, _ = cls.req(method, path, body, token)
        assert status == 200, (method, path, status, text)
        return json.loads(text) if text.strip() else None

    @classmethod
    def setup_tokens(cls):
        for name, rules in [
                ("web-write", 'service "web" { policy = "write" }'),
                ("read-all", 'service_prefix "" { policy = "read" }\n'
                             'node_prefix "" { policy = "read" }\nagent_prefix "" { policy = "read" }'),
                ("operator", '{"operator": "write"}'),
                ("acl-read", 'acl = "read"'),
                ("deny-db", 'service_prefix "" { policy = "write" }\nservice "db" { policy = "deny" }'),
                ("node-read", 'node_prefix "" { policy = "read" }')]:
            cls.ok("PUT", "/v1/acl/policy", {"Name": name, "Rules": rules})
        cls.tok = {}
        for name, pols in [("web", ["web-write"]), ("webnode", ["web-write", "node-read"]),
                           ("reader", ["read-all"]),
                           ("operator", ["operator"]), ("aclread", ["acl-read"]),
                           ("nodb", ["deny-db"]), ("none", [])]:
            t = cls.ok("PUT", "/v1/acl/token", {"Description": name,
                                                "Policies": [{"Name": p} for p in pols]})
            cls.tok[name] = t["SecretID"]
            cls.tok[name + ".accessor"] = t["AccessorID"]
        for name in ("web", "db"):
            cls.ok("PUT", "/v1/agent/service/register",
                   {"Name": name, "ID": name + "-1", "Port": 80,
                    "Check": {"TTL": "60s", "CheckID": "ttl-" + name}})
            cls.ok("PUT", "/v1/agent/check/pass/ttl-" + name)  # DNS answers passing ones

    def run_table(self, table):
        for token, method, path, body, want, contains in table:
            secret = self.tok.get(token, token) if token else None
            status, text, headers = self.req(method, path, body, secret)
            with self.subTest(token=token, method=method, path=path):
                self.assertEqual(status, want, text)
                for c in contains:
                    if c.startswith("!"):
                        self.assertNotIn(c[1:], text)
                    elif c.startswith("filtered"):
                        self.assertEqual(headers.get("X-Consul-Results-Filtered-By-ACLs"),
                                         "true" if c == "filtered" else None)
                    else:
                        self.assertIn(c, text)


class DefaultDenyTest(AclBase):
    policy = "deny"

    def test_default_policy_header(self):
        # Consul's X-Consul-Default-ACL-Policy, on every answer, 403s too
        for token, path in ((MGMT, "/v1/agent/services"), (None, "/v1/agent/services"),
                            (None, "/v1/status/leader")):
            _, _, h = self.req("GET", path, token=token)
            self.assertEqual(h["X-Consul-Default-ACL-Policy"], "deny")

    def test_bootstrap_not_allowed_with_an_initial_management_token(self):
        # An initial management token takes the bootstrap, as in Consul: its
        # leader applies the configured token through the bootstrap request
        # as soon as it leads, while ACLs can still be bootstrapped
        # (leader.go, initializeManagementToken), so PUT /v1/acl/bootstrap
        # then finds them bootstrapped. (registryd allowed one bootstrap
        # more, a second management token nobody asked for.) The reset index
        # is 0: the configured token lives in the configuration, not in the
        # store, so no index took it.
        for _ in range(2):
            status, text, _ = self.req("PUT", "/v1/acl/bootstrap")
            self.assertEqual((status, text.strip()),
                             (403, "Permission denied: ACL bootstrap no longer allowed "
                                   "(reset index: 0)"))
        self.assertNotIn("Bootstrap Token", json.dumps(self.ok("GET", "/v1/acl/tokens")))

    def test_table(self):
        W = {"Name": "web", "ID": "web-1", "Port": 80,
             "Check": {"TTL": "60s", "CheckID": "ttl-web"}}
        self.run_table([
            # no token: the anonymous token under default deny sees nothing
            (None, "GET", "/v1/catalog/services", None, 200, ["!web", "filtered"]),
            (None, "GET", "/v1/catalog/service/web", None, 200, ["[]", "filtered"]),
            (None, "GET", "/v1/health/service/web", None, 200, ["[]", "filtered"]),
            (None, "GET", "/v1/health/checks/web", None, 200, ["[]"]),
            (None, "GET", "/v1/health/state/any", None, 200, ["!ttl-web", "filtered"]),
            (None, "GET", "/v1/agent/services", None, 200, ["!web-1", "filtered"]),
            (None, "GET", "/v1/agent/checks", None, 200, ["!ttl-web", "filtered"]),
            (None, "GET", "/v1/agent/service/web-1", None, 403, ["Permission denied"]),
            (None, "GET", "/v1/agent/self", None, 403, ["Permission denied"]),
            (None, "GET", "/v1/agent/metrics", None, 403, ["Permission denied"]),
            (None, "GET", "/v1/catalog/nodes", None, 200, ["filtered"]),
            (None, "GET", "/v1/catalog/node/x", None, 403, ["Permission denied"]),
            (None, "GET", "/v1/health/node/x", None, 403, ["Permission denied"]),
            (None, "GET", "/v1/operator/raft/configuration", None, 403, ["Permission denied"]),
            (None, "DELETE", "/v1/operator/raft/peer?id=99", None, 403, ["Permission denied"]),
            (None, "POST", "/v1/operator/raft/transfer-leader", None, 403, ["Permission denied"]),
            (None, "GET", "/v1/snapshot", None, 403, ["Permission denied"]),
            (None, "PUT", "/v1/snapshot", "RSNAP001", 403, ["Permission denied"]),
            (None, "PUT", "/v1/agent/service/register", W, 403, ["service:write", "web"]),
            (None, "PUT", "/v1/agent/service/deregister/web-1", None, 403, ["Permission denied"]),
            (None, "PUT", "/v1/agent/service/maintenance/web-1?enable=true", None, 403, []),
            (None, "PUT", "/v1/agent/check/pass/ttl-web", None, 403, ["Permission denied"]),
            (None, "PUT", "/v1/agent/check/update/ttl-web", {"Status": "passing"}, 403, []),
            (None, "GET", "/v1/acl/tokens", None, 403, ["Permission denied"]),
            (None, "GET", "/v1/acl/policies", None, 403, ["Permission denied"]),
            (None, "PUT", "/v1/acl/policy", {"Name": "x", "Rules": ""}, 403, []),
            (None, "PUT", "/v1/acl/token", {}, 403, []),
            (None, "GET", "/v1/acl/token/self", None, 200, ["Anonymous Token"]),
            (None, "PUT", "/v1/agent/check/register", {"Name": "c", "TTL": "10s",
                                                       "ServiceID": "web-1"}, 403, []),
            (None, "PUT", "/v1/agent/check/deregister/ttl-web", None, 403, []),
            (None, "PUT", "/v1/agent/maintenance?enable=true", None, 403, ["node:write"]),
            (None, "PUT", "/v1/catalog/register", {"Node": "ext", "Address": "10.0.0.1"}, 403,
             ["node:write"]),
            (None, "PUT", "/v1/catalog/deregister", {"Node": "ext"}, 403, []),
            (None, "GET", "/v1/agent/health/service/id/web-1", None, 403, []),
            (None, "GET", "/v1/agent/health/service/name/web", None, 403, []),
            (None, "GET", "/v1/catalog/node-services/x", None, 403, []),
            (None, "GET", "/v1/agent/members", None, 200, ["filtered"]),
            (None, "PUT", "/v1/agent/leave", None, 403, ["agent:write"]),
            (None, "GET", "/v1/status/leader", None, 200, ["127.0.0.1"]),
            (None, "GET", "/v1/catalog/datacenters", None, 200, ["dc1"]),
            # an unknown token is refused outright
            ("not-a-token", "GET", "/v1/catalog/services", None, 403, ["ACL not found"]),
            # web: service:write on "web" only
            ("web", "GET", "/v1/catalog/services", None, 200, ["web", "!db", "filtered"]),
            # each entry shows its node: node:read on it too (Consul's
            # CheckServiceNode.CanRead), else filtered
            ("web", "GET", "/v1/health/service/web", None, 200, ["!web-1", "filtered"]),
            ("web", "GET", "/v1/catalog/service/web", None, 200, ["!web-1", "filtered"]),
            ("web", "GET", "/v1/health/checks/web", None, 200, ["!ttl-web", "filtered"]),
            ("webnode", "GET", "/v1/health/service/web", None, 200, ["web-1", "ttl-web"]),
            ("webnode", "GET", "/v1/catalog/service/web", None, 200, ["web-1"]),
            ("webnode", "GET", "/v1/health/checks/web", None, 200, ["ttl-web"]),
            ("webnode", "GET", "/v1/health/service/db", None, 200, ["!db-1", "filtered"]),
            ("web", "GET", "/v1/health/service/db", None, 200, ["!db-1", "filtered"]),
            ("web", "GET", "/v1/agent/checks", None, 200, ["ttl-web", "!ttl-db"]),
            ("web", "PUT", "/v1/agent/service/register", W, 200, []),
            ("web", "PUT", "/v1/agent/check/pass/ttl-web", None, 200, []),
            ("web", "PUT", "/v1/agent/check/register", {"Name": "c2", "TTL": "10s",
                                                        "CheckID": "c2", "ServiceID": "web-1"},
             200, []),
            ("web", "PUT", "/v1/agent/check/register", {"Name": "c3", "TTL": "10s",
                                                        "ServiceID": "db-1"}, 403, ["db"]),
            ("web", "PUT", "/v1/agent/check/deregister/c2", None, 200, []),
            ("web", "PUT", "/v1/agent/check/deregister/ttl-db", None, 403, []),
            ("web", "GET", "/v1/agent/health/service/name/web", None, 200, ["AggregatedStatus"]),
            ("web", "PUT", "/v1/catalog/register", {"Node": "ext", "Address": "10.0.0.1",
                                                    "Service": {"Service": "web"}}, 403,
             ["node:write"]),
            ("web", "PUT", "/v1/agent/check/pass/ttl-db", None, 403, ["service:write", "db"]),
            ("web", "PUT", "/v1/agent/service/maintenance/web-1?enable=false", None, 200, []),
            ("web", "PUT", "/v1/agent/service/deregister/db-1", None, 403, ["Permission denied"]),
            ("web", "PUT", "/v1/agent/service/register", {"Name": "db"}, 403, ["db"]),
            ("web", "GET", "/v1/agent/service/web-1", None, 200, ["web-1"]),
            ("web", "GET", "/v1/agent/service/db-1", None, 403, ["Permission denied"]),
            ("web", "GET", "/v1/acl/tokens", None, 403, ["acl:read"]),
            ("web", "GET", "/v1/acl/token/self", None, 200, ["web-write", "!SecretID"]),
            # reader: reads everything, writes nothing
            ("reader", "GET", "/v1/catalog/services", None, 200, ["web", "db", "filtered-not"]),
            ("reader", "GET", "/v1/catalog/nodes", None, 200, ["Node", "filtered-not"]),
            ("reader", "GET", "/v1/agent/self", None, 200, ["Config"]),
            ("reader", "GET", "/v1/agent/members", None, 200, ["filtered-not"]),
            ("reader", "GET", "/v1/health/state/any", None, 200, ["ttl-web", "ttl-db"]),
            ("reader", "PUT", "/v1/agent/service/register", W, 403, []),
            ("reader", "PUT", "/v1/agent/leave", None, 403, ["agent:write"]),
            ("reader", "GET", "/v1/operator/raft/configuration", None, 403, ["operator:read"]),
            # operator
            ("operator", "GET", "/v1/operator/raft/configuration", None, 200, ["Servers"]),
            ("reader", "POST", "/v1/operator/raft/transfer-leader", None, 403, ["operator:write"]),
            # through the ACL, then refused: a single server has no one to hand over to
            ("operator", "POST", "/v1/operator/raft/transfer-leader", None, 400,
             ["No other voter"]),
            ("operator", "GET", "/v1/snapshot", None, 403, ["management"]),
            # acl = "read" reads ACLs but does not write them
            ("aclread", "GET", "/v1/acl/tokens", None, 200, ["AccessorID", "!SecretID",
                                                             "!SecretHash", "!sha256"]),
            ("aclread", "GET", "/v1/acl/policies", None, 200, ["global-management", "web-write"]),
            ("aclread", "PUT", "/v1/acl/policy", {"Name": "x", "Rules": ""}, 403, ["acl:write"]),
            # nodb: everything but db (exact deny beats the prefix write)
            ("nodb", "PUT", "/v1/agent/check/pass/ttl-web", None, 200, []),
            ("nodb", "PUT", "/v1/agent/check/pass/ttl-db", None, 403, []),
            ("nodb", "GET", "/v1/catalog/services", None, 200, ["web", "!db", "filtered"]),
            # a token without policies is anonymous-like
            ("none", "GET", "/v1/catalog/services", None, 200, ["!web"]),
            # management
            (MGMT, "GET", "/v1/catalog/services", None, 200, ["web", "db", "filtered-not"]),
            (MGMT, "GET", "/v1/acl/token/self", None, 200, ["global-management"]),
            (MGMT, "PUT", "/v1/acl/policy", {"Name": "bad", "Rules": 'service "a" {\n policy = "all" }'},
             400, ["line 2, column 11"]),
            (MGMT, "PUT", "/v1/acl/policy", {"Name": "web-write", "Rules": ""}, 400,
             ["already exists"]),
            (MGMT, "PUT", "/v1/acl/token", {"Policies": [{"Name": "nope"}]}, 400, ["nope"]),
            (MGMT, "DELETE", "/v1/acl/policy/" + "00000000-0000-0000-0000-000000000001", None,
             400, []),
        ])

    def test_service_and_node_identities(self):
        """Consul's service and node identities: a token's ServiceIdentities
        and NodeIdentities grant Consul's synthetic policies where they name
        this datacenter (dc1)."""
        ident = self.ok("PUT", "/v1/acl/token", {"ServiceIdentities": [{"ServiceName": "web"}]})
        self.assertEqual(ident["ServiceIdentities"], [{"ServiceName": "web"}])
        self.assertEqual(ident["Policies"], [])
        secret, path = ident["SecretID"], "/v1/acl/token/" + ident["AccessorID"]
        self.addCleanup(self.ok, "DELETE", path)
        for sid in ("web-ident", "web-ident-proxy", "db-ident"):
            self.addCleanup(self.req, "PUT", "/v1/agent/service/deregister/" + sid, None, MGMT)
        self.addCleanup(self.req, "PUT", "/v1/catalog/deregister", {"Node": "n1"}, MGMT)
        # service:write on web and its sidecar, not on db
        for body, want in (({"Name": "web", "ID": "web-ident"}, 200),
                           ({"Name": "web-sidecar-proxy", "ID": "web-ident-proxy"}, 200),
                           ({"Name": "db", "ID": "db-ident"}, 403),
                           ({"Name": "web", "ID": "db-1"}, 403)):
            status, text, _ = self.req("PUT", "/v1/agent/service/register", body, secret)
            with self.subTest(body=body):
                self.assertEqual(status, want, text)
        status, text, _ = self.req("PUT", "/v1/catalog/register",
                                   {"Node": "n1", "Address": "10.0.0.1"}, secret)
        self.assertEqual(status, 403, text)
        # reads every service and node
        status, text, h = self.req("GET", "/v1/catalog/services", token=secret)
        self.assertEqual(status, 200, text)
        self.assertIn("db", json.loads(text))
        self.assertIsNone(h.get("X-Consul-Results-Filtered-By-ACLs"))
        status, text, _ = self.req("GET", "/v1/health/service/web", token=secret)
        self.assertIn("web-ident", text)
        self.assertIn("web-1", text)
        status, text, _ = self.req("GET", "/v1/catalog/node/" + self.node(), token=secret)
        self.assertEqual(status, 200, text)
        # shown in every rendering
        self.assertEqual(self.ok("GET", path)["ServiceIdentities"], [{"ServiceName": "web"}])
        self.assertEqual(self.ok("GET", "/v1/acl/token/self", token=secret)
                         ["ServiceIdentities"], [{"ServiceName": "web"}])
        listed = {t["AccessorID"]: t for t in self.ok("GET", "/v1/acl/tokens")}
        self.assertEqual(listed[ident["AccessorID"]]["ServiceIdentities"],
                         [{"ServiceName": "web"}])
        self.assertNotIn("ServiceIdentities", listed[self.tok["web.accessor"]])
        # an identity for other datacenters grants nothing here
        other = self.ok("PUT", "/v1/acl/token", {"ServiceIdentities": [
            {"ServiceName": "web", "Datacenters": ["dc2"]}]})
        self.addCleanup(self.ok, "DELETE", "/v1/acl/token/" + other["AccessorID"])
        status, text, _ = self.req("PUT", "/v1/agent/service/register",
                                   {"Name": "web", "ID": "web-ident"}, other["SecretID"])
        self.assertEqual(status, 403, text)
        both = self.ok("PUT", "/v1/acl/token", {"ServiceIdentities": [
            {"ServiceName": "web", "Datacenters": ["dc2", "dc1"]}]})
        self.addCleanup(self.ok, "DELETE", "/v1/acl/token/" + both["AccessorID"])
        self.assertEqual(both["ServiceIdentities"],
                         [{"ServiceName": "web", "Datacenters": ["dc1", "dc2"]}])
        status, text, _ = self.req("PUT", "/v1/agent/service/register",
                                   {"Name": "web", "ID": "web-ident"}, both["SecretID"])
        self.assertEqual(status, 200, text)
        # a node identity: node:write on its node, service:read
        node = self.ok("PUT", "/v1/acl/token", {"NodeIdentities": [
            {"NodeName": "n1", "Datacenter": "dc1"}]})
        self.addCleanup(self.ok, "DELETE", "/v1/acl/token/" + node["AccessorID"])
        self.assertEqual(node["NodeIdentities"], [{"NodeName": "n1", "Datacenter": "dc1"}])
        rc, out, err = self.d.ctl("--token", MGMT, "acl", "token", "read", both["AccessorID"])
        self.assertIn("Service Identities: web (Datacenters: dc1 dc2)\n", out)
        rc, out, err = self.d.ctl("--token", MGMT, "acl", "token", "read", node["AccessorID"])
        self.assertIn("Node Identities: n1 (Datacenter: dc1)\n", out)
        rc, out, err = self.d.ctl("--token", MGMT, "acl", "token", "read", ident["AccessorID"])
        self.assertIn("Service Identities: web (Datacenters: all)\n", out)
        for body, want in (({"Node": "n1", "Address": "10.0.0.1"}, 200),
                           ({"Node": "n2", "Address": "10.0.0.2"}, 403),
                           ({"Node": "n1", "Address": "10.0.0.1",
                             "Service": {"Service": "web", "ID": "web-n1"}}, 403)):
            status, text, _ = self.req("PUT", "/v1/catalog/register", body, node["SecretID"])
            with self.subTest(body=body):
                self.assertEqual(status, want, text)
        self.assertIn("n1", [n["Node"] for n in self.ok("GET", "/v1/catalog/nodes")])
        status, text, _ = self.req("GET", "/v1/catalog/services", token=node["SecretID"])
        self.assertIn("db", json.loads(text))
        status, text, _ = self.req("PUT", "/v1/agent/service/register",
                                   {"Name": "web", "ID": "web-ident"}, node["SecretID"])
        self.assertEqual(status, 403, text)
        far = self.ok("PUT", "/v1/acl/token", {"NodeIdentities": [
            {"NodeName": "n1", "Datacenter": "dc2"}]})
        self.addCleanup(self.ok, "DELETE", "/v1/acl/token/" + far["AccessorID"])
        status, text, _ = self.req("PUT", "/v1/catalog/register",
                                   {"Node": "n1", "Address": "10.0.0.1"}, far["SecretID"])
        self.assertEqual(status, 403, text)
        # an update's lists replace the token's (Consul's update is the whole token)
        upd = self.ok("PUT", path, {"NodeIdentities": [{"NodeName": "n1", "Datacenter": "dc1"}]})
        self.assertNotIn("ServiceIdentities", upd)
        status, text, _ = self.req("PUT", "/v1/agent/service/register",
                                   {"Name": "web", "ID": "web-ident"}, secret)
        self.assertEqual(status, 403, text)

    def test_policy_datacenters(self):
        """A policy whose Datacenters leave this one (dc1) out grants nothing
        here, as Consul's resolver filters it; it granted everywhere."""
        tokens = {}
        for dcs in (["dc2"], ["dc1", "dc2"], []):
            name = "web-in-" + ("-".join(dcs) or "all")
            pol = self.ok("PUT", "/v1/acl/policy", {"Name": name, "Datacenters": dcs,
                                                    "Rules": 'service "web" { policy = "write" }'})
            self.addCleanup(self.ok, "DELETE", "/v1/acl/policy/" + pol["ID"])
            t = self.ok("PUT", "/v1/acl/token", {"Policies": [{"ID": pol["ID"]}]})
            self.addCleanup(self.ok, "DELETE", "/v1/acl/token/" + t["AccessorID"])
            tokens[name] = t["SecretID"]
        body = {"Name": "web", "ID": "web-dc", "Port": 81}
        self.addCleanup(self.req, "PUT", "/v1/agent/service/deregister/web-dc", None, MGMT)
        for name, want in [("web-in-dc2", 403), ("web-in-dc1-dc2", 200), ("web-in-all", 200)]:
            status, text, _ = self.req("PUT", "/v1/agent/service/register", body, tokens[name])
            self.assertEqual(status, want, (name, text))
        status, text, _ = self.req("GET", "/v1/catalog/service/web", None, tokens["web-in-dc2"])
        self.assertEqual((status, json.loads(text)), (200, []))

    def test_identity_rules(self):
        for body, want in [
                ({"ServiceIdentities": [{}]},
                 "Service identity is missing the service name field on this token"),
                ({"ServiceIdentities": [{"ServiceName": ""}]},
                 "Service identity is missing the service name field on this token"),
                ({"ServiceIdentities": [{"ServiceName": "Web"}]},
                 "Service identity \"Web\" has an invalid name. Only lowercase alphanumeric "
                 "characters, '-' and '_' are allowed"),
                ({"ServiceIdentities": [{"ServiceName": "web-"}]}, "has an invalid name"),
                ({"ServiceIdentities": [{"ServiceName": "we.b"}]}, "has an invalid name"),
                ({"ServiceIdentities": [{"ServiceName": "w" * 257}]}, "has an invalid name"),
                ({"Local": True, "ServiceIdentities": [{"ServiceName": "web",
                                                        "Datacenters": ["dc1"]}]},
                 "Service identity \"web\" cannot specify a list of datacenters on a local "
                 "token"),
                ({"ServiceIdentities": "web"}, "ServiceIdentities"),
                ({"ServiceIdentities": [{"ServiceName": "web", "Datacenters": "dc1"}]},
                 "ServiceIdentities"),
                ({"NodeIdentities": [{"Datacenter": "dc1"}]},
                 "Node identity is missing the node name field on this token"),
                ({"NodeIdentities": [{"NodeName": "n1"}]},
                 "Node identity is missing the datacenter field on this token"),
                ({"NodeIdentities": [{"NodeName": "N_1", "Datacenter": "dc1"}]},
                 "Node identity has an invalid name. Only lowercase alphanumeric characters, "
                 "'-' and '_' are allowed"),
                ({"NodeIdentities": [{"NodeName": 1, "Datacenter": "dc1"}]}, "NodeIdentities"),
                ({"NodeIdentities": {"NodeName": "n1", "Datacenter": "dc1"}}, "NodeIdentities"),
                # a NUL inside never reaches the names (json_string_value
                # would cut "web\0x" to "web"): the body is refused whole
                ({"ServiceIdentities": [{"ServiceName": "web\u0000x"}]}, "Request decode failed"),
                ({"NodeIdentities": [{"NodeName": "n1", "Datacenter": "dc1\u0000"}]},
                 "Request decode failed")]:
            status, text, _ = self.req("PUT", "/v1/acl/token", body, MGMT)
            with self.subTest(body=body):
                self.assertEqual(status, 400, text)
                self.assertIn(want, text)
        # names at the edges of the rule, and duplicates merged as Consul's
        t = self.ok("PUT", "/v1/acl/token", {
            "ServiceIdentities": [{"ServiceName": "a", "Datacenters": ["dc2"]},
                                  {"ServiceName": "a_b-9" + "x" * 251},
                                  {"ServiceName": "a", "Datacenters": ["dc1", "dc2"]}],
            "NodeIdentities": [{"NodeName": "n1", "Datacenter": "dc1"},
                               {"NodeName": "n1", "Datacenter": "dc1"},
                               {"NodeName": "n1", "Datacenter": "dc2"}]})
        self.addCleanup(self.ok, "DELETE", "/v1/acl/token/" + t["AccessorID"])
        self.assertEqual(t["ServiceIdentities"],
                         [{"ServiceName": "a", "Datacenters": ["dc1", "dc2"]},
                          {"ServiceName": "a_b-9" + "x" * 251}])
        self.assertEqual(t["NodeIdentities"], [{"NodeName": "n1", "Datacenter": "dc1"},
                                               {"NodeName": "n1", "Datacenter": "dc2"}])

    def test_roles_and_other_absent_acl_features(self):
        """registryd keeps no roles: a token naming one is refused with
        Consul's answer for a role that does not exist (it was linked to
        nothing, silently); the routes of roles, auth methods, binding rules
        and login answer 501 naming the feature (they were 404 Invalid URL
        path)."""
        rid = "0c9f2a31-1d7e-4a8b-9c3d-5e6f7a8b9c0d"
        mine = self.ok("PUT", "/v1/acl/token", {"Policies": [{"Name": "web-write"}]})
        path = "/v1/acl/token/" + mine["AccessorID"]
        self.addCleanup(self.ok, "DELETE", path)
        for body, want in (
                ({"Roles": [{"Name": "ops"}]}, 'No such ACL role with name "ops"'),
                ({"Roles": [{"ID": rid, "Name": "ops"}]}, 'No such ACL role with ID "%s"' % rid),
                # roles are looked at before policies, as Consul's TokenWriter
                ({"Roles": [{"Name": "ops"}], "Policies": [{"Name": "nope"}]},
                 'No such ACL role with name "ops"'),
                ({"Roles": "ops"}, "Roles")):
            for where in ("/v1/acl/token", path):
                status, text, _ = self.req("PUT", where, body, MGMT)
                with self.subTest(body=body, where=where):
                    self.assertEqual(status, 400, text)
                    self.assertIn(want, text)
        self.assertEqual(self.ok("GET", path)["Policies"][0]["Name"], "web-write")
        t = self.ok("PUT", "/v1/acl/token", {"Roles": [], "Policies": [{"Name": "web-write"}]})
        self.addCleanup(self.ok, "DELETE", "/v1/acl/token/" + t["AccessorID"])
        for method, path, what in (
                ("GET", "/v1/acl/roles", "ACL roles"),
                ("PUT", "/v1/acl/role", "ACL roles"),
                ("GET", "/v1/acl/role/" + rid, "ACL roles"),
                ("GET", "/v1/acl/role/name/ops", "ACL roles"),
                ("PUT", "/v1/acl/role/" + rid, "ACL roles"),
                ("DELETE", "/v1/acl/role/" + rid, "ACL roles"),
                ("GET", "/v1/acl/auth-methods", "ACL auth methods"),
                ("PUT", "/v1/acl/auth-method", "ACL auth methods"),
                ("GET", "/v1/acl/auth-method/minikube", "ACL auth methods"),
                ("DELETE", "/v1/acl/auth-method/minikube", "ACL auth methods"),
                ("GET", "/v1/acl/binding-rules", "ACL binding rules"),
                ("PUT", "/v1/acl/binding-rule", "ACL binding rules"),
                ("GET", "/v1/acl/binding-rule/" + rid, "ACL binding rules"),
                ("POST", "/v1/acl/login", "ACL login"),
                ("POST", "/v1/acl/logout", "ACL login")):
            for token in (MGMT, None):
                status, text, _ = self.req(method, path, {} if method != "GET" else None, token)
                with self.subTest(method=method, path=path, token=token):
                    self.assertEqual(status, 501, text)
                    self.assertIn(what, text)
                    self.assertIn("not supported by registryd", text)

    def test_token_clone(self):
        """PUT /v1/acl/token/:accessor/clone, as Consul's TokenClone."""
        src = self.ok("PUT", "/v1/acl/token", {
            "Description": "src", "Policies": [{"Name": "web-write"}],
            "ServiceIdentities": [{"ServiceName": "api"}],
            "NodeIdentities": [{"NodeName": "n9", "Datacenter": "dc1"}]})
        self.addCleanup(self.ok, "DELETE", "/v1/acl/token/" + src["AccessorID"])
        c = self.ok("PUT", "/v1/acl/token/%s/clone" % src["AccessorID"], {"Description": "copy"})
        self.addCleanup(self.ok, "DELETE", "/v1/acl/token/" + c["AccessorID"])
        self.assertNotEqual(c["AccessorID"], src["AccessorID"])
        self.assertEqual(len(c["SecretID"]), 36)
        self.assertNotEqual(c["SecretID"], src["SecretID"])
        self.assertEqual(c["Description"], "copy")
        for field in ("Policies", "ServiceIdentities", "NodeIdentities", "Local"):
            self.assertEqual(c[field], src[field], field)
        me = self.ok("GET", "/v1/acl/token/self", token=c["SecretID"])
        self.assertEqual(me["AccessorID"], c["AccessorID"])
        self.assertNotIn("SecretID", me)
        status, text, _ = self.req("PUT", "/v1/agent/service/register",
                                   {"Name": "api", "ID": "api-clone"}, c["SecretID"])
        self.assertEqual(status, 200, text)
        self.ok("PUT", "/v1/agent/service/deregister/api-clone")
        # no body: the same Description
        c2 = self.ok("PUT", "/v1/acl/token/%s/clone" % src["AccessorID"])
        self.addCleanup(self.ok, "DELETE", "/v1/acl/token/" + c2["AccessorID"])
        self.assertEqual(c2["Description"], "src")
        listed = [t["AccessorID"] for t in self.ok("GET", "/v1/acl/tokens")]
        for t in (src, c, c2):
            self.assertIn(t["AccessorID"], listed)
        status, text, _ = self.req("PUT", "/v1/acl/token/%s/clone" % src["AccessorID"], {},
                                   self.tok["aclread"])
        self.assertEqual(status, 403, text)
        self.assertIn("acl:write", text)
        status, text, _ = self.req("PUT", "/v1/acl/token/0c9f2a31-1d7e-4a8b-9c3d-5e6f7a8b9c0d"
                                          "/clone", {}, MGMT)
        self.assertEqual((status, text.strip()), (403, "ACL not found"))
        status, text, _ = self.req("PUT", "/v1/acl/token/%s/copy" % src["AccessorID"], {}, MGMT)
        self.assertEqual(status, 400, text)

    def test_token_list_by_policy(self):
        """GET /v1/acl/tokens?policy=ID lists only the tokens that link that
        policy (Consul's TokenList); there are no roles or auth methods, so
        ?role= and ?authmethod= list none."""
        pols = {p["Name"]: p["ID"] for p in self.ok("GET", "/v1/acl/policies")}
        pid, anon = pols["web-write"], "00000000-0000-0000-0000-000000000002"
        listed = self.ok("GET", "/v1/acl/tokens?policy=" + pid)
        ids = [t["AccessorID"] for t in listed]
        for name in ("web", "webnode"):
            self.assertIn(self.tok[name + ".accessor"], ids)
        for name in ("reader", "operator", "aclread", "nodb", "none"):
            self.assertNotIn(self.tok[name + ".accessor"], ids)
        self.assertNotIn(anon, ids)
        for t in listed:
            self.assertIn(pid, [p["ID"] for p in t["Policies"]], t)
        self.assertEqual([t["AccessorID"] for t in self.ok(
            "GET", "/v1/acl/tokens?policy=" + pols["read-all"])], [self.tok["reader.accessor"]])
        # the anonymous token too, when it links it
        self.ok("PUT", "/v1/acl/token/" + anon, {"Policies": [{"ID": pid}]})
        self.addCleanup(self.ok, "PUT", "/v1/acl/token/" + anon, {"Policies": []})
        self.assertIn(anon, [t["AccessorID"] for t in self.ok(
            "GET", "/v1/acl/tokens?policy=" + pid)])
        for query in ("?policy=0c9f2a31-1d7e-4a8b-9c3d-5e6f7a8b9c0d", "?policy=web-write",
                      "?role=0c9f2a31-1d7e-4a8b-9c3d-5e6f7a8b9c0d", "?authmethod=minikube"):
            with self.subTest(query=query):
                self.assertEqual(self.ok("GET", "/v1/acl/tokens" + query), [])
        status, text, _ = self.req("GET", "/v1/acl/tokens?policy=%s&role=x" % pid, token=MGMT)
        self.assertEqual(status, 400, text)
        self.assertIn("can only filter by one of policy, role, or authmethod at once", text)
        # no filter (or an empty one): every token
        for query in ("", "?policy="):
            ids = [t["AccessorID"] for t in self.ok("GET", "/v1/acl/tokens" + query)]
            self.assertIn(self.tok["reader.accessor"], ids)
            self.assertIn(anon, ids)

    def test_registration_cannot_take_over_another_service(self):
        # "web" write only: re-registering db-1 (db's instance) under the
        # name web, or naming db's check, would take them over (found by
        # probing: the takeover then let the token deregister db-1)
        self.run_table([
            ("web", "PUT", "/v1/agent/service/register", {"Name": "web", "ID": "db-1"}, 403,
             ["service:write"]),
            ("web", "PUT", "/v1/agent/service/register",
             {"Name": "web", "ID": "web-9", "Check": {"CheckID": "ttl-db", "TTL": "5s"}}, 403,
             ["service:write"]),
            ("web", "PUT", "/v1/agent/check/register",
             {"Name": "x", "CheckID": "ttl-db", "ServiceID": "web-1", "TTL": "5s"}, 403,
             ["service:write"]),
            ("web", "PUT", "/v1/agent/check/register",
             {"Name": "ttl-db", "ServiceID": "web-1", "TTL": "5s"}, 403, ["service:write"]),
            ("web", "PUT", "/v1/catalog/register",
             {"Node": self.node(), "Address": "127.0.0.1",
              "Service": {"Service": "web", "ID": "db-1"}}, 403, []),
            ("web", "PUT", "/v1/agent/service/deregister/db-1", None, 403, []),
        ])
        self.assertIn("db-1", self.ok("GET", "/v1/agent/services"))
        checks = self.ok("GET", "/v1/agent/checks")
        self.assertEqual(checks["ttl-db"]["ServiceID"], "db-1")
        # its own instance and checks stay writable
        self.ok("PUT", "/v1/agent/service/register",
                {"Name": "web", "ID": "web-1", "Port": 81,
                 "Check": {"TTL": "60s", "CheckID": "ttl-web"}}, token=self.tok["web"])

    def test_check_output_only_for_readers(self):
        # a new status, so that the output is written at once (an output
        # alone waits for check_update_interval)
        self.ok("PUT", "/v1/agent/check/update/ttl-db",
                {"Status": "warning", "Output": "db-output-4711"})
        for path in ("/v1/agent/checks", "/v1/health/state/any", "/v1/health/checks/db",
                     "/v1/health/service/db", "/v1/health/node/" + self.node()):
            for token, visible in (("web", False), (None, False), ("reader", True), (MGMT, True)):
                status, text, _ = self.req("GET", path, token=self.tok.get(token, token))
                with self.subTest(path=path, token=token):
                    self.assertEqual(status, 200 if visible or "/node/" not in path else 403,
                                     text)
                    self.assertEqual("db-output-4711" in text, visible)

    def node(self):
        return json.loads(self.req("GET", "/v1/agent/self", token=MGMT)[1])["Config"]["NodeName"]

    def test_token_sources(self):
        for how in ("header", "bearer", "query"):
            status, text, _ = self.req("GET", "/v1/acl/token/self", token=self.tok["web"], how=how)
            self.assertEqual(status, 200, how)
            self.assertEqual(json.loads(text)["AccessorID"], self.tok["web.accessor"])

    def test_policy_and_token_crud(self):
        p = self.ok("PUT", "/v1/acl/policy", {"Name": "crud", "Description": "d",
                                              "Rules": 'service "crud" { policy = "write" }'})
        self.assertEqual(self.ok("GET", "/v1/acl/policy/" + p["ID"])["Name"], "crud")
        self.assertEqual(self.ok("GET", "/v1/acl/policy/name/crud")["ID"], p["ID"])
        p2 = self.ok("PUT", "/v1/acl/policy/" + p["ID"],
                     {"Name": "crud2", "Rules": 'service "crud" { policy = "read" }'})
        self.assertEqual(p2["ID"], p["ID"])
        t = self.ok("PUT", "/v1/acl/token", {"Description": "c", "Policies": [{"ID": p["ID"]}]})
        self.assertEqual(t["Policies"], [{"ID": p["ID"], "Name": "crud2"}])
        self.assertEqual(self.req("PUT", "/v1/agent/service/register", {"Name": "crud"},
                                  t["SecretID"])[0], 403)  # read only now
        t2 = self.ok("PUT", "/v1/acl/token/" + t["AccessorID"],
                     {"Description": "c2", "Policies": [{"Name": "web-write"}]})
        self.assertNotIn("SecretID", t2)
        self.assertEqual(self.req("GET", "/v1/acl/token/self", None, t["SecretID"])[0], 200)
        self.assertEqual(self.ok("GET", "/v1/acl/token/" + t["AccessorID"])["Description"], "c2")
        # the body is the whole token, as Consul's update: no Description
        # is an empty one (it kept the old); Local cannot be toggled
        t3 = self.ok("PUT", "/v1/acl/token/" + t["AccessorID"],
                     {"Policies": [{"Name": "web-write"}]})
        self.assertEqual(t3["Description"], "")
        self.assertEqual(self.ok("GET", "/v1/acl/token/" + t["AccessorID"])["Description"], "")
        status, text, _ = self.req("PUT", "/v1/acl/token/" + t["AccessorID"], {"Local": True}, MGMT)
        self.assertEqual((status, text.strip()),
                         (400, "Cannot toggle local mode of " + t["AccessorID"]))
        self.assertTrue(self.ok("DELETE", "/v1/acl/token/" + t["AccessorID"]))
        self.assertEqual(self.req("GET", "/v1/acl/token/self", None, t["SecretID"])[1].strip(),
                         "ACL not found")
        self.assertTrue(self.ok("DELETE", "/v1/acl/policy/" + p["ID"]))
        self.assertEqual(self.req("GET", "/v1/acl/policy/" + p["ID"], token=MGMT)[0], 404)

    def test_anonymous_token_can_be_granted(self):
        pol = self.ok("PUT", "/v1/acl/policy", {"Name": "anon-web",
                                                "Rules": 'service "web" { policy = "read" }'})
        nodes = self.ok("PUT", "/v1/acl/policy", {"Name": "anon-nodes",
                                                  "Rules": 'node_prefix "" { policy = "read" }'})
        anon = "00000000-0000-0000-0000-000000000002"
        try:
            # the service alone: its entries show their node, so Consul (and
            # this) filters them, over HTTP and DNS alike
            self.ok("PUT", "/v1/acl/token/" + anon, {"Policies": [{"ID": pol["ID"]}]})
            status, text, h = self.req("GET", "/v1/health/service/web")
            self.assertNotIn("web-1", text)
            self.assertEqual(h.get("X-Consul-Results-Filtered-By-ACLs"), "true")
            self.assertEqual(dig(self.d.dns_port, "web.service.registry"), "NXDOMAIN")
            # with node:read, as Consul's DNS policy needs
            self.ok("PUT", "/v1/acl/token/" + anon,
                    {"Policies": [{"ID": pol["ID"]}, {"ID": nodes["ID"]}]})
            status, text, _ = self.req("GET", "/v1/health/service/web")
            self.assertIn("web-1", text)
            self.assertEqual(dig(self.d.dns_port, "web.service.registry"), "NOERROR")
            self.assertEqual(dig(self.d.dns_port, "db.service.registry"), "NXDOMAIN")
            # the rules apply to the service's own name, not the query's case
            # (review finding: "Web" denied, asked as "web", was answered)
            self.ok("PUT", "/v1/agent/service/register", {"Name": "Web", "ID": "Web-1",
                                                         "Address": "10.0.0.9"})
            self.addCleanup(self.ok, "PUT", "/v1/agent/service/deregister/Web-1")
            deny = self.ok("PUT", "/v1/acl/policy", {
                "Name": "anon-deny-Web", "Rules": 'service_prefix "" { policy = "read" }\n'
                                                  'service "Web" { policy = "deny" }'})
            self.addCleanup(self.ok, "DELETE", "/v1/acl/policy/" + deny["ID"])
            self.ok("PUT", "/v1/acl/token/" + anon,
                    {"Policies": [{"ID": deny["ID"]}, {"ID": nodes["ID"]}]})
            self.assertNotIn("Web-1", self.req("GET", "/v1/health/service/Web")[1])
            self.assertEqual(dig(self.d.dns_port, "web.service.registry"), "NOERROR")
            self.assertEqual(dig(self.d.dns_port, "Web.service.registry"), "NOERROR")
            self.ok("PUT", "/v1/agent/service/deregister/web-1")
            self.addCleanup(self.ok, "PUT", "/v1/agent/check/pass/ttl-web")  # runs second
            self.addCleanup(self.ok, "PUT", "/v1/agent/service/register",
                            {"Name": "web", "ID": "web-1", "Port": 80,
                             "Check": {"TTL": "60s", "CheckID": "ttl-web"}})
            self.assertEqual(dig(self.d.dns_port, "web.service.registry"), "NXDOMAIN")
            self.assertEqual(dig(self.d.dns_port, "WEB.service.registry"), "NXDOMAIN")
        finally:  # the whole token, as Consul's update takes it
            self.ok("PUT", "/v1/acl/token/" + anon, {"Description": "Anonymous Token",
                                                     "Policies": []})
            self.ok("DELETE", "/v1/acl/policy/" + pol["ID"])
            self.ok("DELETE", "/v1/acl/policy/" + nodes["ID"])

    def test_dns_under_default_deny(self):
        self.assertEqual(dig(self.d.dns_port, "web.service.registry"), "NXDOMAIN")
        self.assertEqual(dig(self.d.dns_port, "web-1.node.registry"), "NXDOMAIN")
        self.assertEqual(dig(self.d.dns_port, "1.0.0.127.in-addr.arpa", "PTR"), "NXDOMAIN")
        self.assertEqual(dig(self.d.dns_port, "db.service.registry", "SRV"), "NXDOMAIN")

    def test_python_consul_with_token(self):
        c = consul.Consul(host="127.0.0.1", port=self.d.port, token=self.tok["webnode"])
        self.assertTrue(c.agent.service.register("web", service_id="web-py", port=81))
        index, nodes = c.health.service("web")
        self.assertIn("web-py", [n["Service"]["ID"] for n in nodes])
        index, services = c.catalog.services()
        self.assertIn("web", services)
        self.assertNotIn("db", services)
        with self.assertRaises(consul.ACLPermissionDenied):
            c.agent.service.register("db", service_id="db-py")
        # this python-consul deregisters with GET and no token: refused either
        # way (a GET on a write path is 405; anonymous may not write)
        self.assertFalse(c.agent.service.deregister("web-py"))
        self.assertIn("web-py", [n["Service"]["ID"] for n in c.health.service("web")[1]])
        self.assertEqual(self.req("PUT", "/v1/agent/service/deregister/web-py", None,
                                  self.tok["webnode"])[0], 200)

    def test_forged_internal_requests_refused(self):
        forged = [
            ("GET", "/v1/internal/raft/self", None, {}),
            ("PUT", "/v1/internal/raft/announce",
             {"ID": 1, "Raft": "127.0.0.1:1", "HTTP": "10.9.9.9:80"}, {}),
            ("PUT", "/v1/internal/raft/join", {"ID": 7, "Raft": "127.0.0.1:9"}, {}),
            ("PUT", "/v1/internal/raft/hello", {}, {}),
            ("PUT", "/v1/internal/apply", "x" * 16, {}),
            # a forwarded registration under another server's node name
            ("PUT", "/v1/internal/forward", {"Name": "evil"},
             {"X-Registry-Method": "PUT", "X-Registry-URI": "/v1/agent/service/register",
              "X-Registry-Node": "other-server", "X-Registry-Node-Address": "10.0.0.9"}),
        ]
        for method, path, body, extra in forged:
            for token in (None, MGMT, self.tok["web"]):
                headers = dict(extra)
                if token:
                    headers["X-Consul-Token"] = token
                status, text, _ = self.d.request_full(
                    method, path, json.dumps(body) if body is not None and not isinstance(body, str)
                    else body, headers)
                with self.subTest(path=path, token=token):
                    self.assertEqual(status, 403, text)
        self.assertNotIn("evil", self.ok("GET", "/v1/catalog/services"))
        # the server token is a server: the same routes answer it
        status, text, _ = self.d.request_full("GET", "/v1/internal/raft/self",
                                              headers={"X-Consul-Token": SERVER})
        self.assertEqual(status, 200, text)
        # ...and a forwarded request is judged with its client's token
        hdr = {"X-Consul-Token": SERVER, "X-Registry-Method": "PUT",
               "X-Registry-URI": "/v1/agent/service/register", "X-Registry-Node": "n2",
               "X-Registry-Node-Address": "127.0.0.1"}
        status, text, _ = self.d.request_full("PUT", "/v1/internal/forward",
                                              json.dumps({"Name": "fwd"}), hdr)
        self.assertEqual(status, 403, text)
        hdr["X-Registry-Client-Token"] = MGMT
        status, text, _ = self.d.request_full("PUT", "/v1/internal/forward",
                                              json.dumps({"Name": "fwd"}), hdr)
        self.assertEqual(status, 200, text)
        self.ok("PUT", "/v1/agent/service/deregister/fwd")

    def test_registryctl_acl_verbs(self):
        ctl = self.d.ctl
        rc, out, err = ctl("--token", MGMT, "acl", "policy", "create", "--name", "cli",
                           "--rules", 'service "cli" { policy = "write" }')
        self.assertEqual(rc, 0, err)
        pid = out.split("ID:")[1].split()[0]
        rc, out, err = ctl("acl", "policy", "list", env={"REGISTRY_HTTP_TOKEN": MGMT})
        self.assertIn("cli", out)
        self.assertIn("global-management", out)
        rc, out, err = ctl("--token", MGMT, "acl", "policy", "read", "--name", "cli")
        self.assertIn(pid, out)
        rc, out, err = ctl("--token", MGMT, "--json", "acl", "token", "create",
                           "--description", "cli", "--policy", "cli")
        self.assertEqual(rc, 0, err)
        tok = json.loads(out)
        rc, out, err = ctl("--token", tok["SecretID"], "acl", "token", "self")
        self.assertIn(tok["AccessorID"], out)
        self.assertNotIn(tok["SecretID"], out)
        # the token works for every verb, and is refused where it may not
        rc, out, err = ctl("register", "--name", "cli", "--port", "1",
                           env={"REGISTRY_HTTP_TOKEN": tok["SecretID"]})
        self.assertEqual(rc, 0, err)
        rc, out, err = ctl("--token", tok["SecretID"], "deregister", "cli")
        self.assertEqual(rc, 0, err)
        rc, out, err = ctl("--token", tok["SecretID"], "acl", "token", "list")
        self.assertEqual(rc, 1)
        self.assertIn("Permission denied", err)
        rc, out, err = ctl("acl", "token", "list")  # no token: anonymous
        self.assertEqual(rc, 1)
        rc, out, err = ctl("--token", MGMT, "acl", "token", "list")
        self.assertIn(tok["AccessorID"], out)
        self.assertNotIn(tok["SecretID"], out)
        rc, out, err = ctl("--token", MGMT, "acl", "token", "read", tok["AccessorID"])
        self.assertIn("cli", out)
        self.assertEqual(ctl("--token", MGMT, "acl", "token", "delete", tok["AccessorID"])[0], 0)
        self.assertEqual(ctl("--token", MGMT, "acl", "policy", "delete", pid)[0], 0)
        rc, out, err = ctl("--token", MGMT, "acl", "policy", "create", "--name", "bad",
                           "--rules", 'service "x" { policy = "nope" }')
        self.assertEqual(rc, 1)
        self.assertIn("line 1, column 24", err)
        self.assertEqual(ctl("acl", "frobnicate")[0], 2)

    def test_audit_lines(self):
        self.req("PUT", "/v1/agent/service/register", {"Name": "db"}, self.tok["web"])
        self.req("PUT", "/v1/agent/check/pass/ttl-web", None, self.tok["web"])
        log = self.d.log()
        audit = [l for l in log.splitlines() if "module=audit" in l]
        denied = [l for l in audit if "outcome=denied" in l and
                  "accessor=" + self.tok["web.accessor"] in l and
                  'path="/v1/agent/service/register"' in l]
        self.assertTrue(denied, audit[-5:])
        self.assertIn("client=127.0.0.1:", denied[0])
        self.assertIn("method=PUT", denied[0])
        self.assertTrue(any("outcome=ok" in l and "/v1/agent/check/pass/ttl-web" in l
                            for l in audit))
        # no secret ever reaches the log
        for secret in [MGMT, SERVER] + [v for k, v in self.tok.items() if "." not in k]:
            self.assertNotIn(secret, log)


class DefaultAllowTest(AclBase):
    policy = "allow"

    def test_table(self):
        self.run_table([
            (None, "GET", "/v1/catalog/services", None, 200, ["web", "db", "filtered-not"]),
            (None, "PUT", "/v1/agent/service/register", {"Name": "free"}, 200, []),
            (None, "PUT", "/v1/agent/service/deregister/free", None, 200, []),
            (None, "GET", "/v1/agent/self", None, 200, []),
            (None, "GET", "/v1/operator/raft/configuration", None, 200, []),
            # ACL management and snapshots still need management
            (None, "GET", "/v1/acl/tokens", None, 403, []),
            (None, "PUT", "/v1/acl/policy", {"Name": "x", "Rules": ""}, 403, []),
            (None, "GET", "/v1/snapshot", None, 403, []),
            (None, "GET", "/v1/internal/raft/self", None, 403, []),
            # an explicit deny still holds
            ("nodb", "GET", "/v1/catalog/services", None, 200, ["web", "!db", "filtered"]),
            ("nodb", "PUT", "/v1/agent/check/pass/ttl-db", None, 403, []),
            ("web", "GET", "/v1/catalog/services", None, 200, ["web", "db"]),
        ])
        self.assertEqual(dig(self.d.dns_port, "db.service.registry"), "NOERROR")


class AclsOffTest(unittest.TestCase):
    def test_acl_routes_say_disabled_and_tokens_are_ignored(self):
        d = Registryd().start()
        try:
            status, text = d.request("PUT", "/v1/acl/bootstrap")
            self.assertEqual(status, 401)
            self.assertIn("ACL support disabled", text)
            status, _ = d.request("GET", "/v1/catalog/services",
                                  headers={"X-Consul-Token": "whatever"})
            self.assertEqual(status, 200)
        finally:
            d.stop()


def rfc3339(text):
    """An RFC 3339 time as Python reads it (fractions to microseconds)."""
    head, _, tail = text.partition(".")
    if tail:
        digits = tail.rstrip("Z")
        text = head + "." + (digits + "000000")[:6] + "Z"
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class TokenExpirationTest(unittest.TestCase):
    """Consul's token expiration: ExpirationTTL or ExpirationTime when a
    token is created, within acl_token_min/max_expiration_ttl (here 1s and
    the default 24h, from the server's YAML file); an expired token is, on
    every route, as if it did not exist."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        conf = os.path.join(cls.tmp.path, "registryd.yaml")
        with open(conf, "w") as f:
            f.write("acl_enabled: true\nacl_default_policy: deny\n"
                    "acl_initial_management_token: %s\n"
                    "acl_token_min_expiration_ttl: 1s\n" % MGMT)
        cls.d = Registryd(extra_args=["--config", conf]).start()
        cls.ok("PUT", "/v1/acl/policy", {"Name": "web-write",
                                         "Rules": 'service "web" { policy = "write" }'})

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.tmp.cleanup()

    req = classmethod(AclBase.req.__func__)
    ok = classmethod(AclBase.ok.__func__)

    def test_token_expires(self):
        t0 = datetime.datetime.now(datetime.timezone.utc)
        t = self.ok("PUT", "/v1/acl/token", {"Description": "short",
                                             "Policies": [{"Name": "web-write"}],
                                             "ExpirationTTL": "5s"})
        expires = rfc3339(t["ExpirationTime"])
        self.assertTrue(t["ExpirationTime"].endswith("Z"), t)
        self.assertNotIn("ExpirationTTL", t)
        self.assertLess(abs((expires - t0).total_seconds() - 5), 2.5, t)
        # exactly the TTL after CreateTime, as Consul's (CreateTime was whole
        # seconds, the expiry counted from a finer now: up to 1 s off). (5 s:
        # what follows must see it alive on a slow machine)
        self.assertEqual((expires - rfc3339(t["CreateTime"])).total_seconds(), 5)
        # Go's integer form: nanoseconds
        t2 = self.ok("PUT", "/v1/acl/token", {"ExpirationTTL": 2000000000})
        forever = self.ok("PUT", "/v1/acl/token", {"Description": "forever"})
        self.assertNotIn("ExpirationTime", forever)
        # works at once, and every rendering shows when it expires
        status, text, _ = self.req("PUT", "/v1/agent/service/register", {"Name": "web"},
                                   t["SecretID"])
        self.assertEqual(status, 200, text)
        self.assertEqual(self.ok("GET", "/v1/acl/token/self", token=t["SecretID"])
                         ["ExpirationTime"], t["ExpirationTime"])
        self.assertEqual(self.ok("GET", "/v1/acl/token/" + t["AccessorID"])["ExpirationTime"],
                         t["ExpirationTime"])
        listed = {x["AccessorID"]: x for x in self.ok("GET", "/v1/acl/tokens")}
        self.assertEqual(listed[t["AccessorID"]]["ExpirationTime"], t["ExpirationTime"])
        self.assertNotIn("ExpirationTime", listed[forever["AccessorID"]])
        time.sleep(max(0.0, (expires - datetime.datetime.now(datetime.timezone.utc))
                       .total_seconds()) + 1)
        # then as if it did not exist
        for method, path, body in (("GET", "/v1/acl/token/self", None),
                                   ("GET", "/v1/catalog/services", None),
                                   ("PUT", "/v1/agent/service/register", {"Name": "web"})):
            status, text, _ = self.req(method, path, body, t["SecretID"])
            with self.subTest(path=path):
                self.assertEqual((status, text.strip()), (403, "ACL not found"))
        # Consul's TokenRead: an expired token read by accessor is acl.ErrNotFound
        status, text, _ = self.req("GET", "/v1/acl/token/" + t["AccessorID"], token=MGMT)
        self.assertEqual((status, text.strip()), (403, "ACL not found"))
        listed = [x["AccessorID"] for x in self.ok("GET", "/v1/acl/tokens")]
        self.assertNotIn(t["AccessorID"], listed)
        self.assertNotIn(t2["AccessorID"], listed)
        self.assertIn(forever["AccessorID"], listed)
        status, text, _ = self.req("PUT", "/v1/acl/token/" + t["AccessorID"],
                                   {"Description": "again"}, MGMT)
        self.assertEqual(status, 404, text)
        # its secret stays taken; deleting it works (Consul: no expiry check)
        status, text, _ = self.req("PUT", "/v1/acl/token", {"SecretID": t["SecretID"]}, MGMT)
        self.assertEqual(status, 400, text)
        self.assertIn("already in use", text)
        self.assertTrue(self.ok("DELETE", "/v1/acl/token/" + t["AccessorID"]))

    def test_clone_keeps_expiration(self):
        t = self.ok("PUT", "/v1/acl/token", {"ExpirationTTL": "1h"})
        c = self.ok("PUT", "/v1/acl/token/%s/clone" % t["AccessorID"])
        self.assertEqual(c["ExpirationTime"], t["ExpirationTime"])
        rc, out, err = self.d.ctl("--token", MGMT, "acl", "token", "read", c["AccessorID"])
        self.assertIn("Expires:      %s\n" % t["ExpirationTime"], out)
        plain = self.ok("PUT", "/v1/acl/token", {})
        rc, out, err = self.d.ctl("--token", MGMT, "acl", "token", "read", plain["AccessorID"])
        self.assertNotIn("Expires", out)
        self.assertNotEqual(c["AccessorID"], t["AccessorID"])
        # as at create, it must be at least acl_token_min_expiration_ttl away
        short = self.ok("PUT", "/v1/acl/token", {"ExpirationTTL": "1500ms"})
        # at least 0.6 s later it has under 0.9 s left (it was made before
        # its answer came); up to 0.9 s of a busy machine before it expires
        time.sleep(0.6)
        status, text, _ = self.req("PUT", "/v1/acl/token/%s/clone" % short["AccessorID"],
                                   None, MGMT)
        self.assertEqual(status, 400, text)
        self.assertIn("ExpirationTime cannot be less than 1s in the future", text)
        time.sleep(1.2)
        status, text, _ = self.req("PUT", "/v1/acl/token/%s/clone" % short["AccessorID"],
                                   None, MGMT)
        self.assertEqual((status, text.strip()), (403, "ACL not found"))

    def test_expiration_rules(self):
        now = datetime.datetime.now(datetime.timezone.utc)

        def at(seconds, tz=datetime.timezone.utc):
            return (now + datetime.timedelta(seconds=seconds)).astimezone(tz).isoformat()

        for body, want in [
                ({"ExpirationTTL": "-1s"}, "Token Expiration TTL '-1s' should be > 0"),
                ({"ExpirationTTL": -90000000000}, "Token Expiration TTL '-1m30s' should be > 0"),
                ({"ExpirationTTL": "soon"}, "ExpirationTTL"),
                ({"ExpirationTTL": True}, "ExpirationTTL"),
                ({"ExpirationTime": "tomorrow"}, "ExpirationTime"),
                ({"ExpirationTime": 1700000000}, "ExpirationTime"),
                ({"ExpirationTTL": "1h", "ExpirationTime": at(3600)},
                 "Token Expiration TTL and Expiration Time cannot both be set"),
                ({"ExpirationTime": at(-3600)}, "ExpirationTime cannot be before CreateTime"),
                ({"ExpirationTTL": "25h"},
                 "ExpirationTime cannot be more than 24h0m0s in the future (was 25h0m0s)"),
                ({"ExpirationTTL": "500ms"},
                 "ExpirationTime cannot be less than 1s in the future (was 500ms)"),
                ({"ExpirationTime": at(48 * 3600)},
                 "ExpirationTime cannot be more than 24h0m0s in the future (was 4")]:
            status, text, _ = self.req("PUT", "/v1/acl/token", body, MGMT)
            with self.subTest(body=body):
                self.assertEqual(status, 400, text)
                self.assertIn(want, text)
        # ExpirationTime in any offset, kept in UTC
        tz = datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))
        t = self.ok("PUT", "/v1/acl/token", {"ExpirationTime": at(3600, tz)})
        self.assertTrue(t["ExpirationTime"].endswith("Z"), t)
        self.assertLess(abs((rfc3339(t["ExpirationTime"]) - now).total_seconds() - 3600), 0.01)
        path = "/v1/acl/token/" + t["AccessorID"]
        # an update may restate it (in any offset), not change or add one
        for body in ({"ExpirationTTL": "1h"}, {"ExpirationTTL": "-1s"},
                     {"ExpirationTime": at(7200)}):
            status, text, _ = self.req("PUT", path, body, MGMT)
            with self.subTest(body=body):
                self.assertEqual(status, 400, text)
                self.assertIn("Cannot change expiration time", text)
        same = rfc3339(t["ExpirationTime"]).astimezone(tz).isoformat()
        u = self.ok("PUT", path, {"Description": "d1", "ExpirationTime": same})
        self.assertEqual(u["ExpirationTime"], t["ExpirationTime"])
        u = self.ok("PUT", path, {"Description": "d2", "ExpirationTTL": "0s"})
        self.assertEqual(u["ExpirationTime"], t["ExpirationTime"])
        self.assertEqual(self.ok("GET", path)["ExpirationTime"], t["ExpirationTime"])
        plain = self.ok("PUT", "/v1/acl/token", {})
        status, text, _ = self.req("PUT", "/v1/acl/token/" + plain["AccessorID"],
                                   {"ExpirationTime": at(3600)}, MGMT)
        self.assertEqual(status, 400, text)
        self.assertIn("Cannot change expiration time", text)
        # a snapshot carries it (records read back are checked)
        snap = get_bytes(self.d, "/v1/snapshot", {"X-Consul-Token": MGMT})
        self.assertEqual(self.d.request("PUT", "/v1/snapshot", snap,
                                        {"X-Consul-Token": MGMT})[0], 200)
        self.assertEqual(self.ok("GET", path)["ExpirationTime"], t["ExpirationTime"])


class BootstrapTest(unittest.TestCase):
    """Without an initial management token, the first bootstrap wins; then
    403 with Consul's text and the index the bootstrap was applied at."""

    def test_bootstrap_once(self):
        d = Registryd(extra_args=["--acl-enabled", "--acl-default-policy", "deny"]).start()
        try:
            status, text, _ = d.request_full("PUT", "/v1/acl/bootstrap")
            self.assertEqual(status, 200, text)
            t = json.loads(text)
            self.assertEqual(len(t["SecretID"]), 36)
            self.assertEqual(t["Policies"][0]["Name"], "global-management")
            h = {"X-Consul-Token": t["SecretID"]}
            index = json.loads(d.request("GET", "/v1/acl/token/" + t["AccessorID"],
                                         headers=h)[1])["CreateIndex"]
            self.assertGreater(index, 0)
            for _ in range(2):
                status, text, _ = d.request_full("PUT", "/v1/acl/bootstrap")
                self.assertEqual(status, 403)
                self.assertIn("Permission denied", text)
                self.assertEqual(text.strip(), "Permission denied: ACL bootstrap no longer "
                                                "allowed (reset index: %d)" % index)
            # the bootstrap token manages; its secret is never shown again
            me = json.loads(d.request("GET", "/v1/acl/token/self", headers=h)[1])
            self.assertEqual(me["AccessorID"], t["AccessorID"])
            self.assertNotIn("SecretID", me)
            listed = json.loads(d.request("GET", "/v1/acl/tokens", headers=h)[1])
            self.assertNotIn(t["SecretID"], json.dumps(listed))
            self.assertIn(t["AccessorID"], json.dumps(listed))
        finally:
            d.stop()


def file_holds(path, needle):
    """Whether the file holds needle, read a piece at a time over its data
    only: the store file is as long as its map (16 GiB, sparse), and reading
    it whole took 16 GB of memory (the OOM killer took the test in CI)."""
    with open(path, "rb") as f:
        fd, end, pos, tail = f.fileno(), os.fstat(f.fileno()).st_size, 0, b""
        while pos < end:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole from here on
                return False
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
            tail = b""  # (a hole between: no needle spans it)
            while pos < hole:
                piece = os.pread(fd, min(1 << 20, hole - pos), pos)
                if not piece:
                    break
                if needle in tail + piece:
                    return True
                tail = piece[-(len(needle) - 1):]
                pos += len(piece)
            pos = hole
    return False


class PersistenceTest(unittest.TestCase):
    def test_restart_and_snapshot_restore(self):
        tmp = TempDir()
        args = ["--acl-enabled", "--acl-default-policy", "deny"]
        d = Registryd(data_dir=tmp.path, extra_args=args).start()
        try:
            boot = json.loads(d.request("PUT", "/v1/acl/bootstrap")[1])
            h = {"X-Consul-Token": boot["SecretID"]}
            pol = json.loads(d.request("PUT", "/v1/acl/policy", json.dumps(
                {"Name": "p1", "Rules": 'service "web" { policy = "write" }'}), h)[1])
            tok = json.loads(d.request("PUT", "/v1/acl/token", json.dumps(
                {"Policies": [{"ID": pol["ID"]}]}), h)[1])
            snap = get_bytes(d, "/v1/snapshot", h)
            for secret in (boot["SecretID"], tok["SecretID"]):
                self.assertNotIn(secret.encode(), snap)
            d.stop()
            # the data dir holds no secret either, only salted hashes
            for root, _, files in os.walk(tmp.path):
                for name in files:
                    for secret in (boot["SecretID"], tok["SecretID"]):
                        self.assertFalse(file_holds(os.path.join(root, name), secret.encode()),
                                         name)
            d.start()
            self.assertEqual(d.request("PUT", "/v1/acl/bootstrap")[0], 403)
            th = {"X-Consul-Token": tok["SecretID"]}
            self.assertEqual(d.request("PUT", "/v1/agent/service/register",
                                       json.dumps({"Name": "web"}), th)[0], 200)
            self.assertEqual(d.request("PUT", "/v1/agent/service/register",
                                       json.dumps({"Name": "db"}), th)[0], 403)
            # delete the token; the snapshot taken before brings it back
            self.assertEqual(d.request("DELETE", "/v1/acl/token/" + tok["AccessorID"],
                                       headers=h)[0], 200)
            self.assertEqual(d.request("GET", "/v1/acl/token/self", headers=th)[0], 403)
            self.assertEqual(d.request("PUT", "/v1/snapshot", snap, th)[0], 403)
            self.assertEqual(d.request("PUT", "/v1/snapshot", snap, h)[0], 200)
            self.assertEqual(d.request("GET", "/v1/acl/token/self", headers=th)[0], 200)
        finally:
            d.stop()
            tmp.cleanup()


class CheckTargetTest(unittest.TestCase):
    """Where checks may go: refused at registration (400 with the reason) and
    again when the probe connects (a name resolved then)."""

    def wait_output(self, d, check_id, want, timeout=10):
        deadline = time.monotonic() + timeout
        out = None
        while time.monotonic() < deadline:
            status, text = d.request("GET", "/v1/agent/checks")
            out = json.loads(text).get(check_id, {}).get("Output", "")
            if want in out:
                return out
            time.sleep(0.1)
        self.fail("check %s output %r never held %r" % (check_id, out, want))

    def test_refused_at_registration(self):
        d = Registryd().start()
        try:
            for check, why in [
                    ({"HTTP": "http://169.254.169.254/latest/meta-data/", "Interval": "1s"},
                     "check_deny_cidrs"),
                    ({"HTTP": "http://%s/v1/agent/service/deregister/victim" % d.addr,
                      "Interval": "1s"}, "own listener"),
                    ({"HTTP": "http://localhost:%d/v1/status/leader" % d.port,
                      "Interval": "1s"}, "own listener"),
                    ({"TCP": "169.254.169.254:80", "Interval": "1s"}, "check_deny_cidrs"),
                    ({"TCP": "127.0.0.1:%d" % d.dns_port, "Interval": "1s"}, "own listener"),
                    ({"UDP": "127.0.0.1:%d" % d.dns_port, "Interval": "1s"}, "own listener"),
                    # the unspecified address reaches this host's loopback
                    ({"HTTP": "http://0.0.0.0:%d/v1/agent/service/register" % d.port,
                      "Method": "PUT", "Body": "{\"Name\":\"injected\"}", "Interval": "1s"},
                     "own listener"),
                    ({"TCP": "[fe80::1]:22", "Interval": "1s"}, "check_deny_cidrs"),
                    ({"GRPC": "[::ffff:169.254.169.254]:80", "Interval": "1s"},
                     "check_deny_cidrs")]:
                status, text = d.request("PUT", "/v1/agent/service/register",
                                         json.dumps({"Name": "ssrf", "Check": check}))
                with self.subTest(check=check):
                    self.assertEqual(status, 400, text)
                    self.assertIn(why, text)
            self.assertNotIn("ssrf", json.loads(d.request("GET", "/v1/catalog/services")[1]))
            # "0" is a name (resolved when probed: 0.0.0.0), refused then
            status, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "zero", "ID": "zero", "Check": {
                    "CheckID": "z", "HTTP": "http://0:%d/v1/agent/service/register" % d.port,
                    "Method": "PUT", "Body": "{\"Name\":\"injected\"}", "Interval": "1s"}}))
            self.assertEqual(status, 200, text)
            self.assertIn("own listener", self.wait_output(d, "z", "refused"))
            self.assertNotIn("injected",
                             json.loads(d.request("GET", "/v1/catalog/services")[1]))
            # an ordinary target is fine
            status, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "ok", "Check": {"TCP": "127.0.0.1:9", "Interval": "1s"}}))
            self.assertEqual(status, 200, text)
        finally:
            d.stop()

    def test_refused_at_connect_time(self):
        name = socket.gethostname()
        try:
            addr = socket.getaddrinfo(name, 80, socket.AF_INET)[0][4][0]
        except OSError:
            self.skipTest("the host name does not resolve")
        if not addr.startswith("127."):
            self.skipTest("the host name does not resolve to loopback")
        # only 10.0.0.0/8 allowed: the name passes registration, its address
        # (loopback) is refused when the probe resolves it
        d = Registryd(extra_args=["--check-allow-cidrs", "10.0.0.0/8"]).start()
        try:
            status, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "byname", "ID": "byname", "Checks": [
                    {"CheckID": "h", "HTTP": "http://%s:%d/v1/status/leader" % (name, d.port),
                     "Interval": "1s"},
                    {"CheckID": "t", "TCP": "%s:9" % name, "Interval": "1s"}]}))
            self.assertEqual(status, 200, text)
            self.assertIn("own listener", self.wait_output(d, "h", "refused"))
            self.assertIn("not in check_allow_cidrs", self.wait_output(d, "t", "refused"))
            status, text = d.request("GET", "/v1/agent/checks")
            for cid in ("h", "t"):
                self.assertEqual(json.loads(text)[cid]["Status"], "critical")
            # a literal outside the allow list is refused at once
            status, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "lit", "Check": {"TCP": "127.0.0.1:9", "Interval": "1s"}}))
            self.assertEqual(status, 400, text)
            self.assertIn("check_allow_cidrs", text)
        finally:
            d.stop()

    def test_bad_lists_refused_at_start(self):
        p = subprocess.run([REGISTRYD, "--dev", "--check-deny-cidrs", "10.0.0.0/33",
                            "--check-config"], capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--check-deny-cidrs: ", p.stderr)


class ReadmeTest(unittest.TestCase):
    """README's "Securing a cluster" works as written: its YAML and its shell
    block, run as they stand against a real server."""

    def test_securing_a_cluster(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(root, "README.md")) as f:
            text = f.read()
        section = text[text.index("## Securing a cluster"):]
        section = section[:section.index("\n## ", 5)]
        yaml_block = section.split("```yaml\n")[1].split("```")[0]
        sh_block = section.split("```sh\n")[1].split("```")[0]
        tmp = TempDir()
        try:
            token_file = os.path.join(tmp.path, "server-token")
            with open(token_file, "w") as f:
                f.write("0f6e2c4a-5b1d-4e8f-9a7c-3d2b1a0e9f8d\n")
            conf = os.path.join(tmp.path, "registryd.yaml")
            with open(conf, "w") as f:
                f.write(yaml_block.replace("/etc/registryd/server-token", token_file))
            d = Registryd(extra_args=["--config", conf]).start()
            try:
                env = dict(os.environ)
                env["PATH"] = os.path.dirname(REGISTRYCTL) + ":" + env["PATH"]
                env["REGISTRY_HTTP_ADDR"] = d.addr
                env.pop("REGISTRY_HTTP_TOKEN", None)
                p = subprocess.run(["bash", "-euo", "pipefail", "-c", sh_block], env=env,
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                self.assertIn("refused: the web token may not register db", p.stdout)
                # web is registered, db is not; anonymous reads (and DNS) see web
                status, text = d.request("GET", "/v1/catalog/services")
                self.assertEqual(status, 200)
                self.assertIn("web", json.loads(text))
                self.assertNotIn("db", json.loads(text))
                self.assertEqual(d.request("PUT", "/v1/agent/service/register",
                                           json.dumps({"Name": "x"}))[0], 403)
                self.assertEqual(dig(d.dns_port, "web.service.registry"), "NOERROR")
            finally:
                d.stop()
        finally:
            tmp.cleanup()


def get_bytes(d, path, headers):
    req = urllib.request.Request("http://%s%s" % (d.addr, path), headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


if __name__ == "__main__":
    unittest.main()
