#!/usr/bin/python3
"""The DNS interface, asked by dig (UDP and TCP) and by raw packets.

Every server here runs REGISTRY_DNS_WORKERS DNS threads (default 2; CTest
runs this file and test_dns_compat.py once more with 1)."""
import json
import os
import socket
import struct
import subprocess
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from harness import Registryd, TempDir, recv_until_closed

DNS_WORKERS = os.environ.get("REGISTRY_DNS_WORKERS", "2")


def dns_registryd(**kw):
    """A Registryd with --dns-workers DNS_WORKERS (before any extra_args)."""
    kw["extra_args"] = ["--dns-workers", DNS_WORKERS] + list(kw.get("extra_args", ()))
    return Registryd(**kw)


def dig(port, name, qtype="A", *opts):
    p = subprocess.run(["dig", "-p", str(port), "@127.0.0.1", "+norec", "+time=2", "+tries=1",
                        name, qtype] + list(opts), capture_output=True, text=True, timeout=20)
    return p.stdout


def answers(text, qtype):
    """The rdata of the answer section's records of qtype."""
    out, section = [], None
    for line in text.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            section = "answer"
        elif line.startswith(";;"):
            section = None if line.strip() == "" or "SECTION" in line else section
        elif section == "answer" and line.strip():
            f = line.split()
            if f[3] == qtype:
                out.append(" ".join(f[4:]))
    return sorted(out)


def status(text):
    for line in text.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    return None


def flags(text):
    for line in text.splitlines():
        if line.startswith(";; flags:"):
            return line.split(";; flags:")[1].split(";")[0].split()
    return []


class DnsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = dns_registryd().start()
        reg = [
            {"Name": "web", "ID": "web-1", "Address": "10.0.0.5", "Port": 8080, "Tags": ["v1"]},
            {"Name": "web", "ID": "web-2", "Address": "fd00::7", "Port": 8081, "Tags": ["v2"],
             "Weights": {"Passing": 5, "Warning": 1}},
            {"Name": "web", "ID": "web-3", "Address": "10.0.0.6", "Port": 8082,
             "Check": {"TTL": "60s"}},
        ] + [{"Name": "big", "ID": "big-%d" % i, "Address": "10.1.%d.%d" % (i // 200, i % 200),
              "Port": 9000 + i} for i in range(50)]
        for body in reg:
            status_code, text = cls.d.request("PUT", "/v1/agent/service/register",
                                              json.dumps(body))
            assert status_code == 200, text

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def dig(self, name, qtype="A", *opts):
        return dig(self.d.dns_port, name, qtype, *opts)

    def test_a_aaaa_srv(self):
        self.assertEqual(answers(self.dig("web.service.registry."), "A"), ["10.0.0.5"])
        self.assertEqual(answers(self.dig("web.service.registry.", "AAAA"), "AAAA"), ["fd00::7"])
        out = self.dig("web.service.registry.", "SRV")
        self.assertEqual(status(out), "NOERROR")
        self.assertIn("aa", flags(out))
        self.assertEqual(answers(out, "SRV"),
                         ["1 1 8080 0a000005.addr.dc1.registry.",
                          "1 5 8081 fd000000000000000000000000000007.addr.dc1.registry."])
        # the targets resolve, and their records ride along in the additional section
        self.assertIn("0a000005.addr.dc1.registry. 0 IN A 10.0.0.5", " ".join(out.split()))
        self.assertEqual(answers(self.dig("0a000005.addr.dc1.registry."), "A"), ["10.0.0.5"])
        self.assertEqual(answers(self.dig("0a000005.addr.registry."), "A"), ["10.0.0.5"])

    def test_tcp(self):
        out = self.dig("web.service.registry.", "SRV", "+tcp")
        self.assertIn("(TCP)", out)
        self.assertEqual(len(answers(out, "SRV")), 2)

    def test_tag_and_rfc2782_forms(self):
        self.assertEqual(answers(self.dig("v1.web.service.registry."), "A"), ["10.0.0.5"])
        self.assertEqual(answers(self.dig("_web._v2.service.registry.", "SRV"), "SRV"),
                         ["1 5 8081 fd000000000000000000000000000007.addr.dc1.registry."])
        self.assertEqual(len(answers(self.dig("_web._tcp.service.registry.", "SRV"), "SRV")), 2)
        out = self.dig("v9.web.service.registry.")
        self.assertEqual(status(out), "NXDOMAIN")  # no instance with the tag: Consul's answer
        self.assertEqual(answers(out, "A"), [])

    def test_case_insensitive_and_question_echoed(self):
        out = self.dig("WEB.Service.REGISTRY.")
        self.assertEqual(answers(out, "A"), ["10.0.0.5"])
        self.assertIn(";WEB.Service.REGISTRY.", out)

    def test_nxdomain_refused_nodata(self):
        out = self.dig("nosuch.service.registry.")
        self.assertEqual(status(out), "NXDOMAIN")
        self.assertIn("SOA", out)
        self.assertEqual(status(self.dig("nonsense.registry.")), "NXDOMAIN")
        self.assertEqual(status(self.dig("example.com.")), "REFUSED")
        self.assertEqual(status(self.dig("registry.example.")), "REFUSED")
        out = self.dig("web.service.registry.", "TXT")
        self.assertEqual(status(out), "NOERROR")
        self.assertIn("SOA", out)  # NODATA carries the SOA (RFC 2308)
        self.assertIn("SOA", self.dig("registry.", "SOA"))

    def test_catalog_nodes_by_name_and_address(self):
        """Nodes registered through the catalog: .node. by name in any case
        (found from their keys alone, not by decoding every node), and PTR
        by their address (decoding only the nodes whose text may hold it: a
        Meta key named NodeAddress misleads neither way)."""
        for body in ({"Node": "Ext-Mixed", "Address": "10.7.0.1"},
                     {"Node": "decoy", "Address": "10.7.0.2",
                      "NodeMeta": {"NodeAddress": "10.7.0.3"}},
                     {"Node": "realthree", "Address": "10.7.0.3",
                      "NodeMeta": {"NodeAddress": "10.7.0.9"}}):
            status_code, text = self.d.request("PUT", "/v1/catalog/register", json.dumps(body))
            self.assertEqual(status_code, 200, text)
        for name in ("ext-mixed", "EXT-MIXED", "Ext-Mixed"):
            self.assertEqual(answers(self.dig("%s.node.registry." % name), "A"), ["10.7.0.1"])
        self.assertEqual(status(self.dig("ext-mixe.node.registry.")), "NXDOMAIN")
        self.assertEqual(answers(self.dig("1.0.7.10.in-addr.arpa.", "PTR"), "PTR"),
                         ["Ext-Mixed.node.dc1.registry."])
        self.assertEqual(answers(self.dig("3.0.7.10.in-addr.arpa.", "PTR"), "PTR"),
                         ["realthree.node.dc1.registry."])
        self.assertEqual(status(self.dig("9.0.7.10.in-addr.arpa.", "PTR")), "NXDOMAIN")
        # a name no DNS label can hold (over 63 bytes) is left out of a PTR
        # answer; it took the valid names with it (TC, no answers)
        for name in ("a" * 70, "okname"):  # the bad one first (by ID)
            status_code, text = self.d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": name, "ID": name + "-1", "Address": "10.7.1.1", "Port": 1}))
            self.assertEqual(status_code, 200, text)
        for opt in ("+notcp", "+tcp"):
            out = self.dig("1.1.7.10.in-addr.arpa.", "PTR", opt)
            self.assertNotIn("tc", flags(out))
            self.assertEqual(answers(out, "PTR"), ["okname.service.registry."])

    def test_node_names_follow_nodes_that_come_and_go(self):
        """A query for a node is answered from a map of node names kept per
        DNS worker (a miss walked every node's instance: 110 ms each at
        10,000 nodes). The map follows nodes that come, go and come back,
        by catalog record and by instance, in any case."""
        reg = lambda body: self.assertEqual(
            self.d.request("PUT", "/v1/catalog/register", json.dumps(body))[0], 200)
        dereg = lambda body: self.assertEqual(
            self.d.request("PUT", "/v1/catalog/deregister", json.dumps(body))[0], 200)
        for _ in range(4):  # each worker builds its map (random source ports)
            self.assertEqual(status(self.dig("Comes-Back.node.registry.")), "NXDOMAIN")
        reg({"Node": "Comes-Back", "Address": "10.8.0.1"})
        for _ in range(4):
            self.assertEqual(answers(self.dig("comes-back.node.registry."), "A"), ["10.8.0.1"])
        dereg({"Node": "Comes-Back"})
        for _ in range(4):
            self.assertEqual(status(self.dig("comes-back.node.registry.")), "NXDOMAIN")
        # back, with an instance, at another address
        reg({"Node": "Comes-Back", "Address": "10.8.0.3",
             "Service": {"ID": "cb-1", "Service": "cb", "Port": 1}})
        for _ in range(4):
            self.assertEqual(answers(self.dig("COMES-BACK.node.registry."), "A"), ["10.8.0.3"])
        dereg({"Node": "Comes-Back"})
        # two nodes that differ in case: the one spelt as asked answers
        reg({"Node": "Twin-01", "Address": "10.8.1.1"})
        reg({"Node": "twin-01", "Address": "10.8.1.2"})
        for _ in range(4):
            self.assertEqual(answers(self.dig("twin-01.node.registry."), "A"), ["10.8.1.2"])
        dereg({"Node": "Twin-01"})
        dereg({"Node": "twin-01"})

    def test_srv_over_udp_holds_what_fits(self):
        """The room kept for each SRV target's address is what the record
        takes (its owner a pointer to the target), not the most it could:
        55 IPv4 targets (HEX.addr.dc1.registry.) need 3,812 bytes and all
        fit in a 4,096-byte UDP answer (fewer did)."""
        for i in range(55):
            body = {"Name": "sixty", "ID": "sixty-%d" % i, "Address": "10.5.1.%d" % (i + 1),
                    "Port": 80}
            self.assertEqual(self.d.request("PUT", "/v1/agent/service/register",
                                            json.dumps(body))[0], 200)
        self.addCleanup(lambda: [self.d.request("PUT", "/v1/agent/service/deregister/sixty-%d" % i)
                                 for i in range(55)])
        out = self.dig("sixty.service.registry.", "SRV", "+bufsize=4096", "+ignore")
        self.assertNotIn("tc", flags(out))
        self.assertEqual(len(answers(out, "SRV")), 55)
        self.assertEqual(len([l for l in out.split("ADDITIONAL SECTION:")[-1].splitlines()
                              if "\tA\t" in l or " A " in l]), 55)

    def test_dotted_node_names_and_tags(self):
        """A node's name may be a host's full name, and PTR gives it back
        as NAME.node.DC.DOMAIN; a tag may hold dots too. Consul joins the
        labels before the kind (dns.go); they were NXDOMAIN here."""
        self.assertEqual(self.d.request("PUT", "/v1/catalog/register", json.dumps(
            {"Node": "host.example", "Address": "10.6.0.9",
             "Service": {"ID": "dot-1", "Service": "dotted", "Port": 7,
                         "Address": "10.6.0.10", "Tags": ["v1.2", "x"]}}))[0], 200)
        self.addCleanup(self.d.request, "PUT", "/v1/catalog/deregister",
                        json.dumps({"Node": "host.example"}))
        self.assertEqual(answers(self.dig("9.0.6.10.in-addr.arpa.", "PTR"), "PTR"),
                         ["host.example.node.dc1.registry."])
        for name in ("host.example.node.dc1.registry.", "HOST.Example.node.registry."):
            self.assertEqual(answers(self.dig(name), "A"), ["10.6.0.9"], name)
        self.assertEqual(answers(self.dig("v1.2.dotted.service.registry."), "A"), ["10.6.0.10"])
        self.assertEqual(answers(self.dig("x.dotted.service.dc1.registry."), "A"), ["10.6.0.10"])
        self.assertEqual(status(self.dig("v1.3.dotted.service.registry.")), "NXDOMAIN")
        self.assertEqual(status(self.dig("example.node.registry.")), "NXDOMAIN")

    def test_truncation_over_udp_complete_over_tcp(self):
        # as Consul: a random udp_answer_limit (3) records without EDNS, no TC
        out = self.dig("big.service.registry.", "SRV", "+noedns", "+ignore")
        self.assertNotIn("tc", flags(out))
        self.assertEqual(len(answers(out, "SRV")), 3)
        out = self.dig("big.service.registry.", "SRV", "+tcp")
        self.assertEqual(len(answers(out, "SRV")), 50)
        # 4096 bytes hold nearly all, each SRV with its target's address (as
        # Consul trims): SRV records alone left the client a query per target
        out = self.dig("big.service.registry.", "SRV", "+bufsize=4096", "+ignore")
        self.assertNotIn("tc", flags(out))
        srv = answers(out, "SRV")
        self.assertGreaterEqual(len(srv), 40)
        extra = [line.split()[0] for line in out.split(";; ADDITIONAL SECTION:")[1].splitlines()
                 if "\tA\t" in line or " A " in line]
        self.assertEqual(sorted(r.split()[3] for r in srv), sorted(extra))

    def test_health_and_deregistration_show_at_once(self):
        self.assertNotIn("10.0.0.6", answers(self.dig("web.service.registry."), "A"))
        self.d.request("PUT", "/v1/agent/check/pass/service:web-3")
        self.assertIn("10.0.0.6", answers(self.dig("web.service.registry."), "A"))
        self.d.request("PUT", "/v1/agent/service/maintenance/web-3?enable=true")
        self.assertNotIn("10.0.0.6", answers(self.dig("web.service.registry."), "A"))
        self.d.request("PUT", "/v1/agent/service/maintenance/web-3?enable=false")
        self.assertIn("10.0.0.6", answers(self.dig("web.service.registry."), "A"))
        self.d.request("PUT", "/v1/agent/service/deregister/web-3")
        self.assertNotIn("10.0.0.6", answers(self.dig("web.service.registry."), "A"))

    def raw(self, packet, tcp=False):
        if tcp:
            with socket.create_connection(("127.0.0.1", self.d.dns_port), timeout=2) as s:
                s.sendall(struct.pack("!H", len(packet)) + packet)
                try:
                    head = s.recv(2)
                    return s.recv(65535) if len(head) == 2 else None
                except socket.timeout:
                    return None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            s.sendto(packet, ("127.0.0.1", self.d.dns_port))
            try:
                return s.recv(65535)
            except socket.timeout:
                return None

    def test_malformed_packets(self):
        q = b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        name = b"\x03web\x07service\x08registry\x00\x00\x01\x00\x01"
        cases = [
            (b"\x12", None),                                    # short header: dropped
            (q[:11], None),
            (b"\xab\xcd\x80\x00" + q[4:] + name, None),          # a response: dropped
            (q[:4] + b"\x00\x02" + q[6:] + name, 1),             # two questions
            (q[:6] + b"\x00\x01" + q[8:] + name, 1),             # an answer in a query
            (q + b"\x3fweb\x00\x00\x01\x00\x01", 1),             # label past the end
            (q + b"\xc0\x0c\x00\x01\x00\x01", 1),                # pointer to itself
            (q + b"\xc0\x20\x00\x01\x00\x01", 1),                # pointer forwards
            (q + b"\x80abc\x00\x00\x01\x00\x01", 1),             # reserved label type
            (q + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01", 1),  # name > 255
            (q + name[:-2], 1),                                  # cut class
            (q + name + b"junk", 1),                             # trailing bytes
            (q[:10] + b"\x00\x01" + name + b"\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00", 1),
            (q[:2] + b"\x10\x00" + q[4:] + name, 4),             # opcode STATUS: NOTIMP
        ]
        for packet, rcode in cases:
            for tcp in (False, True):
                with self.subTest(packet=packet[:24], tcp=tcp):
                    resp = self.raw(packet, tcp)
                    if rcode is None:
                        self.assertIsNone(resp)
                    else:
                        self.assertIsNotNone(resp)
                        self.assertEqual(resp[:2], packet[:2])  # id echoed
                        self.assertTrue(resp[2] & 0x80)
                        self.assertEqual(resp[3] & 0x0F, rcode)
        # and the server still answers
        self.assertEqual(answers(self.dig("web.service.registry."), "A"), ["10.0.0.5"])


class NodeAddressTest(unittest.TestCase):
    def test_instance_without_address_answers_its_nodes_address(self):
        """An instance without Address is reached at the node it was
        registered at (as the catalog says), not at whichever server answers."""
        tmp = TempDir()
        d = dns_registryd(data_dir=tmp.path, host="127.0.0.2")
        try:
            d.start()
            code, text = d.request("PUT", "/v1/agent/service/register",
                                   json.dumps({"Name": "bare", "ID": "bare-1", "Port": 7}))
            self.assertEqual(code, 200, text)
            d.stop()
            d.host = "127.0.0.1"  # the same server, now answering from another address
            d.start()
            row = json.loads(d.request("GET", "/v1/catalog/service/bare")[1])[0]
            self.assertEqual(row["Address"], "127.0.0.2")
            self.assertEqual(answers(dig(d.dns_port, "bare.service.registry."), "A"),
                             ["127.0.0.2"])
        finally:
            d.stop(check=False)
            tmp.cleanup()


class DnsTcpFillTest(unittest.TestCase):
    """Over TCP an answer that does not fit 64 KiB is filled and trimmed (as
    UDP trims to its size), not sent empty with TC."""

    N = 2000  # SRV records of ~40 bytes each: more than 64 KiB

    @classmethod
    def setUpClass(cls):
        cls.d = dns_registryd().start()

        def register(i):
            body = {"Name": "huge", "ID": "huge-%d" % i, "Port": 10000 + i,
                    "Address": "10.2.%d.%d" % (i // 250, i % 250)}
            return cls.d.request("PUT", "/v1/agent/service/register", json.dumps(body))[0]

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(register, range(cls.N)))
        assert codes == [200] * cls.N, set(codes)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_tcp_fills_64k_without_tc(self):
        q = struct.pack(">HHHHHH", 0x4242, 0, 1, 0, 0, 0)
        for label in ("huge", "service", "registry"):
            q += bytes([len(label)]) + label.encode()
        q += b"\x00" + struct.pack(">HH", 33, 1)
        with socket.create_connection(("127.0.0.1", self.d.dns_port), timeout=10) as s:
            s.sendall(struct.pack(">H", len(q)) + q)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "connection closed early")
                buf += chunk
        msg = buf[2:]
        flags_, qd, an, ns, ar = struct.unpack(">HHHHH", msg[2:12])
        self.assertFalse(flags_ & 0x0200, "TC set over TCP")
        self.assertEqual(flags_ & 0xF, 0)
        self.assertGreater(an, 700)        # most of what 64 KiB holds, with the
        self.assertEqual(ar, an)           # address of each target (no EDNS here)
        self.assertLess(an, self.N)        # trimmed: not every record fits
        self.assertGreater(len(msg), 50000)  # room kept for addresses is a bound
        self.assertLessEqual(len(msg), 65535)
        # dig parses it: a well-formed message with as many SRV records
        # (asked without EDNS, as above: an OPT record takes room of its own)
        out = dig(self.d.dns_port, "huge.service.registry.", "SRV", "+tcp", "+noedns")
        self.assertNotIn("tc", flags(out))
        self.assertEqual(len(answers(out, "SRV")), an)
        # UDP with EDNS: trimmed to the advertised size, as before
        out = dig(self.d.dns_port, "huge.service.registry.", "SRV", "+bufsize=4096", "+ignore")
        self.assertGreater(len(answers(out, "SRV")), 10)
        self.assertLess(len(answers(out, "SRV")), an)

    def test_answers_go_out_after_the_client_shuts_its_side(self):
        """A client may send its queries and shut its side (SHUT_WR): the
        answers queued still go out whole, then the connection closes. The
        server freed the connection at EOF: a 64 KiB answer was cut at 16
        KiB. Valid queries before a message that is none are answered too
        (they got nothing)."""
        q = struct.pack(">HHHHHH", 0x4243, 0, 1, 0, 0, 0)
        for label in ("huge", "service", "registry"):
            q += bytes([len(label)]) + label.encode()
        q += b"\x00" + struct.pack(">HH", 33, 1)
        framed = struct.pack(">H", len(q)) + q
        for tail in (b"", struct.pack(">H", 5) + b"\x00" * 5):  # then EOF / then no query
            with socket.create_connection(("127.0.0.1", self.d.dns_port), timeout=10) as s:
                s.sendall(framed * 3 + tail)
                s.shutdown(socket.SHUT_WR)
                buf = recv_until_closed(s)
            got = 0
            while len(buf) >= 2:
                n = struct.unpack(">H", buf[:2])[0]
                self.assertGreaterEqual(len(buf), 2 + n, "an answer cut short")
                self.assertGreater(struct.unpack(">H", buf[2 + 6:2 + 8])[0], 700)  # ANCOUNT
                buf = buf[2 + n:]
                got += 1
            self.assertEqual(got, 3, tail)

    def test_client_that_does_not_read_costs_bounded_memory(self):
        # each 40-byte query asks for a 64 KiB answer: a client that sends
        # thousands and reads none made the server queue them all (600 MB
        # for 320 KB of queries, until the idle timeout)
        q = struct.pack(">HHHHHH", 0x4243, 0, 1, 0, 0, 0)
        for label in ("huge", "service", "registry"):
            q += bytes([len(label)]) + label.encode()
        q += b"\x00" + struct.pack(">HH", 33, 1)
        blob = (struct.pack(">H", len(q)) + q) * 4000
        rss = lambda: int(next(line.split()[1] for line in open(
            "/proc/%d/status" % self.d.proc.pid) if line.startswith("VmRSS:")))
        before = rss()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", self.d.dns_port))
        s.setblocking(False)
        sent, deadline = 0, time.monotonic() + 3
        while sent < len(blob) and time.monotonic() < deadline:
            try:
                sent += s.send(blob[sent:])
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(1)
        grown_kib = rss() - before
        s.close()
        self.assertGreater(sent, 64 * 1024)  # many queries reached the server
        self.assertLess(grown_kib, 32 * 1024, "%d KiB queued for one client" % grown_kib)
        out = dig(self.d.dns_port, "huge.service.registry.", "SRV", "+tcp")
        self.assertGreater(len(answers(out, "SRV")), 700)
        # a client that reads gets every answer: reading pauses and resumes
        with socket.create_connection(("127.0.0.1", self.d.dns_port), timeout=10) as s:
            s.sendall(blob[:50 * (2 + len(q))])
            got, buf = 0, b""
            while got < 50:
                chunk = s.recv(1 << 20)
                self.assertTrue(chunk, "closed after %d answers" % got)
                buf += chunk
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack(">H", buf[:2])[0]:
                    n = struct.unpack(">H", buf[:2])[0]
                    self.assertEqual(buf[2:4], q[:2])  # the query's ID
                    buf, got = buf[2 + n:], got + 1
            self.assertEqual(buf, b"")


class DnsARecordLimitTest(unittest.TestCase):
    """--dns-a-record-limit (Consul's a_record_limit): a few A/AAAA records
    over any transport. Behind BIND, a set of more than 100 records of one
    type was SERVFAIL (its max-records-per-type)."""

    def test_a_records_capped_on_every_transport(self):
        d = dns_registryd(extra_args=["--dns-a-record-limit", "100"]).start()
        try:
            def register(i):
                body = {"Name": "wide", "ID": "wide-%d" % i, "Port": 1000 + i,
                        "Address": "10.4.%d.%d" % (i // 250, i % 250)}
                return d.request("PUT", "/v1/agent/service/register", json.dumps(body))[0]

            with ThreadPoolExecutor(8) as pool:
                self.assertEqual(set(pool.map(register, range(150))), {200})
            out = dig(d.dns_port, "wide.service.registry.", "A", "+tcp")
            self.assertEqual(len(answers(out, "A")), 100, out)
            self.assertNotIn("tc", flags(out))
            out = dig(d.dns_port, "wide.service.registry.", "A", "+bufsize=4096")
            self.assertLessEqual(len(answers(out, "A")), 100, out)
            self.assertNotIn("tc", flags(out))
            first = set(answers(out, "A"))
            seen = set(first)
            for _ in range(5):  # a random few each time
                seen |= set(answers(dig(d.dns_port, "wide.service.registry.", "A", "+tcp"), "A"))
            self.assertGreater(len(seen), 100)
            # SRV answers are not A records: as many as fit
            out = dig(d.dns_port, "wide.service.registry.", "SRV", "+tcp")
            self.assertEqual(len(answers(out, "SRV")), 150, out)
        finally:
            d.stop()


class DnsTcpHoldTest(unittest.TestCase):
    """One client cannot hold every DNS TCP connection: one address gets at
    most a quarter of them (more are closed as soon as accepted), and a query
    trickled a byte at a time is cut 5 s after its first byte."""

    @classmethod
    def setUpClass(cls):
        cls.d = dns_registryd().start()
        code, text = cls.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "web", "ID": "web-1", "Address": "10.0.0.5", "Port": 80}))
        assert code == 200, text

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_one_address_cannot_take_every_connection(self):
        held = []
        try:
            for _ in range(600):  # more than the 512 the server keeps open
                s = socket.socket()
                s.connect(("127.0.0.1", self.d.dns_port))
                held.append(s)
            time.sleep(0.5)
            # another address gets an answer while they are held ...
            out = subprocess.run(["dig", "-p", str(self.d.dns_port), "@127.0.0.1", "-b",
                                  "127.0.0.2", "+tcp", "+time=3", "+tries=1",
                                  "web.service.registry.", "A"],
                                 capture_output=True, text=True, timeout=20).stdout
            self.assertEqual(answers(out, "A"), ["10.0.0.5"], out)
            # ... and most of the flood was closed at once: a closed one reads EOF
            closed = 0
            for s in held:
                s.setblocking(False)
                try:
                    closed += s.recv(1) == b""
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    closed += 1
            self.assertGreaterEqual(closed, 600 - 512 // 4 - 8)
        finally:
            for s in held:
                s.close()

    def test_trickled_query_is_cut(self):
        q = struct.pack(">HHHHHH", 0x4244, 0, 1, 0, 0, 0) + b"\x03web\x07service\x08registry\x00" \
            + struct.pack(">HH", 1, 1)
        msg = struct.pack(">H", len(q)) + q
        with socket.create_connection(("127.0.0.1", self.d.dns_port), timeout=2) as s:
            start, sent, closed_at = time.monotonic(), 0, None
            while sent < len(msg) and time.monotonic() - start < 15:
                try:
                    s.sendall(msg[sent:sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed_at = time.monotonic() - start
                    break
                sent += 1
                s.settimeout(1)
                try:
                    if s.recv(1) == b"":
                        closed_at = time.monotonic() - start
                        break
                except socket.timeout:
                    pass
        self.assertLess(sent, len(msg), "the whole trickled query was read")
        self.assertIsNotNone(closed_at)
        self.assertLess(closed_at, 9)
        # a query sent whole is answered as before
        self.assertEqual(answers(dig(self.d.dns_port, "web.service.registry.", "A", "+tcp"), "A"),
                         ["10.0.0.5"])


if __name__ == "__main__":
    unittest.main()
