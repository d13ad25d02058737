#!/usr/bin/python3
"""The raft port against hostile peers (issue 14): three real servers, in
three flavours (mutual TLS, a cluster key, neither). Probes built from
libraft 0.15's wire format (src/uv_tcp_connect.c, src/uv_encoding.c) are sent
to the leader's and a follower's raft port: a handshake and AppendEntries at a
much higher term from an unknown id (crashed libraft), a handshake address
without its NUL (over-read in libraft), the target's own id and an
AppendEntries whose entry count overruns its header (crashed libraft), a
handshake declaring a 300 MB address (allocated by libraft), and a flood of RequestVote/AppendEntries at
rising terms (held leadership away from the real servers). After each: every
server runs, no sanitizer report, the same leader, a write through a follower
succeeds, and no server's RSS jumped.

Each probe is sent both raw and, where the flavour has credentials, by a
peer that authenticates (our certificate, the right key), so that the
handshake checks behind authentication are exercised too."""
import hashlib
import hmac
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import certs  # noqa: E402
from harness import TempDir, TlsRegistryd, agreed_leader, leader_of, start_cluster  # noqa: E402

# Under ASan, freed memory waits in a 256 MB quarantine: RSS would measure
# that (~0.8 MB per TLS handshake), not what the server holds. Later options
# win, so a CI's own ASAN_OPTIONS keep the rest of their effect.
os.environ["ASAN_OPTIONS"] = ":".join(
    o for o in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=1") if o)

APPEND_ENTRIES, REQUEST_VOTE = 1, 3
KEY = b"k" * 24 + b"-raft-port-test-key-0123456789"
# what servers show each other on /v1/internal/... with the key (acl.c)
PROOF = hmac.new(KEY, b"registryd internal routes v1", hashlib.sha256).hexdigest()
UNKNOWN_ID = 0x5EED0000DEADBEEF
RSS_SLACK_KB = 8 * 1024
VSZ_SLACK_KB = 128 * 1024  # a new malloc arena or thread stack, not 300 MB
MAX_TERM = 10 ** 5  # the probes' terms start at 10**6


def handshake(server_id, address=b"127.0.0.1:1", nul=True, declared=None):
    """libraft's handshake: protocol 1, id, address length, address (NUL,
    padded to 8)."""
    a = address + (b"\0" if nul else b"")
    if nul:
        a += b"\0" * (-len(a) % 8)
    return struct.pack("<QQQ", 1, server_id, len(a) if declared is None else declared) + a


def message(kind, header):
    return struct.pack("<QQ", kind, len(header)) + header


def append_entries(term):
    # term, prev index, prev term, commit, no entries; libraft sizes the
    # header at six words
    return message(APPEND_ENTRIES, struct.pack("<QQQQQQ", term, 0, 0, 0, 0, 0))


def request_vote(term, candidate):
    return message(REQUEST_VOTE, struct.pack("<QQQQQ", term, candidate, 10 ** 9, term, 0))


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def mem_kb(d, field):
    with open("/proc/%d/status" % d.proc.pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory(servers):
    """Resident and virtual size: an allocation libraft never touches (a
    declared 300 MB address) shows in VmSize only."""
    return {d: (mem_kb(d, "VmRSS"), mem_kb(d, "VmSize")) for d in servers}


def term_of(d):
    status, text = d.request("GET", "/v1/agent/self", timeout=5)
    return int(json.loads(text)["Stats"]["raft"]["term"])


class RaftPortBase:
    flavour = None  # "tls", "key" or "none"

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.servers = []
        extra, factory = [], None
        if cls.flavour == "tls":
            # HTTPS only, as a TLS cluster runs (harness.TlsRegistryd); small
            # snapshots, so that a follower that missed writes is sent one
            # (InstallSnapshot: megabytes through the TLS proxy)
            cls.certs = certs.make_certs(os.path.join(cls.tmp.path, "certs"))
            extra = ["--raft-snapshot-threshold", "64"]
            factory = lambda data_dir: TlsRegistryd(cls.certs, data_dir=data_dir)  # noqa: E731
        elif cls.flavour == "key":
            path = os.path.join(cls.tmp.path, "cluster.key")
            with open(path, "wb") as f:
                f.write(KEY + b"\n")
            extra = ["--cluster-key-file", path]
        try:
            start_cluster(cls.tmp.path, 3, extra=extra, servers=cls.servers, factory=factory)
        except Exception:
            cls.tearDownClass()
            raise
        cls.writes = 0

    @classmethod
    def tearDownClass(cls):
        problems = []
        for d in cls.servers:
            if d.proc is not None:
                try:
                    d.stop(check=True)
                except AssertionError as e:
                    problems.append(str(e)[:4000])
        cls.tmp.cleanup()
        if problems:
            raise AssertionError("\n".join(problems))

    # ---- cluster state ----------------------------------------------------

    def live(self):
        return [d for d in self.servers if d.proc is not None]

    def leader(self, timeout=15):
        d = agreed_leader(self.live(), self.raft_addr, timeout)
        if d is None:
            self.fail("no agreed leader within %ds" % timeout)
        return d

    def raft_self(self, d):
        """d's {ID, Raft, HTTP}: an internal route, which with a key answers
        the key's proof only."""
        headers = {"X-Consul-Token": PROOF} if self.flavour == "key" else {}
        status, text = d.request("GET", "/v1/internal/raft/self", headers=headers)
        self.assertEqual(status, 200, text)
        return json.loads(text)

    def raft_addr(self, d):
        return self.raft_self(d)["Raft"]

    def raft_port(self, d):
        host, port = self.raft_addr(d).rsplit(":", 1)
        return host, int(port)

    def write_through_follower(self, leader):
        follower = next(d for d in self.live() if d is not leader)
        type(self).writes += 1
        sid = "probe-%d" % self.writes
        status, text = follower.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "probe", "ID": sid, "Port": 1000 + self.writes}), timeout=10)
        self.assertEqual(status, 200, "write through a follower: %s" % text)
        return sid

    def assert_healthy(self, leader, mem_before, what):
        for d in self.servers:
            self.assertIsNone(d.proc.poll(), "%s: a server exited:\n%s" % (what, d.log()[-4000:]))
            self.assertEqual(d.sanitizer_errors(), [], what)
        # no server ever follows a stranger, nor loses its leader
        expected = self.raft_addr(leader)
        for _ in range(10):
            for d in self.servers:
                self.assertEqual(leader_of(d), expected, "%s: leader seen by %s" % (what, d.addr))
            time.sleep(0.1)
        self.assertIs(self.leader(), leader, "%s: the leader changed" % what)
        for d in self.servers:
            self.assertLess(term_of(d), MAX_TERM, "%s: a stranger's term was adopted" % what)
        self.write_through_follower(leader)
        after = memory(self.servers)
        for d in self.servers:
            rss, vsz = (a - b for a, b in zip(after[d], mem_before[d]))
            self.assertLess(rss, RSS_SLACK_KB, "%s: RSS grew by %d kB" % (what, rss))
            self.assertLess(vsz, VSZ_SLACK_KB, "%s: VmSize grew by %d kB" % (what, vsz))

    def drops(self, d, reason):
        return d.log().count("reason=%s " % reason)

    # ---- connections ------------------------------------------------------

    def connect(self, target, authenticate=True, cert=None, key=KEY):
        """A socket to target's raft port: authenticated as the flavour
        wants (unless authenticate is false), else raw."""
        s = socket.create_connection(self.raft_port(target), timeout=5)
        if not authenticate or self.flavour == "none":
            return s
        if self.flavour == "key":
            self.key_exchange(s, key)
            return s
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.certs["ca"])
        cert = cert or (self.certs["server_cert"], self.certs["server_key"])
        if cert != "none":
            ctx.load_cert_chain(*cert)
        return ctx.wrap_socket(s, server_hostname="server.dc1.registry")

    @staticmethod
    def key_exchange(s, key):
        cn = os.urandom(32)
        s.sendall(b"RGDRAFT1" + cn)
        reply = recv_exact(s, 64)
        sn, smac = reply[:32], reply[32:]
        proof = hmac.new(key, b"server" + cn + sn, hashlib.sha256).digest()
        if key == KEY:
            assert hmac.compare_digest(proof, smac), "the server failed the key exchange"
        s.sendall(hmac.new(key, b"client" + cn + sn, hashlib.sha256).digest())

    @staticmethod
    def send_and_wait_close(s, data, wait=1.0):
        """Send data; wait (bounded) for the server to close."""
        try:
            s.sendall(data)
            s.settimeout(wait)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and s.recv(4096):
                pass
        except (OSError, ssl.SSLError):
            pass
        finally:
            s.close()

    # ---- probes -----------------------------------------------------------

    def probe_unknown_id_higher_term(self, target, auth):
        for i in range(5):
            s = self.connect(target, auth)
            self.send_and_wait_close(s, handshake(UNKNOWN_ID + i) + append_entries(10 ** 6 + i),
                                     wait=0.3)

    def probe_own_id(self, target, auth):
        # the target's own id (public: /v1/operator/raft/configuration) and
        # an AppendEntries declaring a million entries in a 48-byte header:
        # libraft read past it (SIGSEGV, release build too; found by probing)
        own = self.raft_self(target)["ID"]
        s = self.connect(target, auth)
        self.send_and_wait_close(s, handshake(own) + struct.pack("<QQ", APPEND_ENTRIES, 48) +
                                 struct.pack("<6Q", 1, 0, 0, 0, 10 ** 6, 0))

    def probe_address_without_nul(self, target, auth):
        s = self.connect(target, auth)
        self.send_and_wait_close(s, handshake(UNKNOWN_ID, b"127.0.0.1:19999", nul=False) +
                                 append_entries(10 ** 6))

    def probe_huge_address(self, target, auth):
        s = self.connect(target, auth)
        # 16 MB of the address: libraft would store them (RSS); we drop at
        # the length, so the send may fail
        self.send_and_wait_close(s, handshake(UNKNOWN_ID, declared=300 * 1024 * 1024) +
                                 b"1" * (16 * 1024 * 1024))

    def probe_vote_flood(self, target, auth):
        term = 2 * 10 ** 6
        end = time.monotonic() + 3
        for i in range(60):  # 20 a second for 3 s
            if time.monotonic() > end:
                break
            t0 = time.monotonic()
            term += 1
            msg = request_vote(term, UNKNOWN_ID) if i % 2 else append_entries(term)
            try:
                s = self.connect(target, auth)
                s.sendall(handshake(UNKNOWN_ID) + msg)
                s.close()
            except (OSError, ssl.SSLError):
                pass
            time.sleep(max(0, 0.05 - (time.monotonic() - t0)))

    def run_probes(self, auth):
        probes = [self.probe_unknown_id_higher_term, self.probe_own_id,
                  self.probe_address_without_nul,
                  self.probe_huge_address, self.probe_vote_flood]
        leader = self.leader()
        follower = next(d for d in self.servers if d is not leader)
        for target, role in ((leader, "leader"), (follower, "follower")):
            for probe in probes:
                what = "%s on the %s (%s, %s)" % (probe.__name__, role, self.flavour,
                                                  "authenticated" if auth else "raw")
                rss_before = memory(self.servers)
                probe(target, auth)
                self.assert_healthy(leader, rss_before, what)

    def test_probes_raw(self):
        self.run_probes(auth=False)


