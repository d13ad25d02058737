#!/usr/bin/python3
"""ACLs on a three-server cluster: ACL writes and client writes sent to a
follower reach the leader over the server-to-server channel (which carries
acl_server_token) and are judged there with the client's token; ACL state
replicates; a server with another server token cannot join."""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Registryd, TempDir, start_cluster  # noqa: E402

MGMT = "aaaaaaaa-1111-4222-8333-bbbbbbbbbbbb"
SERVER = "cluster-server-token-0123456789"
ACL = ["--acl-enabled", "--acl-default-policy", "deny", "--acl-server-token", SERVER,
       "--acl-initial-management-token", MGMT]


def call(d, method, path, body=None, token=None):
    headers = {"X-Consul-Token": token} if token else {}
    return d.request(method, path, json.dumps(body) if body is not None else None, headers,
                     timeout=10)


class AclClusterTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.servers = []
        start_cluster(self.tmp.path, 3, extra=ACL, servers=self.servers)

    def tearDown(self):
        for d in self.servers:
            if d.proc is not None:
                d.stop(check=False)
        self.tmp.cleanup()

    def roles(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, text = call(self.servers[0], "GET", "/v1/status/leader")
            leader = json.loads(text) if status == 200 else ""
            if leader:
                st, conf = call(self.servers[0], "GET", "/v1/operator/raft/configuration",
                                token=MGMT)
                if st == 200:
                    addr = [s for s in json.loads(conf)["Servers"] if s["Leader"]]
                    if addr:
                        for d in self.servers:
                            st, me = call(d, "GET", "/v1/internal/raft/self", token=SERVER)
                            if st == 200 and json.loads(me)["Raft"] == addr[0]["Address"]:
                                return d, [x for x in self.servers if x is not d]
            time.sleep(0.1)
        self.fail("no leader")

    def eventually(self, fn, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if fn():
                return
            time.sleep(0.1)
        self.fail("never happened")

    def test_through_a_follower(self):
        leader, followers = self.roles()
        f = followers[0]
        status, text = call(f, "PUT", "/v1/acl/policy",
                            {"Name": "web", "Rules": 'service "web" { policy = "write" }'}, MGMT)
        self.assertEqual(status, 200, text)
        status, text = call(f, "PUT", "/v1/acl/token", {"Policies": [{"Name": "web"}]}, MGMT)
        self.assertEqual(status, 200, text)
        secret = json.loads(text)["SecretID"]
        # replicated: every server knows the token
        for d in self.servers:
            self.eventually(lambda d=d: call(d, "GET", "/v1/acl/token/self", token=secret)[0]
                            == 200)
        # a registration built on a follower, judged with the client's token
        status, text = call(f, "PUT", "/v1/agent/service/register", {"Name": "web"}, secret)
        self.assertEqual(status, 200, text)
        status, text = call(f, "PUT", "/v1/agent/service/register", {"Name": "db"}, secret)
        self.assertEqual(status, 403, text)
        self.eventually(lambda: "web" in json.loads(
            call(leader, "GET", "/v1/catalog/services", token=MGMT)[1]))
        # a write forwarded whole to the leader keeps its client's token
        status, text = call(f, "PUT", "/v1/agent/service/deregister/web", None, secret)
        self.assertEqual(status, 200, text)
        status, text = call(f, "DELETE", "/v1/operator/raft/peer?id=999", None, secret)
        self.assertEqual(status, 403, text)
        status, text = call(f, "DELETE", "/v1/operator/raft/peer?id=999", None, None)
        self.assertEqual(status, 403, text)
        # the initial management token took the bootstrap (Consul's leader
        # applies it through the bootstrap request): refused through every
        # follower, by the leader; a bootstrap through a follower that works
        # is AclBootstrapClusterTest's
        for d in followers:
            status, text = call(d, "PUT", "/v1/acl/bootstrap")
            self.assertEqual((status, text.strip()),
                             (403, "Permission denied: ACL bootstrap no longer allowed "
                                   "(reset index: 0)"))

    def test_a_new_token_works_at_once_through_the_follower_that_made_it(self):
        """A token created through a follower was "ACL not found" there for
        a heartbeat or two (the follower had not applied it yet), also for
        writes and ?consistent reads the leader answers: as Consul, which
        forwards before it resolves, the leader judges a token a follower
        does not know. One nobody knows is still refused."""
        _, followers = self.roles()
        f = followers[0]
        status, text = call(f, "PUT", "/v1/acl/policy", {"Name": "all", "Rules":
                            'service_prefix "" { policy = "write" }\n'
                            'node_prefix "" { policy = "write" }\n'
                            'agent_prefix "" { policy = "read" }'}, MGMT)
        self.assertEqual(status, 200, text)
        refused = []
        for i in range(8):
            status, text = call(f, "PUT", "/v1/acl/token", {"Policies": [{"Name": "all"}]}, MGMT)
            self.assertEqual(status, 200, text)
            secret = json.loads(text)["SecretID"]
            steps = [("PUT", "/v1/agent/service/register", {"Name": "web", "ID": "web-%d" % i}),
                     ("PUT", "/v1/catalog/register", {"Node": "n%d" % i, "Address": "10.0.0.1",
                                                      "Service": {"Service": "ext",
                                                                  "ID": "ext-%d" % i}}),
                     ("GET", "/v1/health/service/web?consistent", None),
                     ("GET", "/v1/catalog/service/web", None)]
            # the agent's routes describe this server: judged here once it
            # has the token (they went to the leader, which answered for
            # itself); first every other round, while the token is new here
            steps.insert(0 if i % 2 else len(steps), ("GET", "/v1/agent/self", None))
            for method, path, body in steps:
                status, text = call(f, method, path, body, secret)
                if status != 200:
                    refused.append((i, path, status, text.strip()))
                elif path == "/v1/agent/self":
                    self.assertEqual(json.loads(text)["Config"]["NodeName"],
                                     "s%d" % self.servers.index(f), text)
        self.assertEqual(refused, [])
        t0 = time.monotonic()
        status, text = call(f, "GET", "/v1/agent/self", token="no-such-token")
        self.assertEqual((status, text.strip()), (403, "ACL not found"))
        self.assertLess(time.monotonic() - t0, 5)
        status, text = call(f, "GET", "/v1/catalog/service/web", token="no-such-token")
        self.assertEqual((status, text.strip()), (403, "ACL not found"))
        status, text = call(f, "PUT", "/v1/agent/service/register", {"Name": "x"}, "nope")
        self.assertEqual((status, text.strip()), (403, "ACL not found"))

    def test_announced_node_names_are_checked(self):
        """A server's announcement carries its node name and address, which
        the others show for it; a name that is not a node name or an
        address that is not an IP is dropped (the server is then named by
        its raft address), never stored."""
        leader, followers = self.roles()
        me = json.loads(call(followers[0], "GET", "/v1/internal/raft/self", token=SERVER)[1])

        def names():
            return [m["Name"] for m in
                    json.loads(call(leader, "GET", "/v1/agent/members", token=MGMT)[1])]

        def announce(**fields):
            body = dict({"ID": me["ID"], "Raft": me["Raft"], "HTTP": me["HTTP"]}, **fields)
            status, text = call(leader, "PUT", "/v1/internal/raft/announce", body, SERVER)
            self.assertEqual(status, 200, text)

        # each server announces itself once it knows a leader; the
        # follower's own announcement landing after one of ours replaced it
        self.eventually(lambda: {"s0", "s1", "s2"} <= set(names()))
        for i, bad in enumerate(({"Node": "bad name!", "Address": "127.0.0.1"},
                                 {"Node": "n" * 200, "Address": "127.0.0.1"},
                                 {"Node": "good", "Address": "not-an-ip"},
                                 {"Node": 7, "Address": "127.0.0.1"})):
            announce(Node="good-%d" % i, Address="127.0.0.1")
            self.eventually(lambda i=i: "good-%d" % i in names())
            announce(**bad)
            self.eventually(lambda: me["Raft"] in names())
            self.assertFalse({"bad name!", "n" * 200, "good"} & set(names()), bad)

    def test_a_server_with_another_token_cannot_join(self):
        leader, _ = self.roles()
        other = Registryd(data_dir=os.path.join(self.tmp.path, "intruder"))
        other.extra = ["--join", leader.addr, "--node", "intruder", "--acl-enabled",
                       "--acl-server-token", "not-the-cluster-token-0000"]
        other.start(wait=False)
        self.servers.append(other)
        self.eventually(lambda: "outcome=denied" in leader.log(), timeout=30)
        time.sleep(1)  # (a join let in would be in the configuration by now)
        status, text = call(leader, "GET", "/v1/operator/raft/configuration", token=MGMT)
        self.assertEqual(status, 200)
        self.assertEqual(len(json.loads(text)["Servers"]), 3, text)

    def test_leave_with_acls(self):
        """PUT /v1/agent/leave on a follower with ACLs on: the follower asks
        the leader with the server token; the leader refused it 403 (no
        operator:write), the follower stayed a dead voter, and a second
        leave left the cluster without a leader. Without agent:write the
        leave itself is refused, and nothing stops."""
        leader, followers = self.roles()
        f = followers[0]
        status, text = call(f, "PUT", "/v1/agent/leave")
        self.assertEqual(status, 403, text)
        self.assertIsNone(f.proc.poll())
        raft = json.loads(call(f, "GET", "/v1/internal/raft/self", token=SERVER)[1])["Raft"]
        status, text = call(f, "PUT", "/v1/agent/leave", token=MGMT)
        self.assertEqual(status, 200, text)
        self.assertEqual(f.proc.wait(15), 0, f.log())
        f.proc = None
        status, text = call(leader, "GET", "/v1/operator/raft/configuration", token=MGMT)
        self.assertEqual(status, 200, text)
        self.assertNotIn(raft, [s["Address"] for s in json.loads(text)["Servers"]], text)
        status, text = call(leader, "PUT", "/v1/agent/service/register",
                            {"Name": "after", "ID": "after-1"}, MGMT)
        self.assertEqual(status, 200, text)


class AclBootstrapClusterTest(unittest.TestCase):
    """Without an initial management token: a bootstrap sent to a follower
    is done by the leader, once; then every server refuses another with
    Consul's answer and the index the bootstrap was applied at."""

    def test_bootstrap_through_a_follower(self):
        tmp = TempDir()
        servers = []
        try:
            start_cluster(tmp.path, 3, extra=ACL[:-2], servers=servers)
            deadline, leader = time.monotonic() + 15, ""
            while not leader and time.monotonic() < deadline:
                status, text = call(servers[0], "GET", "/v1/status/leader")
                leader = json.loads(text) if status == 200 else ""
                time.sleep(0.1)
            self.assertTrue(leader, "no leader")
            raft = {id(d): json.loads(call(d, "GET", "/v1/internal/raft/self",
                                           token=SERVER)[1])["Raft"] for d in servers}
            followers = [d for d in servers if raft[id(d)] != leader]
            self.assertEqual(len(followers), 2)
            status, text = call(followers[0], "PUT", "/v1/acl/bootstrap")
            self.assertEqual(status, 200, text)
            boot = json.loads(text)
            status, text = call(followers[0], "GET", "/v1/acl/token/" + boot["AccessorID"],
                                token=boot["SecretID"])
            self.assertEqual(status, 200, text)
            index = json.loads(text)["CreateIndex"]
            for d in followers[::-1] + [d for d in servers if d not in followers]:
                status, text = call(d, "PUT", "/v1/acl/bootstrap")
                self.assertEqual((status, text.strip()),
                                 (403, "Permission denied: ACL bootstrap no longer allowed "
                                       "(reset index: %d)" % index))
        finally:
            for d in servers:
                if d.proc is not None:
                    d.stop(check=False)
            tmp.cleanup()


if __name__ == "__main__":
    unittest.main()
