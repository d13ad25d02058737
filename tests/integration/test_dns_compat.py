#!/usr/bin/python3
"""DNS answers as Consul gives them, asked by dig: UDP answers filled with
what fits (udp_answer_limit without EDNS, the advertised size with it), TC
only with dns_enable_truncate; names and tags without case; NXDOMAIN when no
instance can answer; a CNAME for instances addressed by host name."""
import json
import unittest

from harness import Registryd
from test_dns import answers, dig, flags, status


def register(d, bodies):
    for body in bodies:
        code, text = d.request("PUT", "/v1/agent/service/register", json.dumps(body))
        assert code == 200, text


BIG = [{"Name": "big", "ID": "big-%d" % i, "Address": "10.1.0.%d" % (i + 1), "Port": 9000 + i}
       for i in range(60)]


class DnsCompatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Registryd().start()
        register(cls.d, BIG + [
            {"Name": "Web", "ID": "Web-1", "Address": "10.0.0.5", "Port": 80, "Tags": ["V1"]},
            {"Name": "sick", "ID": "sick-1", "Address": "10.0.0.9", "Port": 80,
             "Check": {"TTL": "60s"}},
            {"Name": "ext", "ID": "ext-1", "Address": "db.example.com", "Port": 5432}])

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
        d = Registryd(extra_args=["--dns-enable-truncate", "--dns-udp-answer-limit", "5"]).start()
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


if __name__ == "__main__":
    unittest.main()