class AuthenticatedProbes:
    """The probes again from a peer that passed authentication (TLS or the
    cluster key): the handshake checks behind it still hold. Not for the
    flavour without credentials, where the raw run is the same thing."""

    def test_probes_authenticated(self):
        leader = self.leader()
        follower = next(d for d in self.servers if d is not leader)
        before = self.drops(follower, "not_a_member") + self.drops(follower, "handshake")
        self.run_probes(auth=True)
        after = self.drops(follower, "not_a_member") + self.drops(follower, "handshake")
        self.assertGreater(after, before, "the follower logged no dropped handshake")


class TLSRaftPortTest(AuthenticatedProbes, RaftPortBase, unittest.TestCase):
    flavour = "tls"

    def bad_peer(self, cert, what):
        leader = self.leader()
        follower = next(d for d in self.servers if d is not leader)
        for target in (leader, follower):
            rss_before = memory(self.servers)
            before = self.drops(target, "tls")
            time.sleep(1.1)  # one line a second per reason
            try:
                s = self.connect(target, cert=cert)
                self.send_and_wait_close(s, handshake(UNKNOWN_ID) + append_entries(10 ** 7))
            except (OSError, ssl.SSLError):
                pass  # refused during the handshake: as good
            deadline = time.monotonic() + 5
            while self.drops(target, "tls") == before and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertGreater(self.drops(target, "tls"), before,
                               "%s: no log line for the dropped connection" % what)
            self.assert_healthy(leader, rss_before, what)

    def test_no_certificate(self):
        self.bad_peer("none", "no certificate")

    def test_rogue_ca(self):
        self.bad_peer((self.certs["rogue_server_cert"], self.certs["rogue_server_key"]),
                      "a certificate from another CA")

    def test_wrong_name(self):
        self.bad_peer((self.certs["wrongname_cert"], self.certs["wrongname_key"]),
                      "our CA's certificate without the server name")


    def test_zz_snapshot_through_the_proxy(self):
        leader = self.leader()
        follower = next(d for d in self.servers if d is not leader)
        follower.stop()
        meta = {"k%02d" % i: chr(97 + i % 26) * 400 for i in range(50)}  # ~20 kB a write
        ids = []
        for i in range(150):
            status, text = leader.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "big", "ID": "big-%d" % i, "Port": 1, "Meta": meta}), timeout=10)
            self.assertEqual(status, 200, text)
            ids.append("big-%d" % i)
        follower.start(wait=False)
        # libraft resends a snapshot whose answer it did not get after 30 s
        # (a first one may go down the connection to the stopped follower)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            try:
                status, text = follower.request("GET", "/v1/agent/services?stale", timeout=2)
                if status == 200 and set(ids) <= set(json.loads(text)):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            self.fail("the restarted follower did not catch up:\n" + follower.log()[-3000:])
        self.assertIs(self.leader(), leader)
        self.write_through_follower(leader)


