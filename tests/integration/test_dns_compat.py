#!/usr/bin/python3
"""DNS answers as Consul gives them, asked by dig: UDP answers filled with
what fits (udp_answer_limit without EDNS, the advertised size with it), TC
only with dns_enable_truncate; names and tags without case; NXDOMAIN when no
instance can answer; a CNAME for instances addressed by host name."""
import json
import socket
import struct
import subprocess
import unittest

from harness import Registryd
from test_dns import DNS_WORKERS, answers, dig, dns_registryd, flags, status


def register(d, bodies):
    for body in bodies:
        code, text = d.request("PUT", "/v1/agent/service/register", json.dumps(body))
        assert code == 200, text


# ---- raw DNS messages, for what dig cannot send or does not show ----------

def wire_name(name):
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".") if x) + b"\0"


def opt_rr(options=b"", payload=4096, version=0):
    """An OPT record (RFC 6891) carrying options (already encoded)."""
    return b"\0" + struct.pack(">HHBBHH", 41, payload, 0, version, 0, len(options)) + options


def ecs_option(family, source, addr, scope=0):
    """A Client Subnet option (RFC 7871 6)."""
    data = struct.pack(">HBB", family, source, scope) + addr
    return struct.pack(">HH", 8, len(data)) + data


def raw_query(name, qtype=1, opcode=0, opt=None, qid=0x5151, an=b"", ns=b"", nan=0, nns=0):
    head = struct.pack(">HHHHHH", qid, opcode << 11, 1, nan, nns, 1 if opt is not None else 0)
    return head + wire_name(name) + struct.pack(">HH", qtype, 1) + an + ns + (opt or b"")


def exchange(port, packet, tcp=False):
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(struct.pack(">H", len(packet)) + packet)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return buf[2:]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(packet, ("127.0.0.1", port))
        return s.recv(65535)


def skip_name(msg, off):
    while True:
        n = msg[off]
        if n >= 0xC0:
            return off + 2
        off += 1 + n
        if n == 0:
            return off


def parse_reply(msg):
    """{id, opcode, rcode (with the OPT's upper bits), qd, an, ns, ar,
    question (name wire bytes, or None), opt (None or {payload, options:
    [(code, data)]})}."""
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", msg[:12])
    r = {"id": qid, "opcode": (flags >> 11) & 0xF, "rcode": flags & 0xF, "qd": qd, "an": an,
         "ns": ns, "ar": ar, "question": None, "opt": None}
    off = 12
    for _ in range(qd):
        end = skip_name(msg, off)
        r["question"] = msg[off:end]
        off = end + 4
    for i in range(an + ns + ar):
        off = skip_name(msg, off)
        rtype, payload, ttl, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        rdata = msg[off + 10:off + 10 + rdlen]
        off += 10 + rdlen
        if rtype == 41 and i >= an + ns:
            options, o = [], 0
            while o + 4 <= len(rdata):
                code, olen = struct.unpack(">HH", rdata[o:o + 4])
                options.append((code, rdata[o + 4:o + 4 + olen]))
                o += 4 + olen
            r["opt"] = {"payload": payload, "options": options}
            r["rcode"] |= (ttl >> 24) << 4
    assert off == len(msg), "trailing bytes in the reply"
    return r


BIG = [{"Name": "big", "ID": "big-%d" % i, "Address": "10.1.0.%d" % (i + 1), "Port": 9000 + i}
       for i in range(60)]


class DnsCompatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = dns_registryd().start()
        register(cls.d, BIG + [
            {"Name": "Web", "ID": "Web-1", "Address": "10.0.0.5", "Port": 80, "Tags": ["V1"]},
            {"Name": "sick", "ID": "sick-1", "Address": "10.0.0.9", "Port": 80,
             "Check": {"TTL": "60s"}},
            {"Name": "ext", "ID": "ext-1", "Address": "db.example.com", "Port": 5432},
            {"Name": "meta", "ID": "meta-1", "Address": "10.0.0.7", "Port": 80,
             "Meta": {"version": "2.1", "zone": "a"}}])
        code, text = cls.d.request("PUT", "/v1/catalog/register", json.dumps(
            {"Node": "ext-node", "Address": "192.0.2.10",
             "Service": {"Service": "legacy", "Port": 80}}))
        assert code == 200, text

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def dig(self, name, qtype="A", *opts):
        return dig(self.d.dns_port, name, qtype, *opts)

    def test_udp_without_edns_gets_a_random_three(self):
        seen = set()
        for _ in range(8):
            out = self.dig("big.service.registry.", "A", "+noedns", "+ignore")
            got = answers(out, "A")
            self.assertEqual(len(got), 3, out)
            self.assertNotIn("tc", flags(out))
            seen.update(got)
        self.assertGreater(len(seen), 3)  # shuffled, not always the same three
        out = self.dig("big.service.registry.", "SRV", "+noedns", "+ignore")
        self.assertEqual(len(answers(out, "SRV")), 3)

    def test_edns_fills_what_fits(self):
        out = self.dig("big.service.registry.", "A", "+bufsize=1232", "+ignore")
        self.assertEqual(len(answers(out, "A")), 60)  # 60 A records fit in 1232 bytes
        out = self.dig("big.service.registry.", "SRV", "+bufsize=1232", "+ignore")
        n = len(answers(out, "SRV"))
        self.assertGreater(n, 3)
        self.assertLess(n, 60)
        self.assertNotIn("tc", flags(out))
        self.assertEqual(len(answers(self.dig("big.service.registry.", "SRV", "+tcp"), "SRV")), 60)

    def test_enable_truncate_sets_tc(self):
        d = dns_registryd(extra_args=["--dns-enable-truncate", "--dns-udp-answer-limit", "5"]).start()
        try:
            register(d, BIG[:10])
            out = dig(d.dns_port, "big.service.registry.", "A", "+noedns", "+ignore")
            self.assertEqual(len(answers(out, "A")), 5)
            self.assertIn("tc", flags(out))
            out = dig(d.dns_port, "big.service.registry.", "A")  # dig retries over TCP
            self.assertEqual(len(answers(out, "A")), 10)
        finally:
            d.stop()

    def test_names_and_tags_without_case(self):
        self.assertEqual(answers(self.dig("web.service.registry."), "A"), ["10.0.0.5"])
        self.assertEqual(answers(self.dig("WEB.service.registry."), "A"), ["10.0.0.5"])
        self.assertEqual(answers(self.dig("v1.web.service.registry."), "A"), ["10.0.0.5"])
        self.assertEqual(len(answers(self.dig("_web._v1.service.registry.", "SRV"), "SRV")), 1)
        # HTTP ?tag= too
        code, text = self.d.request("GET", "/v1/health/service/Web?tag=v1")
        self.assertEqual([e["Service"]["ID"] for e in json.loads(text)], ["Web-1"])

    def test_nxdomain_when_nothing_answers(self):
        out = self.dig("sick.service.registry.")  # its only instance is critical
        self.assertEqual(status(out), "NXDOMAIN")
        self.assertIn("SOA", out)
        self.assertEqual(status(self.dig("nosuchtag.web.service.registry.")), "NXDOMAIN")
        self.assertEqual(status(self.dig("sick.service.registry.", "SRV")), "NXDOMAIN")

    def test_host_name_address_is_a_cname(self):
        out = self.dig("ext.service.registry.")
        self.assertEqual(status(out), "NOERROR")
        self.assertEqual(answers(out, "CNAME"), ["db.example.com."])
        out = self.dig("ext.service.registry.", "SRV")
        self.assertEqual(answers(out, "SRV"), ["1 1 5432 db.example.com."])

    def test_datacenter_forms(self):
        self.assertEqual(answers(self.dig("web.service.dc1.registry."), "A"), ["10.0.0.5"])
        self.assertEqual(answers(self.dig("v1.web.service.dc1.registry."), "A"), ["10.0.0.5"])
        self.assertEqual(answers(self.dig("0a000005.addr.dc1.registry."), "A"), ["10.0.0.5"])
        self.assertEqual(status(self.dig("web.service.dc9.registry.")), "NXDOMAIN")

    def test_node_lookups_and_ptr(self):
        node = json.loads(self.d.request("GET", "/v1/agent/self")[1])["Config"]["NodeName"]
        self.assertEqual(answers(self.dig("%s.node.registry." % node), "A"), ["127.0.0.1"])
        self.assertEqual(answers(self.dig("%s.node.dc1.registry." % node), "A"), ["127.0.0.1"])
        self.assertEqual(answers(self.dig("ext-node.node.registry."), "A"), ["192.0.2.10"])
        self.assertEqual(status(self.dig("nosuch.node.registry.")), "NXDOMAIN")
        out = self.dig("10.2.0.192.in-addr.arpa.", "PTR")
        self.assertEqual(answers(out, "PTR"), ["ext-node.node.dc1.registry."])
        self.assertEqual(answers(self.dig("7.0.0.10.in-addr.arpa.", "PTR"), "PTR"),
                         ["meta.service.registry."])
        self.assertEqual(status(self.dig("9.9.9.10.in-addr.arpa.", "PTR")), "NXDOMAIN")
        # other spellings of 10.0.0.7 are not it (sscanf took a sign, leading zeros)
        for name in ("7.0.+0.10", "07.0.0.10", "7.-0.0.10", "7.00.0.10", "7.0.0.010",
                     "7.0.0.10.1", "1007.0.0.10"):
            self.assertEqual(status(self.dig(name + ".in-addr.arpa.", "PTR")), "NXDOMAIN", name)
        # three labels name a network, not an address: no PTR there, but not
        # NXDOMAIN either (names may be below it: RFC 8020)
        out = self.dig("7.0.0.in-addr.arpa.", "PTR")
        self.assertEqual((status(out), answers(out, "PTR")), ("NOERROR", []), out)
        # IPv6: registered as fd00:0::42, asked as dig -x builds it
        code, text = self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "six", "ID": "six-1", "Address": "fd00:0::42", "Port": 80}))
        self.assertEqual(code, 200, text)
        out = dig(self.d.dns_port, "-x", "fd00::42")
        self.assertEqual(answers(out, "PTR"), ["six.service.registry."])
        self.assertEqual(status(dig(self.d.dns_port, "-x", "fd00::43")), "NXDOMAIN")

    def test_ns_question_on_an_address_name_is_no_data(self):
        """NS asked of a node's name or ns.DOMAIN is no data: it was their
        A record, in the answer section of an NS question."""
        node = json.loads(self.d.request("GET", "/v1/agent/self")[1])["Config"]["NodeName"]
        for name in ("ext-node.node.registry.", node + ".node.registry.", "ns.registry."):
            out = self.dig(name, "NS")
            self.assertEqual(status(out), "NOERROR", out)
            self.assertNotIn("ANSWER SECTION", out)
            self.assertIn("SOA", out.split("AUTHORITY SECTION")[-1], out)
        # the apex's NS keeps its glue
        out = self.dig("registry.", "NS")
        self.assertIn("ns.registry.", out.split("ADDITIONAL SECTION")[-1])

    def test_ns_soa_txt_and_servers(self):
        out = self.dig("registry.", "NS")
        self.assertEqual(answers(out, "NS"), ["ns.registry."])
        self.assertIn("ns.registry.", out.split("ADDITIONAL SECTION")[-1])
        self.assertEqual(answers(self.dig("ns.registry."), "A"), ["127.0.0.1"])
        self.assertEqual(len(answers(self.dig("registry.", "SOA"), "SOA")), 1)
        self.assertEqual(answers(self.dig("meta.service.registry.", "TXT"), "TXT"),
                         ['"version=2.1" "zone=a"'])
        out = self.dig("consul.service.registry.", "SRV")
        self.assertEqual(len(answers(out, "SRV")), 1)
        self.assertEqual(answers(self.dig("consul.service.registry."), "A"), ["127.0.0.1"])


