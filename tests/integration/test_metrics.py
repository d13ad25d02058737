#!/usr/bin/python3
"""GET /v1/agent/metrics: Prometheus text and Consul's JSON, with numbers that
follow what the server did."""
import json
import re
import subprocess
import time
import unittest

from harness import Registryd, TempDir

SAMPLE = re.compile(r'^([a-z_:][a-z0-9_:]*)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? '
                    r'(-?[0-9.e+-]+|\+Inf|NaN)$')


def parse(text):
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line.startswith("#") or not line:
            continue
        else:
            m = SAMPLE.match(line)
            assert m, "malformed sample line: %r" % line
            samples[m.group(1) + (m.group(2) or "")] = float(m.group(4))
    return types, samples


class MetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Registryd().start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def prometheus(self):
        status, text, headers = self.d.request_full("GET", "/v1/agent/metrics?format=prometheus")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        return parse(text)

    def test_counts_follow_requests(self):
        for i in range(3):
            self.d.request("PUT", "/v1/agent/service/register",
                           json.dumps({"Name": "m", "ID": "m-%d" % i, "Check": {"TTL": "60s"}}))
        self.d.request("GET", "/v1/no/such")
        subprocess.run(["dig", "+short", "-p", str(self.d.dns_port), "@127.0.0.1",
                        "m.service.registry", "A"], capture_output=True, timeout=10)
        subprocess.run(["dig", "+short", "-p", str(self.d.dns_port), "@127.0.0.1",
                        "example.com", "A"], capture_output=True, timeout=10)
        deadline = time.monotonic() + 10  # the checker publishes its counts once a second
        types, samples = self.prometheus()
        while samples.get("registryd_checks_critical") != 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            types, samples = self.prometheus()
        for name, kind in types.items():
            self.assertIn(kind, ("gauge", "counter", "histogram"), name)
        reg = 'registryd_http_requests_total{method="PUT",route="/v1/agent/service/register",code="200"}'
        self.assertGreaterEqual(samples[reg], 3)
        self.assertGreaterEqual(
            samples['registryd_http_requests_total{method="OTHER",route="unmatched",code="404"}'], 1)
        self.assertGreaterEqual(samples.get('registryd_dns_answers_total{rcode="NXDOMAIN"}', 0) +
                                samples.get('registryd_dns_answers_total{rcode="NOERROR"}', 0), 1)
        self.assertGreaterEqual(samples['registryd_dns_answers_total{rcode="REFUSED"}'], 1)
        self.assertEqual(samples["registryd_store_instances"], 3)
        self.assertEqual(samples["registryd_checks_critical"], 3)  # TTL checks start critical
        self.assertEqual(samples["registryd_raft_leader"], 1)
        self.assertEqual(samples['registryd_http_request_duration_seconds_bucket{le="+Inf"}'],
                         samples["registryd_http_request_duration_seconds_count"])
        self.assertGreater(samples["registryd_store_bytes"], 0)
        self.assertGreaterEqual(samples["registryd_dns_answer_duration_seconds_count"], 2)
        self.assertGreaterEqual(samples["registryd_raft_apply_duration_seconds_count"], 3)

    def test_raft_snapshots_counted(self):
        """Every raft snapshot taken is counted, with the seconds it took
        (the scale bench tells its rounds with one apart by them)."""
        d = Registryd(extra_args=["--raft-snapshot-threshold", "16"]).start()
        self.addCleanup(d.stop)
        _, samples = parse(d.request("GET", "/v1/agent/metrics?format=prometheus")[1])
        self.assertEqual(samples["registryd_raft_snapshots_total"], 0)
        for i in range(40):
            d.request("PUT", "/v1/agent/service/register", json.dumps({"Name": "s", "ID": "s-%d" % i}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _, samples = parse(d.request("GET", "/v1/agent/metrics?format=prometheus")[1])
            if samples["registryd_raft_snapshots_total"] >= 2:
                break
            time.sleep(0.1)
        self.assertGreaterEqual(samples["registryd_raft_snapshots_total"], 2)
        self.assertGreater(samples["registryd_raft_snapshot_seconds_total"], 0)
        counters = {c["Name"]: c["Count"] for c in
                    json.loads(d.request("GET", "/v1/agent/metrics")[1])["Counters"]}
        self.assertGreaterEqual(counters["registryd.raft.snapshots"], 2)

    def test_render_cache_counts_and_budget(self):
        self.d.request("PUT", "/v1/agent/service/register",
                       json.dumps({"Name": "cached", "ID": "cached-1"}))
        _, before = self.prometheus()
        first = self.d.request("GET", "/v1/health/service/cached")
        again = self.d.request("GET", "/v1/health/service/cached")
        self.assertEqual(first, again)  # the cached answer is the rendered one, byte for byte
        _, after = self.prometheus()
        self.assertEqual(after["registryd_http_cache_misses_total"]
                         - before["registryd_http_cache_misses_total"], 1)
        self.assertEqual(after["registryd_http_cache_hits_total"]
                         - before["registryd_http_cache_hits_total"], 1)
        self.assertGreater(after["registryd_http_cache_bytes"], 0)
        self.assertEqual(after["registryd_http_cache_max_bytes"], 64 * 1024 * 1024)

    def test_catalog_services_text_kept_across_instance_writes(self):
        """/v1/catalog/services' index moves with every instance (Consul's
        services table), its text only with the names and their tags: a
        new instance of a name already listed answers from the cached text,
        with the new index."""
        d = Registryd().start()
        self.addCleanup(d.stop)
        samples = lambda: parse(d.request("GET", "/v1/agent/metrics?format=prometheus")[1])[1]
        reg = lambda sid: d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "listed", "ID": sid, "Tags": ["t"]}))
        reg("listed-1")
        d.request("GET", "/v1/catalog/services")
        before = samples()
        _, first, h1 = d.request_full("GET", "/v1/catalog/services")
        reg("listed-2")
        _, again, h2 = d.request_full("GET", "/v1/catalog/services")
        after = samples()
        self.assertEqual(first, again)
        self.assertGreater(int(h2["X-Consul-Index"]), int(h1["X-Consul-Index"]))
        self.assertEqual(after["registryd_http_cache_hits_total"]
                         - before["registryd_http_cache_hits_total"], 2)
        d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "listed", "ID": "listed-3", "Tags": ["t", "u"]}))  # a new tag: new text
        self.assertEqual(json.loads(d.request("GET", "/v1/catalog/services")[1])["listed"],
                         ["t", "u"])

    def test_render_cache_bounded_in_bytes(self):
        d = Registryd(extra_args=["--http-cache-size", "16KiB"]).start()
        try:
            for i in range(8):
                d.request("PUT", "/v1/agent/service/register",
                          json.dumps({"Name": "v", "ID": "v-%d" % i, "Meta": {"pad": "x" * 50}}))
            answers = set()
            for i in range(60):  # 60 variants of a 3-8 KiB answer: a few fit
                status, text = d.request("GET", "/v1/catalog/service/v?x=%d" % i)
                self.assertEqual(status, 200)
                answers.add(text)
            self.assertEqual(len(answers), 1)
            self.assertTrue(3000 < len(text) < 8000, len(text))
            status, text = d.request("GET", "/v1/agent/metrics")
            doc = json.loads(text)
            gauges = {g["Name"]: g["Value"] for g in doc["Gauges"]}
            counters = {c["Name"]: c["Count"] for c in doc["Counters"]}
            self.assertLessEqual(gauges["registryd_http_cache_bytes"], 16 * 1024)
            self.assertEqual(gauges["registryd_http_cache_max_bytes"], 16 * 1024)
            self.assertGreaterEqual(counters["registryd.http.cache.misses"], 60)
            self.assertGreater(counters["registryd.http.cache.evictions"], 50)
            self.assertGreater(gauges["registryd_http_cache_entries"], 0)
        finally:
            d.stop()

    def test_check_counts_follow_every_status_change(self):
        """The checker's passing/warning/critical gauges are kept as checks
        change (not counted afresh each second): they match the store after
        new checks, updates, a re-registration with another check, and
        deregistrations."""
        d = Registryd().start()
        try:
            def register(i, ttl="60s", status=None):
                check = {"CheckID": "c-%d" % i, "TTL": ttl}
                if status:
                    check["Status"] = status
                st, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                    {"Name": "counted", "ID": "s-%d" % i, "Check": check}))
                self.assertEqual(st, 200, text)

            def expect(passing, warning, critical):
                want = {"passing": passing, "warning": warning, "critical": critical}
                stored = {"passing": 0, "warning": 0, "critical": 0}
                for c in json.loads(d.request("GET", "/v1/agent/checks")[1]).values():
                    stored[c["Status"]] += 1
                self.assertEqual(stored, want)
                deadline = time.monotonic() + 5
                while True:  # published once a second
                    _, samples = parse(d.request("GET", "/v1/agent/metrics?format=prometheus")[1])
                    got = {k: samples["registryd_checks_" + k] for k in want}
                    if got == want or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                self.assertEqual(got, want)

            for i in range(6):
                register(i, status="passing" if i < 2 else None)
            expect(2, 0, 4)
            d.request("PUT", "/v1/agent/check/warn/c-2")
            d.request("PUT", "/v1/agent/check/pass/c-3")
            d.request("PUT", "/v1/agent/check/fail/c-0")
            d.request("PUT", "/v1/agent/check/pass/c-3")  # no change
            expect(2, 1, 3)
            # another definition: the checker replaces the check (the
            # store keeps its status)
            register(3, ttl="90s", status="warning")
            expect(2, 1, 3)
            d.request("PUT", "/v1/agent/service/deregister/s-2")
            d.request("PUT", "/v1/agent/service/deregister/s-0")
            expect(2, 0, 2)
            for i in (1, 3, 4, 5):
                d.request("PUT", "/v1/agent/service/deregister/s-%d" % i)
            expect(0, 0, 0)
        finally:
            d.stop()

    def test_every_check_reloaded_at_start(self):
        """At start the checker reloads every check a few milliseconds of
        service names at a time (the loop runs in between): all of them
        arrive, here over many slices."""
        tmp = TempDir()
        n = 1500
        d = Registryd(data_dir=tmp.path).start()
        try:
            for i in range(n):
                st, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                    {"Name": "reload-%d" % i, "ID": "r-%d" % i,
                     "Check": {"CheckID": "rc-%d" % i, "TTL": "10m", "Status": "passing"}}))
                self.assertEqual(st, 200, text)
            d.stop()
            d = Registryd(data_dir=tmp.path).start()
            deadline = time.monotonic() + 20
            while True:
                _, samples = parse(d.request("GET", "/v1/agent/metrics?format=prometheus")[1])
                if samples["registryd_checks_passing"] == n or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(samples["registryd_checks_passing"], n)
            self.assertEqual(samples["registryd_checks_critical"], 0)
        finally:
            d.stop()
            tmp.cleanup()

    def test_consul_json_form(self):
        status, text = self.d.request("GET", "/v1/agent/metrics")
        self.assertEqual(status, 200)
        doc = json.loads(text)
        self.assertIn("Timestamp", doc)
        names = {g["Name"] for g in doc["Gauges"]}
        self.assertIn("registryd_raft_commit_index", names)
        self.assertIsInstance(doc["Counters"], list)


if __name__ == "__main__":
    unittest.main()