class KeyRaftPortTest(AuthenticatedProbes, RaftPortBase, unittest.TestCase):
    flavour = "key"

    def test_wrong_key(self):
        leader = self.leader()
        follower = next(d for d in self.servers if d is not leader)
        for target in (leader, follower):
            rss_before = memory(self.servers)
            before = self.drops(target, "cluster_key")
            time.sleep(1.1)
            s = self.connect(target, key=b"w" * 40)
            self.send_and_wait_close(s, handshake(UNKNOWN_ID) + append_entries(10 ** 7))
            deadline = time.monotonic() + 5
            while self.drops(target, "cluster_key") == before and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertGreater(self.drops(target, "cluster_key"), before)
            self.assert_healthy(leader, rss_before, "wrong key")

    def test_internal_routes_need_the_key(self):
        """Without TLS and ACLs, the key guards /v1/internal/... too: before,
        anyone who reached the API could add a voter (enough of them and the
        cluster has no quorum), propose commands or pose as a server."""
        leader = self.leader()
        peers = json.loads(leader.request("GET", "/v1/status/peers")[1])
        proof = PROOF
        stranger = json.dumps({"ID": 987654321, "Raft": "127.0.0.1:9"})
        for token in (None, "", "0" * 64, proof[:-1] + "x"):
            headers = {"X-Consul-Token": token} if token is not None else {}
            # a request forwarded as if from node "posed"
            posed = dict(headers, **{"X-Registry-Method": "PUT",
                                     "X-Registry-URI": "/v1/agent/service/register",
                                     "X-Registry-Node": "posed",
                                     "X-Registry-Node-Address": "10.9.9.9"})
            for d in (leader, next(d for d in self.servers if d is not leader)):
                for method, path, body, hdrs in (
                        ("PUT", "/v1/internal/raft/join", stranger, headers),
                        ("PUT", "/v1/internal/apply", "[]", headers),
                        ("PUT", "/v1/internal/raft/announce", stranger, headers),
                        ("PUT", "/v1/internal/forward", '{"Name": "posed"}', posed)):
                    status, text = d.request(method, path, body, headers=hdrs, timeout=10)
                    self.assertEqual(status, 403, "%s %s with %r: %s" % (method, path, token, text))
                    self.assertIn("cluster_key_file", text)
        self.assertEqual(json.loads(leader.request("GET", "/v1/status/peers")[1]), peers)
        self.assertEqual(json.loads(leader.request("GET", "/v1/catalog/service/posed")[1]), [])
        # the key's proof is what the servers send each other
        status, text = leader.request("PUT", "/v1/internal/raft/join", "{}",
                                      headers={"X-Consul-Token": proof})
        self.assertEqual(status, 400, text)  # past the door: judged as a join now
        # raft/self reads what operator/raft/configuration shows anyone
        # (registryctl leave asks it)
        self.assertEqual(leader.request("GET", "/v1/internal/raft/self")[0], 200)
        self.write_through_follower(leader)

    def test_one_address_cannot_hold_every_slot(self):
        """64 idle connections from one address, kept up, took every slot
        for peers still authenticating, so that a restarted server could not
        rejoin (a candidate for as long as they were held, in a probe; here
        the leader usually wins the race to the new listener). Now one
        address holds at most 8 of them: the cap is seen to drop the rest
        and the restarted server rejoins. Stopping a server while they were
        held also crashed it (a forward's retry timer outlived its request);
        every run of this test did, before that fix."""
        leader = self.leader()
        follower = next(d for d in self.servers if d is not leader)
        ports = [self.raft_port(d) for d in self.servers]
        stop = threading.Event()

        def hold():
            held = []
            while not stop.is_set():  # new ones first, then the old go: no gap
                fresh = []
                for port in ports:
                    for _ in range(64):
                        s = socket.socket()
                        s.bind(("127.0.0.2", 0))
                        s.settimeout(0.2)
                        try:
                            s.connect(port)
                            fresh.append(s)
                        except OSError:
                            s.close()
                for s in held:
                    s.close()
                held = fresh
                stop.wait(0.5)
            for s in held:
                s.close()

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            time.sleep(1)
            follower.stop()
            follower.start()
            deadline = time.monotonic() + 20
            while leader_of(follower) != self.raft_addr(leader):
                self.assertLess(time.monotonic(), deadline,
                                "the restarted server found no leader while one address "
                                "held connections")
                time.sleep(0.2)
            self.assertIn("from one address", leader.log() + follower.log())
        finally:
            stop.set()
            holder.join()
        self.write_through_follower(self.leader())

    def test_zz_replicates_and_survives_leader_kill(self):
        leader = self.leader()
        sid = self.write_through_follower(leader)
        deadline = time.monotonic() + 5
        def has(d):
            return sid in json.loads(d.request("GET", "/v1/agent/services?stale")[1])
        while time.monotonic() < deadline and not all(has(d) for d in self.servers):
            time.sleep(0.05)
        for d in self.servers:
            self.assertTrue(has(d), "not replicated")
        leader.kill9()
        new = self.leader(timeout=20)
        self.assertIsNot(new, leader)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.write_through_follower(new)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