class DnsResolverFindingsTest(unittest.TestCase):
    """What real resolvers in front of registryd met (a probe with unbound,
    dnsmasq and glibc): each answered as Consul and the RFCs say."""

    @classmethod
    def setUpClass(cls):
        cls.d = dns_registryd().start()
        register(cls.d, [
            # one IPv4 instance among eleven IPv6 ones
            {"Name": "mixed", "ID": "mixed-4", "Address": "10.3.0.1", "Port": 80}] + [
            {"Name": "mixed", "ID": "mixed-6-%d" % i, "Address": "fd00::%x" % (i + 1), "Port": 80}
            for i in range(11)] + [
            # two instances at one address and port
            {"Name": "dup", "ID": "dup-%d" % i, "Address": "10.3.1.1", "Port": 80}
            for i in range(3)] + [
            # a host name beside an address
            {"Name": "hybrid", "ID": "hybrid-h", "Address": "db.example.com", "Port": 80},
            {"Name": "hybrid", "ID": "hybrid-a", "Address": "10.3.2.1", "Port": 80},
            # one TXT record larger than a 1232-byte answer
            {"Name": "bigtxt", "ID": "bigtxt-1", "Address": "10.3.3.1", "Port": 80,
             "Meta": {"k%02d" % i: "v" * 200 for i in range(20)}}])

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def dig(self, name, qtype="A", *opts):
        return dig(self.d.dns_port, name, qtype, *opts)

    def test_answer_limit_counts_records_of_the_asked_type(self):
        # the limit of 3 took 3 random instances first, then kept their A
        # records: mostly none, a false "no data" glibc got through dnsmasq
        for _ in range(10):
            out = self.dig("mixed.service.registry.", "A", "+noedns")
            self.assertEqual(answers(out, "A"), ["10.3.0.1"], out)
            out = self.dig("mixed.service.registry.", "AAAA", "+noedns")
            self.assertEqual(len(answers(out, "AAAA")), 3, out)

    def test_no_duplicate_records(self):
        out = self.dig("dup.service.registry.", "A")
        self.assertEqual(answers(out, "A"), ["10.3.1.1"], out)
        out = self.dig("dup.service.registry.", "SRV")
        self.assertEqual(len(answers(out, "SRV")), 1, out)
        self.assertEqual(out.split("ADDITIONAL SECTION")[-1].count("10.3.1.1"), 1, out)

    def test_no_cname_beside_addresses(self):
        for _ in range(6):
            out = self.dig("hybrid.service.registry.", "A")
            self.assertEqual(answers(out, "CNAME"), [], out)
            self.assertEqual(answers(out, "A"), ["10.3.2.1"], out)

    def test_negative_answers_carry_the_soa(self):
        for name, qtype in (("a.b.c.d.e.f.registry.", "A"), ("9.9.0.127.in-addr.arpa.", "PTR")):
            out = self.dig(name, qtype)
            self.assertEqual(status(out), "NXDOMAIN", out)
            self.assertIn("SOA", out.split("AUTHORITY SECTION")[-1] if "AUTHORITY SECTION" in out
                          else "", out)
        out = self.dig("1.2.3.10.in-addr.arpa.", "A")  # 10.3.2.1 exists: no A there
        self.assertEqual(status(out), "NOERROR", out)
        self.assertIn("AUTHORITY SECTION", out)

    def test_record_too_large_for_udp_sets_tc(self):
        out = self.dig("bigtxt.service.registry.", "TXT", "+bufsize=1232", "+ignore")
        self.assertEqual(answers(out, "TXT"), [], out)
        self.assertIn("tc", flags(out), out)
        out = self.dig("bigtxt.service.registry.", "TXT", "+tcp")
        self.assertEqual(len(answers(out, "TXT")), 1, out)

    def test_refused_outside_the_domain_claims_no_authority(self):
        out = self.dig("example.com.", "A")
        self.assertEqual(status(out), "REFUSED", out)
        self.assertNotIn("aa", flags(out), out)
        self.assertIn("aa", flags(self.dig("mixed.service.registry.", "A")))

    def test_zone_transfer_is_not_implemented(self):
        # dig asks AXFR over TCP and prints no header on failure: a raw query
        import socket
        import struct
        qname = b"".join(bytes([len(x)]) + x for x in b"registry".split(b".")) + b"\0"
        for qtype in (252, 251):  # AXFR, IXFR
            query = struct.pack(">HHHHHH", 0x1234, 0, 1, 0, 0, 0) + qname + struct.pack(
                ">HH", qtype, 1)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(3)
                sock.sendto(query, ("127.0.0.1", self.d.dns_port))
                reply = sock.recv(4096)
            self.assertEqual(reply[:2], b"\x12\x34")
            self.assertEqual(reply[3] & 0xF, 4, "rcode for qtype %d" % qtype)  # NOTIMP

    def test_edns_version_1_is_badvers_and_cd_is_echoed(self):
        out = self.dig("mixed.service.registry.", "A", "+edns=1", "+noednsneg")
        self.assertEqual(status(out), "BADVERS", out)
        out = self.dig("mixed.service.registry.", "A", "+cdflag")
        self.assertIn("cd", flags(out), out)

    # ---- found with BIND 9.18, unbound, pdns-recursor and kresd ----------

    def test_empty_non_terminals_are_nodata(self):
        # names with names below them only answered NXDOMAIN: resolvers that
        # minimise their queries (unbound, BIND, pdns) retried every lookup,
        # and in strict mode found nothing; a BIND stub zone for a reverse
        # zone never loaded (RFC 8020)
        for name in ("service.registry.", "node.registry.", "addr.registry.", "dc1.registry.",
                     "service.dc1.registry.", "_tcp.service.registry.",
                     "_mixed._tcp.service.registry.", "10.in-addr.arpa.", "3.10.in-addr.arpa.",
                     "0.3.10.in-addr.arpa.", "d.f.ip6.arpa."):
            out = self.dig(name, "A")
            if name == "_mixed._tcp.service.registry.":
                self.assertEqual(answers(out, "A"), ["10.3.0.1"], out)
                continue
            self.assertEqual(status(out), "NOERROR", (name, out))
            self.assertEqual(answers(out, "A"), [], out)
            self.assertIn("SOA", out.split("AUTHORITY SECTION")[-1], (name, out))
        for name in ("nosuch.service.registry.", "x.y.service.registry.",
                     "300.in-addr.arpa.", "1.2.3.4.5.in-addr.arpa.", "g.ip6.arpa."):
            self.assertEqual(status(self.dig(name, "A")), "NXDOMAIN", name)
        # a reverse zone delegated here has an apex: its SOA and NS
        out = self.dig("10.in-addr.arpa.", "SOA")
        self.assertEqual(status(out), "NOERROR", out)
        self.assertTrue(any(line.startswith("10.in-addr.arpa.") and "SOA" in line
                            for line in out.split("ANSWER SECTION")[-1].splitlines()), out)
        out = self.dig("10.in-addr.arpa.", "NS")
        self.assertEqual(answers(out, "NS"), ["ns.registry."], out)
        # a negative reverse answer's SOA is of the reverse zone the name is
        # in (RFC 2308 3), not the forward domain's (which a resolver that
        # forwards the reverse zone here drops as out of zone)
        # (and a name no address spells: 5 labels, a leading zero), with
        # the store's index as the serial, as forward answers have
        for name, apex in (("9.9.9.10.in-addr.arpa.", "9.9.10.in-addr.arpa."),
                           ("9.9" + ".0" * 28 + ".d.f.ip6.arpa.", "9" + ".0" * 28 + ".d.f.ip6.arpa."),
                           ("1.2.3.4.10.in-addr.arpa.", "2.3.4.10.in-addr.arpa."),
                           ("01.0.0.10.in-addr.arpa.", "0.0.10.in-addr.arpa.")):
            out = self.dig(name, "PTR")
            self.assertEqual(status(out), "NXDOMAIN", out)
            soa = [line.split() for line in out.split("AUTHORITY SECTION:")[-1].splitlines()
                   if "\tSOA\t" in line or " SOA " in line]
            self.assertEqual([x[0] for x in soa], [apex], out)
            self.assertGreater(int(soa[0][6]), 0, out)  # the serial

    def test_do_bit_is_echoed(self):
        out = self.dig("mixed.service.registry.", "A", "+dnssec")
        self.assertRegex(out, r"EDNS: version: 0, flags: do;", out)
        out = self.dig("mixed.service.registry.", "A")
        self.assertRegex(out, r"EDNS: version: 0, flags:;", out)


class DnsNameServerAddressTest(unittest.TestCase):
    def test_ns_glue_is_where_dns_listens(self):
        # ns.DOMAIN's address was the HTTP node address: resolvers that fetch
        # the NS set first (unbound stub-prime, BIND stub zones) then asked
        # the HTTP host, where no DNS server listens
        d = Registryd(extra_args=["--dns-workers", DNS_WORKERS])
        d.extra += ["--dns-addr", "127.0.0.3:%d" % d.dns_port]  # the last one given counts
        d.start()
        try:
            out = subprocess.run(["dig", "-p", str(d.dns_port), "@127.0.0.3", "+norec",
                                  "registry.", "NS"], capture_output=True, text=True,
                                 timeout=20).stdout
            self.assertEqual(answers(out, "NS"), ["ns.registry."], out)
            self.assertIn("ns.registry.\t\t0\tIN\tA\t127.0.0.3",
                          out.split("ADDITIONAL SECTION")[-1].replace("  ", "\t"), out)
            out = subprocess.run(["dig", "-p", str(d.dns_port), "@127.0.0.3", "+norec", "+short",
                                  "ns.registry.", "A"], capture_output=True, text=True,
                                 timeout=20).stdout
            self.assertEqual(out.split(), ["127.0.0.3"])
        finally:
            d.stop()