class PlainRaftPortTest(RaftPortBase, unittest.TestCase):
    flavour = "none"

    def test_silent_and_trickling_peers_time_out(self):
        leader = self.leader()
        follower = next(d for d in self.servers if d is not leader)
        before = self.drops(follower, "deadline")
        silent = self.connect(follower)
        trickle = self.connect(follower)
        hs = handshake(UNKNOWN_ID)
        closed = {}
        start = time.monotonic()
        for i in range(80):  # a byte every ~150 ms for up to 12 s: past the 5 s deadline
            for name, s in (("silent", silent), ("trickle", trickle)):
                if name in closed:
                    continue
                try:
                    if name == "trickle" and i < len(hs) - 1:  # never the last byte
                        s.sendall(hs[i:i + 1])
                    s.settimeout(0.05)
                    if s.recv(1) == b"":
                        closed[name] = time.monotonic() - start
                except socket.timeout:
                    pass
                except OSError:
                    closed[name] = time.monotonic() - start
            if len(closed) == 2:
                break
            time.sleep(0.05)
        silent.close()
        trickle.close()
        self.assertEqual(sorted(closed), ["silent", "trickle"], "not dropped: %s" % closed)
        for name, t in closed.items():
            self.assertGreater(t, 4, "%s dropped before the deadline" % name)
        self.assertGreater(self.drops(follower, "deadline"), before)


if __name__ == "__main__":
    unittest.main()