class ConsulNamesTest(unittest.TestCase):
    """What resolvers, load balancers and tools set up for Consul ask, and
    the names they get back (agent/dns.go): warning instances answered,
    RFC 2782 names without "service", SRV targets HEX.addr.DC.DOMAIN or
    NODE.node.DC.DOMAIN, and Consul's own domain answered beside ours."""

    @classmethod
    def setUpClass(cls):
        cls.d = dns_registryd(extra_args=["--node", "names-node"]).start()
        register(cls.d, [
            {"Name": "wt", "ID": "wt-1", "Address": "10.7.0.1", "Port": 1,
             "Weights": {"Passing": 10, "Warning": 2}, "Check": {"TTL": "300s"}},
            {"Name": "wt", "ID": "wt-2", "Address": "10.7.0.2", "Port": 2,
             "Check": {"TTL": "300s"}},
            {"Name": "atnode", "ID": "atnode-1", "Port": 9090},
            {"Name": "web", "ID": "web-1", "Address": "10.7.0.5", "Port": 80, "Tags": ["v1"]}])
        for path in ("pass/service:wt-1", "warn/service:wt-2"):
            code, text = cls.d.request("PUT", "/v1/agent/check/" + path)
            assert code == 200, text
        cls.node = json.loads(cls.d.request("GET", "/v1/agent/self")[1])["Config"]["NodeName"]

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def dig(self, name, qtype="A", *opts):
        return dig(self.d.dns_port, name, qtype, *opts)

    def test_warning_instances_answer_with_their_warning_weight(self):
        """Consul's only_passing is false by default: only critical
        instances are left out, and a warning one answers with its
        Weights.Warning. Both were left out here: a fleet in warning (a
        slow dependency) was NXDOMAIN, and HAProxy put every server in
        maintenance."""
        self.assertEqual(sorted(answers(self.dig("wt.service.registry.", "SRV"), "SRV")),
                         ["1 1 2 0a070002.addr.dc1.registry.",
                          "1 10 1 0a070001.addr.dc1.registry."])
        code, text = self.d.request("PUT", "/v1/agent/check/warn/service:wt-1")
        self.assertEqual(code, 200, text)
        self.addCleanup(self.d.request, "PUT", "/v1/agent/check/pass/service:wt-1")
        out = self.dig("wt.service.registry.", "SRV")
        self.assertEqual(status(out), "NOERROR")
        self.assertEqual(sorted(answers(out, "SRV")),
                         ["1 1 2 0a070002.addr.dc1.registry.",
                          "1 2 1 0a070001.addr.dc1.registry."])

    def test_only_passing_leaves_warning_out(self):
        for flag in ("--dns-only-passing", "--dns-allow-warning=false"):
            d = dns_registryd(extra_args=[flag]).start()
            try:
                register(d, [{"Name": "wt", "ID": "wt-%d" % i, "Address": "10.7.0.%d" % i,
                              "Port": i, "Check": {"TTL": "300s"}} for i in (1, 2)])
                d.request("PUT", "/v1/agent/check/pass/service:wt-1")
                d.request("PUT", "/v1/agent/check/warn/service:wt-2")
                self.assertEqual(answers(dig(d.dns_port, "wt.service.registry."), "A"),
                                 ["10.7.0.1"], flag)
            finally:
                d.stop()

    def test_rfc2782_without_the_service_label(self):
        """_NAME._PROTO[.DC].DOMAIN: Consul takes "service" as optional
        (HAProxy's server-template on _web._tcp.consul never filled)."""
        want = ["1 1 80 0a070005.addr.dc1.registry."]
        for name in ("_web._tcp.registry.", "_web._tcp.dc1.registry.", "_web._v1.registry.",
                     "_WEB._TCP.registry.", "_web._tcp.service.registry."):
            self.assertEqual(answers(self.dig(name, "SRV"), "SRV"), want, name)
        self.assertEqual(status(self.dig("_web._v9.registry.", "SRV")), "NXDOMAIN")
        self.assertEqual(status(self.dig("_nosuch._tcp.registry.", "SRV")), "NXDOMAIN")
        # their parents have names below them: no data, not NXDOMAIN (RFC 8020)
        for name in ("_tcp.registry.", "_v1.dc1.registry.", "dc.registry.", "dc1.dc.registry."):
            out = self.dig(name, "SRV")
            self.assertEqual((status(out), answers(out, "SRV")), ("NOERROR", []), name)
        # a node named _a._b is _a._b.node.DC, not an RFC 2782 service
        code, text = self.d.request("PUT", "/v1/catalog/register", json.dumps(
            {"Node": "_a._b", "Address": "192.0.2.77"}))
        self.assertEqual(code, 200, text)
        self.addCleanup(self.d.request, "PUT", "/v1/catalog/deregister",
                        json.dumps({"Node": "_a._b"}))
        for name in ("_a._b.node.dc1.registry.", "_a._b.node.registry."):
            self.assertEqual(answers(self.dig(name), "A"), ["192.0.2.77"], name)

    def test_explicit_locality_label(self):
        """Consul 1.15's NAME.KIND.DC.dc.DOMAIN."""
        self.assertEqual(answers(self.dig("web.service.dc1.dc.registry."), "A"), ["10.7.0.5"])
        self.assertEqual(answers(self.dig("%s.node.dc1.dc.registry." % self.node), "A"),
                         ["127.0.0.1"])
        self.assertEqual(status(self.dig("web.service.dc9.dc.registry.")), "NXDOMAIN")

    def test_srv_target_of_an_instance_at_its_node_is_the_node(self):
        """An instance without an address of its own answers at its node's,
        and its SRV target is NODE.node.DC.DOMAIN (the docs' own example),
        whose address rides along and resolves."""
        out = self.dig("atnode.service.registry.", "SRV")
        target = "%s.node.dc1.registry." % self.node
        self.assertEqual(answers(out, "SRV"), ["1 1 9090 " + target])
        self.assertIn(target + " 0 IN A 127.0.0.1",
                      " ".join(out.split("ADDITIONAL SECTION")[-1].split()))
        self.assertEqual(answers(self.dig(target), "A"), ["127.0.0.1"])
        # a node name that would not read back as itself (upper case: a
        # query arrives in lower case and may find another node; characters
        # DNS names escape) keeps HEX.addr
        for node, addr in (("Upper", "192.0.2.81"), ("a b", "192.0.2.82")):
            code, text = self.d.request("PUT", "/v1/catalog/register", json.dumps(
                {"Node": node, "Address": addr,
                 "Service": {"ID": "odd-" + addr, "Service": "odd" + addr[-1], "Port": 7}}))
            self.assertEqual(code, 200, text)
            self.addCleanup(self.d.request, "PUT", "/v1/catalog/deregister",
                            json.dumps({"Node": node}))
            hexed = "".join("%02x" % int(x) for x in addr.split("."))
            out = self.dig("odd%s.service.registry." % addr[-1], "SRV")
            self.assertEqual(answers(out, "SRV"), ["1 1 7 %s.addr.dc1.registry." % hexed], node)

    def test_datacenter_not_one_label_keeps_targets_answerable(self):
        """A datacenter name may hold dots (and be longer than a label):
        SRV targets then leave it out (HEX.addr.DOMAIN), so that they
        resolve; with it they were NXDOMAIN."""
        d = dns_registryd(extra_args=["--datacenter", "us-east.prod"]).start()
        try:
            register(d, [{"Name": "web", "ID": "web-1", "Address": "10.7.0.5", "Port": 80}])
            self.assertEqual(answers(dig(d.dns_port, "web.service.registry.", "SRV"), "SRV"),
                             ["1 1 80 0a070005.addr.registry."])
            self.assertEqual(answers(dig(d.dns_port, "0a070005.addr.registry."), "A"),
                             ["10.7.0.5"])
        finally:
            d.stop()

    def test_consul_domain_answered_beside_ours(self):
        """dns_alt_domain (Consul's alt_domain) is "consul." by default:
        resolvers and tools set up for Consul (stub zones, server-template
        on NAME.service.consul) work unchanged; the names answered, the SOA
        and the NS are in the domain asked."""
        out = self.dig("web.service.consul.", "SRV")
        self.assertEqual(answers(out, "SRV"), ["1 1 80 0a070005.addr.dc1.consul."])
        self.assertIn("0a070005.addr.dc1.consul.", out.split("ADDITIONAL SECTION")[-1])
        self.assertEqual(answers(self.dig("0a070005.addr.dc1.consul."), "A"), ["10.7.0.5"])
        out = self.dig("nosuch.service.consul.")
        self.assertEqual(status(out), "NXDOMAIN")
        self.assertIn("consul.\t\t\t0\tIN\tSOA\tns.consul. hostmaster.consul.",
                      out.split("AUTHORITY SECTION")[-1])
        self.assertEqual(answers(self.dig("consul.", "NS"), "NS"), ["ns.consul."])
        self.assertEqual(status(self.dig("web.service.other.")), "REFUSED")
        d = dns_registryd(extra_args=["--dns-alt-domain", ""]).start()
        try:
            self.assertEqual(status(dig(d.dns_port, "web.service.consul.")), "REFUSED")
        finally:
            d.stop()
        d = dns_registryd(extra_args=["--dns-domain", "consul"]).start()
        try:  # the two the same: one domain
            register(d, [{"Name": "web", "ID": "web-1", "Address": "10.7.0.5", "Port": 80}])
            self.assertEqual(answers(dig(d.dns_port, "web.service.consul.", "SRV"), "SRV"),
                             ["1 1 80 0a070005.addr.dc1.consul."])
        finally:
            d.stop()
        d = dns_registryd(extra_args=["--dns-domain", "consul",
                                      "--dns-alt-domain", "alt.consul"]).start()
        try:  # one below the other: the longer is the one asked
            register(d, [{"Name": "web", "ID": "web-1", "Address": "10.7.0.5", "Port": 80}])
            self.assertEqual(answers(dig(d.dns_port, "web.service.alt.consul.", "SRV"), "SRV"),
                             ["1 1 80 0a070005.addr.dc1.alt.consul."])
            self.assertEqual(answers(dig(d.dns_port, "web.service.consul.", "SRV"), "SRV"),
                             ["1 1 80 0a070005.addr.dc1.consul."])
        finally:
            d.stop()


class EdnsAnswersTest(unittest.TestCase):
    """EDNS as RFC 6891, 7871 and Consul's setEDNS have it."""

    @classmethod
    def setUpClass(cls):
        cls.d = dns_registryd().start()
        register(cls.d, [{"Name": "web", "ID": "web-1", "Address": "10.0.0.5", "Port": 80}])

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def ask(self, packet, tcp=False):
        return parse_reply(exchange(self.d.dns_port, packet, tcp))

    def test_meta_types_asked_are_no_data(self):
        """A question for a meta-type (OPT 41, TKEY 249, TSIG 250, MAILB 253,
        MAILA 254) is answered as Consul (miekg/dns takes any QTYPE, and
        its lookups find no record of the type): no data with the SOA, or
        NXDOMAIN where the name does not exist. BIND says FORMERR (OPT,
        TSIG, TKEY) or NOTIMP (MAILA, MAILB); the tools set up for Consul
        never ask these."""
        node = json.loads(self.d.request("GET", "/v1/agent/self")[1])["Config"]["NodeName"]
        for qtype in (41, 249, 250, 253, 254):
            for tcp in (False, True):
                for name in ("web.service.registry.", node + ".node.registry.", "registry.",
                             "0a000005.addr.registry."):
                    r = self.ask(raw_query(name, qtype, opt=opt_rr()), tcp)
                    self.assertEqual((r["rcode"], r["an"], r["ns"], r["ar"]), (0, 0, 1, 1),
                                     (qtype, name, tcp))
                r = self.ask(raw_query("nosuch.service.registry.", qtype), tcp)
                self.assertEqual((r["rcode"], r["an"], r["ns"]), (3, 0, 1), (qtype, tcp))

    def test_every_answer_to_a_query_with_opt_has_opt(self):
        """RFC 6891 6.1.1: a request with an OPT record gets one back, NOTIMP
        and FORMERR too (the answer says the server speaks EDNS; dig warned
        "EDNS query returned status NOTIMP - retry with '+noedns'"), and a
        NOTIMP answer keeps the question. They were the header alone."""
        out = dig(self.d.dns_port, "registry.", "SOA", "+opcode=notify")
        self.assertEqual(status(out), "NOTIMP", out)
        self.assertIn("OPT PSEUDOSECTION", out)
        self.assertNotIn("retry with '+noedns'", out)
        for tcp in (False, True):
            for opcode in (1, 2, 4):  # IQUERY, STATUS, NOTIFY
                r = self.ask(raw_query("registry.", 6, opcode=opcode, opt=opt_rr()), tcp)
                self.assertEqual((r["opcode"], r["rcode"], r["qd"], r["question"]),
                                 (opcode, 4, 1, wire_name("registry.")), (opcode, tcp))
                self.assertIsNotNone(r["opt"], (opcode, tcp))
                self.assertEqual(r["opt"]["payload"], 4096)
            # UPDATE: a zone, a record to add in its third section, then OPT
            rr = wire_name("x.registry.") + struct.pack(">HHIH", 1, 1, 0, 4) + bytes([10, 0, 0, 1])
            r = self.ask(raw_query("registry.", 6, opcode=5, opt=opt_rr(), ns=rr, nns=1), tcp)
            self.assertEqual((r["opcode"], r["rcode"], r["qd"]), (5, 4, 1), tcp)
            self.assertIsNotNone(r["opt"], tcp)
            # without OPT, none comes back (RFC 6891 7)
            r = self.ask(raw_query("registry.", 6, opcode=2), tcp)
            self.assertEqual((r["rcode"], r["qd"], r["ar"]), (4, 1, 0), tcp)
            # FORMERR for a message whose OPT parsed (bytes after it)
            r = self.ask(raw_query("registry.", 6, opt=opt_rr()) + b"junk", tcp)
            self.assertEqual(r["rcode"], 1, tcp)
            self.assertIsNotNone(r["opt"], tcp)
            # REFUSED, BADVERS, and a plain answer
            for name, version, rcode in (("example.com.", 0, 5), ("registry.", 1, 16),
                                         ("web.service.registry.", 0, 0)):
                r = self.ask(raw_query(name, 1, opt=opt_rr(version=version)), tcp)
                self.assertEqual(r["rcode"], rcode, (name, tcp))
                self.assertIsNotNone(r["opt"], (name, tcp))
        # two OPT records: FORMERR (RFC 6891 6.1.1)
        packet = bytearray(raw_query("registry.", 6, opt=opt_rr() + opt_rr()))
        packet[11] = 2
        self.assertEqual(self.ask(bytes(packet))["rcode"], 1)
        # and the server still answers
        self.assertEqual(answers(dig(self.d.dns_port, "web.service.registry."), "A"), ["10.0.0.5"])

    def test_client_subnet_is_echoed_with_scope_zero(self):
        """RFC 7871 7.2.1, as Consul's setEDNS: FAMILY, SOURCE PREFIX-LENGTH
        and ADDRESS as asked, SCOPE PREFIX-LENGTH 0 (the answer is the same
        for every client: a resolver may cache it for all). The option was
        dropped: a resolver sending ECS takes a reply without it as one from
        a server that does not speak ECS (RFC 7871 7.3)."""
        for subnet, shown in (("192.0.2.0/24", "192.0.2.0/24/0"),
                              ("2001:db8:1::/48", "2001:db8:1::/48/0"),
                              ("0", "0.0.0.0/0/0")):
            for name, rcode in (("web.service.registry.", "NOERROR"),
                                ("nosuch.service.registry.", "NXDOMAIN"),
                                ("example.com.", "REFUSED")):
                for tcp in ("+notcp", "+tcp"):
                    out = dig(self.d.dns_port, name, "A", "+subnet=" + subnet, tcp)
                    self.assertEqual(status(out), rcode, out)
                    self.assertIn("CLIENT-SUBNET: " + shown + "\n", out)
        # on the wire: the option as sent, but for its scope
        for family, source, addr in ((1, 23, bytes([192, 0, 2])), (2, 56, bytes(7)),
                                     (1, 32, bytes([10, 0, 0, 1])), (0, 0, b"")):
            r = self.ask(raw_query("web.service.registry.",
                                   opt=opt_rr(ecs_option(family, source, addr))))
            self.assertEqual(r["rcode"], 0)
            self.assertEqual(r["opt"]["options"],
                             [(8, struct.pack(">HBB", family, source, 0) + addr)])
        # a UDP answer filled to the advertised size still has room for it
        register(self.d, [{"Name": "many", "ID": "many-%d" % i, "Address": "fd00::%x" % (i + 1),
                           "Port": 80} for i in range(40)])
        subnet = ecs_option(2, 32, bytes([0x20, 0x01, 0x0d, 0xb8]))
        reply = exchange(self.d.dns_port, raw_query("many.service.registry.", 28,
                                                    opt=opt_rr(subnet, payload=600)))
        self.assertLessEqual(len(reply), 600)
        r = parse_reply(reply)
        self.assertGreater(r["an"], 5)
        self.assertEqual(r["opt"]["options"], [(8, subnet[4:])])

    def test_malformed_client_subnet_is_formerr(self):
        """RFC 7871 6 and 7.1.1, as BIND checks it: FORMERR (with our OPT,
        and the question) for a family other than 1 or 2 (0 only with no
        prefix), a prefix longer than the family's addresses, a scope in a
        query, ADDRESS bytes other than the prefix needs, or bits set past
        the prefix. They were answered as if the option were not there."""
        bad = [(3, 0, b""), (0, 8, b"\x0a"), (1, 33, bytes(5)), (2, 129, bytes(17)),
               (1, 24, bytes([10, 0, 0, 0])), (1, 24, bytes([10, 0])),
               (1, 23, bytes([192, 0, 3])), (2, 1, b"\x40")]
        for tcp in (False, True):
            for family, source, addr in bad:
                r = self.ask(raw_query("web.service.registry.",
                                       opt=opt_rr(ecs_option(family, source, addr))), tcp)
                self.assertEqual(r["rcode"], 1, (family, source, addr, tcp))
                self.assertEqual(r["question"], wire_name("web.service.registry."))
                self.assertIsNotNone(r["opt"])
                self.assertEqual(r["opt"]["options"], [])
            r = self.ask(raw_query("web.service.registry.",
                                   opt=opt_rr(ecs_option(1, 24, bytes([10, 0, 0]), scope=24))), tcp)
            self.assertEqual(r["rcode"], 1, tcp)
            # an option whose length runs past the OPT record's data
            for options in (struct.pack(">HH", 10, 8) + bytes(4), b"\x00\x0a\x00"):
                r = self.ask(raw_query("web.service.registry.", opt=opt_rr(options)), tcp)
                self.assertEqual(r["rcode"], 1, (options, tcp))
            # other options are let be (a cookie, padding), a second subnet
            # too (BIND's reading)
            options = (struct.pack(">HH", 10, 8) + bytes(8) + struct.pack(">HH", 12, 3) + bytes(3)
                       + ecs_option(1, 8, b"\x0a") + ecs_option(9, 99, b""))
            r = self.ask(raw_query("web.service.registry.", opt=opt_rr(options)), tcp)
            self.assertEqual((r["rcode"], r["an"]), (0, 1), tcp)
            self.assertEqual(r["opt"]["options"], [(8, b"\x00\x01\x08\x00\x0a")])


def txt_strings(rdata):
    """The character strings of one TXT record's rdata as dig prints it."""
    out, cur, quoted, i = [], "", False, 0
    while i < len(rdata):
        c = rdata[i]
        if c == '"':
            if quoted:
                out.append(cur)
                cur = ""
            quoted = not quoted
        elif quoted and c == "\\":
            i += 1
            cur += rdata[i]
        elif quoted:
            cur += c
        i += 1
    return out


def section(text, name):
    """(owner, type, rdata) of the records in dig's section name."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith(";; %s SECTION" % name):
            inside = True
        elif line.startswith(";;") or not line.strip():
            inside = inside and not line.startswith(";;")
        elif inside:
            f = line.split(None, 4)
            out.append((f[0], f[3], f[4] if len(f) > 4 else ""))
    return out


class NodeMetaTxtTest(unittest.TestCase):
    """A node's Meta as TXT records, as Consul answers them (handleNodeQuery,
    makeTXTRecordFromNodeMeta): one record per key, RFC 1464's key=value (a
    key starting "rfc1035-": the value alone), on NODE.node TXT and ANY, and
    by default (enable_additional_node_meta_txt) in the additional section
    of node A/AAAA answers and of SRV answers, owned by NODE.node.DC.DOMAIN.
    Node TXT was no data, and the additional sections had none."""

    LONG = "x" * 300

    @classmethod
    def setUpClass(cls):
        cls.d = dns_registryd(extra_args=["--node", "self-node", "--node-meta", "role:dns"]).start()
        for body in (
                {"Node": "meta-node", "Address": "192.0.2.20",
                 "NodeMeta": {"rack": "r1", "rfc1035-spf": "v=spf1 -all", "RFC1035-Raw": "as is",
                              "quote": "a`b=c", "long": cls.LONG},
                 "Service": {"ID": "ms-1", "Service": "ms", "Port": 81}},
                {"Node": "meta-node", "Address": "192.0.2.20",
                 "NodeMeta": {"rack": "r1", "rfc1035-spf": "v=spf1 -all", "RFC1035-Raw": "as is",
                              "quote": "a`b=c", "long": cls.LONG},
                 "Service": {"ID": "ms-2", "Service": "ms", "Port": 82, "Address": "10.9.0.2"}},
                {"Node": "bare-node", "Address": "192.0.2.21",
                 "Service": {"ID": "ms-3", "Service": "ms", "Port": 83}},
                {"Node": "Upper-Node", "Address": "192.0.2.22", "NodeMeta": {"k": "v"},
                 "Service": {"ID": "up-1", "Service": "up", "Port": 84}},
                {"Node": "host-node", "Address": "db.example.com", "NodeMeta": {"k": "v"}}):
            code, text = cls.d.request("PUT", "/v1/catalog/register", json.dumps(body))
            assert code == 200, text
        register(cls.d, [{"Name": "ms", "ID": "ms-4", "Address": "10.9.0.4", "Port": 84}])

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def dig(self, name, qtype="A", *opts):
        return dig(self.d.dns_port, name, qtype, *opts)

    WANT = sorted([["rack=r1"], ["v=spf1 -all"], ["as is"], ["quote=a``b=c"],
                   ["long=" + LONG[:250], LONG[250:]]])

    def test_node_txt_is_its_meta(self):
        for name in ("meta-node.node.registry.", "META-NODE.node.dc1.registry.",
                     "meta-node.node.dc1.consul."):
            for tcp in ("+notcp", "+tcp"):
                out = self.dig(name, "TXT", tcp)
                self.assertEqual(status(out), "NOERROR", out)
                got = sorted(txt_strings(r) for o, t, r in section(out, "ANSWER") if t == "TXT")
                self.assertEqual(got, self.WANT, out)
                self.assertEqual(section(out, "ADDITIONAL"), [], out)
        # ANY: the address and the Meta
        out = self.dig("meta-node.node.registry.", "ANY")
        self.assertEqual(answers(out, "A"), ["192.0.2.20"], out)
        self.assertEqual(len(answers(out, "TXT")), 5, out)
        # this server's node: its --node-meta
        self.assertEqual(answers(self.dig("self-node.node.registry.", "TXT"), "TXT"),
                         ['"role=dns"'])
        # no Meta: no data (with the SOA), as any type a name lacks
        out = self.dig("bare-node.node.registry.", "TXT")
        self.assertEqual((status(out), answers(out, "TXT")), ("NOERROR", []), out)
        self.assertIn("SOA", out.split("AUTHORITY SECTION")[-1])
        self.assertEqual(status(self.dig("nosuch.node.registry.", "TXT")), "NXDOMAIN")
        # a node at a host name: its Meta for TXT, the CNAME alone for ANY
        self.assertEqual(answers(self.dig("host-node.node.registry.", "TXT"), "TXT"), ['"k=v"'])
        out = self.dig("host-node.node.registry.", "ANY")
        self.assertEqual((answers(out, "CNAME"), answers(out, "TXT")), (["db.example.com."], []))

    def test_node_address_answers_carry_the_meta(self):
        out = self.dig("meta-node.node.registry.", "A")
        self.assertEqual(answers(out, "A"), ["192.0.2.20"])
        extra = section(out, "ADDITIONAL")
        self.assertEqual({o for o, t, r in extra}, {"meta-node.node.registry."}, out)
        self.assertEqual(sorted(txt_strings(r) for o, t, r in extra), self.WANT, out)
        out = self.dig("self-node.node.registry.", "A")
        self.assertEqual(section(out, "ADDITIONAL"),
                         [("self-node.node.registry.", "TXT", '"role=dns"')], out)
        # no address of the type asked: no data, nothing beside it
        out = self.dig("meta-node.node.registry.", "AAAA")
        self.assertEqual((status(out), section(out, "ADDITIONAL")), ("NOERROR", []), out)

    def test_srv_answers_carry_the_meta_of_the_nodes(self):
        out = self.dig("ms.service.registry.", "SRV")
        self.assertEqual(len(answers(out, "SRV")), 4, out)
        txt = [(o, r) for o, t, r in section(out, "ADDITIONAL") if t == "TXT"]
        # each node's once, owned by its name (whatever the SRV target:
        # ms-2 is 0a090002.addr), none for a node without Meta
        self.assertEqual(sorted({o for o, r in txt}),
                         ["meta-node.node.dc1.registry.", "self-node.node.dc1.registry."], out)
        self.assertEqual(len(txt), 6, out)
        self.assertEqual(len([t for o, t, r in section(out, "ADDITIONAL") if t == "A"]), 4, out)
        # in the domain asked
        out = self.dig("ms.service.consul.", "SRV")
        self.assertIn("meta-node.node.dc1.consul.",
                      {o for o, t, r in section(out, "ADDITIONAL") if t == "TXT"}, out)
        # a node whose name does not read back as itself (upper case) is
        # not named: its Meta has no owner to give
        out = self.dig("up.service.registry.", "SRV")
        self.assertEqual([t for o, t, r in section(out, "ADDITIONAL")], ["A"], out)

    def test_meta_never_pushes_a_record_out(self):
        """The Meta goes in the room the answer and its addresses leave: a
        UDP answer of 512 bytes keeps its records, and the node TXT answer
        counts as any answer (udp_answer_limit records without EDNS)."""
        out = self.dig("ms.service.registry.", "SRV", "+noedns", "+ignore")
        self.assertEqual(len(answers(out, "SRV")), 3, out)
        self.assertEqual(len([t for o, t, r in section(out, "ADDITIONAL") if t == "A"]), 3, out)
        self.assertNotIn("tc", flags(out))
        size = int(out.split("MSG SIZE  rcvd: ")[1].split()[0])
        self.assertLessEqual(size, 512)
        out = self.dig("meta-node.node.registry.", "TXT", "+noedns", "+ignore")
        self.assertEqual(len(answers(out, "TXT")), 3, out)
        out = self.dig("meta-node.node.registry.", "A", "+noedns", "+ignore")
        self.assertEqual(answers(out, "A"), ["192.0.2.20"], out)
        self.assertLessEqual(int(out.split("MSG SIZE  rcvd: ")[1].split()[0]), 512)

    def test_srv_counts_are_those_without_meta(self):
        """As many SRV records (each with its address) as without the
        setting, over UDP and TCP, with every node carrying Meta."""
        counts = {}
        for setting in ("true", "false"):
            d = dns_registryd(extra_args=["--node-meta", "zone:" + "z" * 200,
                                          "--dns-enable-additional-node-meta-txt=" + setting])
            d.start()
            self.addCleanup(d.stop)
            register(d, [{"Name": "wide", "ID": "wide-%d" % i, "Port": 1000 + i,
                          "Address": "10.8.%d.%d" % (i // 250, i % 250)} for i in range(1200)])
            for how in ("+bufsize=1232", "+tcp"):
                out = dig(d.dns_port, "wide.service.registry.", "SRV", how, "+ignore")
                extra = section(out, "ADDITIONAL")
                counts[setting, how] = (len(answers(out, "SRV")),
                                        len([1 for o, t, r in extra if t == "A"]))
                self.assertEqual(counts[setting, how][0], counts[setting, how][1])
                if setting == "false":
                    self.assertEqual([t for o, t, r in extra if t == "TXT"], [], out)
            out = dig(d.dns_port, "wide.service.registry.", "SRV", "+bufsize=4096", "+ignore")
            self.assertLessEqual(int(out.split("MSG SIZE  rcvd: ")[1].split()[0]), 4096)
            out = dig(d.dns_port, "%s.node.registry." % json.loads(
                d.request("GET", "/v1/agent/self")[1])["Config"]["NodeName"], "A")
            self.assertEqual(len(answers(out, "A")), 1)
            self.assertEqual(len([t for o, t, r in section(out, "ADDITIONAL") if t == "TXT"]),
                             1 if setting == "true" else 0, out)
        for how in ("+bufsize=1232", "+tcp"):
            self.assertEqual(counts["true", how], counts["false", how], how)
        self.assertGreater(counts["true", "+tcp"][0], 700)


if __name__ == "__main__":
    unittest.main()
