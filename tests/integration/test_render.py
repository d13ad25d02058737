#!/usr/bin/python3
"""The big answers (health/service, catalog/service, agent/services,
agent/checks, health/state; catalog/services from the store's tag index)
rendered from per-record fragments and sent piece
by piece (http_render.c) give the same bytes, status and X-Consul-Index as
the jansson path (http_catalog.c, http_agent.c), across query variants and
after every kind of change that must invalidate a fragment.

ACLs under default allow send both paths through one daemon: the management
token's answers are not trimmed (http_render.c), the anonymous token's may be
(so they take the jansson path); with read-everything rules nothing is
trimmed and the two must be equal byte for byte.
"""
import http.client
import json
import os
import socket
import threading
import time
import unittest

from harness import Registryd, TempDir

MGMT = "11111111-2222-4333-8444-555555555555"

VARIANTS = [
    "/v1/health/service/web", "/v1/health/service/web?passing",
    "/v1/health/service/web?passing=false", "/v1/health/service/web?tag=v1",
    "/v1/health/service/web?tag=V1&tag=zone-1", "/v1/health/service/web?tag=nope",
    "/v1/health/service/web?near=_agent",
    "/v1/health/service/web?filter=Service.Meta.version%20%3D%3D%20%221.2%22",
    "/v1/health/service/web?filter=Checks.Status%20%3D%3D%20critical",
    "/v1/health/service/web?filter=Service.Port%20%3E",  # 400
    "/v1/health/service/web?node-meta=rack:r1", "/v1/health/service/web?node-meta=bad",
    "/v1/health/service/ext", "/v1/health/service/ext?passing",
    "/v1/health/service/ext?node-meta=rack:r1", "/v1/health/service/none",
    "/v1/health/service/big", "/v1/health/service/big?passing&tag=zone-2",
    "/v1/catalog/service/web", "/v1/catalog/service/web?tag=zone-0",
    "/v1/catalog/service/ext", "/v1/catalog/service/big", "/v1/catalog/service/none",
    "/v1/catalog/service/web?filter=ServiceMeta.version%20%3D%3D%20%221.3%22",
    "/v1/catalog/service/ext?node-meta=rack:r1",
    "/v1/agent/services", "/v1/agent/services?filter=Service%20%3D%3D%20web",
    "/v1/agent/services?filter=Port%20%3E%208500",
    "/v1/agent/checks", "/v1/agent/checks?filter=Status%20%3D%3D%20passing",
    "/v1/agent/checks?filter=junk%20junk",
    "/v1/health/state/any", "/v1/health/state/passing", "/v1/health/state/warning",
    "/v1/health/state/critical", "/v1/health/state/bogus",
    "/v1/health/state/any?filter=ServiceName%20%3D%3D%20web",
    "/v1/health/state/passing?filter=CheckID%20%3D%3D%20serfHealth",
    "/v1/catalog/services", "/v1/catalog/services?filter=ServiceName%20%3D%3D%20web",
    "/v1/catalog/services?node-meta=rack:r1",
]


class RenderTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        secret_file = os.path.join(cls.tmp.path, "mgmt")
        with open(secret_file, "w") as f:
            f.write(MGMT + "\n")
        cls.d = Registryd(extra_args=["--acl-enabled", "--acl-default-policy", "allow",
                                      "--acl-initial-management-token-file", secret_file,
                                      "--node-meta", "rack:r1"]).start()
        for i in range(12):
            cls.put("/v1/agent/service/register", {
                "Name": "web", "ID": "web-%02d" % i, "Address": "10.0.0.%d" % i,
                "Port": 8000 + i, "Tags": ["v1", "zone-%d" % (i % 3)],
                "Meta": {"version": "1.%d" % (i % 4), "quote": "a\"b\\c\u00e9\u2603"},
                "Weights": {"Passing": 1 + i, "Warning": 1},
                "TaggedAddresses": {"lan": {"Address": "10.1.0.%d" % i, "Port": 80}}
                if i % 5 == 0 else {},
                "Checks": [{"CheckID": "ttl-web-%d" % i, "TTL": "10m"},
                           {"CheckID": "ttl2-web-%d" % i, "TTL": "10m",
                            "Notes": "second \u00fc"}] if i % 4 else []})
        for i in range(12):
            if i % 4 and i % 3:
                cls.put("/v1/agent/check/pass/ttl-web-%d" % i)
                cls.put("/v1/agent/check/pass/ttl2-web-%d" % i)
            elif i % 4:
                cls.put("/v1/agent/check/warn/ttl-web-%d?note=slow%%20%%22x%%22" % i)
        # an instance on another node, with node-level and service checks
        cls.put("/v1/catalog/register", {
            "Node": "ext-node", "Address": "192.0.2.10", "NodeMeta": {"rack": "r1"},
            "Service": {"ID": "ext1", "Service": "ext", "Port": 6379, "Tags": ["x"]},
            "Checks": [{"CheckID": "service:ext1", "Name": "redis", "Status": "passing",
                        "ServiceID": "ext1"},
                       {"CheckID": "ext-node-alive", "Name": "alive", "Status": "passing"}]})
        # enough instances that a render takes more than one slice
        cls.register_big(3000)

    @classmethod
    def register_big(cls, n, bump=0):
        errors = []

        def worker(lo, hi):
            c = http.client.HTTPConnection("127.0.0.1", cls.d.port, timeout=60)
            for i in range(lo, hi):
                body = json.dumps({
                    "Name": "big", "ID": "big-%05d" % i, "Port": 9000 + i % 1000,
                    "Tags": ["v2", "zone-%d" % (i % 3)], "Meta": {"bump": str(bump)},
                    "Check": {"CheckID": "ttl-big-%d" % i, "TTL": "10m",
                              **({"Status": "passing"} if i % 2 else {})}})
                c.request("PUT", "/v1/agent/service/register", body,
                          {"X-Consul-Token": MGMT})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(r.status)
            c.close()

        step = (n + 7) // 8
        ts = [threading.Thread(target=worker, args=(k, min(n, k + step)))
              for k in range(0, n, step)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors[:3]

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.tmp.cleanup()

    @classmethod
    def put(cls, path, body=None):
        status, text, _ = cls.d.request_full(
            "PUT", path, json.dumps(body) if body is not None else None,
            {"X-Consul-Token": MGMT})
        assert status == 200, (path, status, text)

    def get(self, path, token):
        c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=60)
        c.request("GET", path, headers={"X-Consul-Token": token} if token else {})
        r = c.getresponse()
        body = r.read()
        out = (r.status, body, r.getheader("X-Consul-Index"), r.getheader("Content-Type"),
               r.getheader("Transfer-Encoding"))
        c.close()
        return out

    def compare_all(self, stage):
        streamed = 0
        for path in VARIANTS:
            with self.subTest(stage=stage, path=path):
                old = self.get(path, None)       # anonymous: the jansson path
                new = self.get(path, MGMT)       # management: fragments (cold)
                again = self.get(path, MGMT)     # the render cache
                self.assertEqual(old[:3], new[:3], path)
                self.assertEqual(old[:3], again[:3], path)
                self.assertEqual(old[3], new[3])
                if old[0] == 200:
                    json.loads(new[1])
                streamed += new[4] == "chunked"
        return streamed

    def test_same_bytes_through_changes(self):
        streamed = self.compare_all("start")
        self.assertGreater(streamed, 0, "nothing was big enough to be streamed")
        self.compare_all("warm")
        # an instance's own change, a check's, a node-level check's, maintenance
        self.put("/v1/agent/service/register", {
            "Name": "web", "ID": "web-03", "Port": 1, "Tags": ["v1", "new"],
            "Checks": [{"CheckID": "ttl-web-3", "TTL": "10m"}]})
        self.put("/v1/agent/check/fail/ttl-web-5")
        self.put("/v1/agent/check/pass/ttl-big-10")
        self.put("/v1/catalog/register", {
            "Node": "ext-node", "Address": "192.0.2.10", "NodeMeta": {"rack": "r1"},
            "Check": {"CheckID": "ext-node-alive", "Name": "alive", "Status": "critical"}})
        self.put("/v1/agent/service/maintenance/web-07?enable=true&reason=kernel")
        self.compare_all("changed")
        self.put("/v1/agent/service/maintenance/web-07?enable=false")
        self.put("/v1/agent/service/deregister/web-01")
        self.put("/v1/agent/maintenance?enable=true&reason=node")
        self.compare_all("node maintenance")
        self.put("/v1/agent/maintenance?enable=false")
        self.register_big(300, bump=1)
        self.compare_all("re-registered")

    def test_blocking_query_on_streamed_answer(self):
        status, body, index, _, _ = self.get("/v1/health/service/big", MGMT)
        self.assertEqual(status, 200)
        done = {}

        def wait():
            done["r"] = self.get("/v1/health/service/big?index=%s&wait=20s" % index, MGMT)

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.5)
        self.assertNotIn("r", done)
        self.put("/v1/agent/check/fail/ttl-big-11")
        t.join(30)
        st, body2, index2, _, _ = done["r"]
        self.assertEqual(st, 200)
        self.assertGreater(int(index2), int(index))
        entry = [e for e in json.loads(body2) if e["Service"]["ID"] == "big-00011"][0]
        self.assertEqual(entry["Checks"][1]["Status"], "critical")
        self.assertEqual(body2, self.get("/v1/health/service/big", None)[1])

    def test_client_gone_mid_stream(self):
        # clients that close while a big answer is still going out
        for _ in range(5):
            c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=30)
            c.request("GET", "/v1/agent/checks?x=%f" % time.time(),
                      headers={"X-Consul-Token": MGMT})
            r = c.getresponse()
            r.read(100)
            c.close()
        self.assertEqual(self.d.request("GET", "/v1/status/leader")[0], 200)
        self.assertEqual(self.get("/v1/agent/checks", MGMT)[1],
                         self.get("/v1/agent/checks", None)[1])


class SlowReaderTest(unittest.TestCase):
    """A client that stops reading a big streamed answer must not hold the
    store's read open while writes go on: an open LMDB read keeps every page
    a write frees from reuse, so the store file (and the resident size)
    grew with each write until the connection timed out. The answer, read
    to its end afterwards, is still whole."""

    def test_stalled_stream_does_not_pin_the_store(self):
        tmp = TempDir()
        d = Registryd(data_dir=tmp.path).start()
        try:
            meta = {"m%d" % k: chr(97 + k) * 500 for k in range(6)}

            def worker(lo, hi):
                c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
                for i in range(lo, hi):
                    c.request("PUT", "/v1/agent/service/register", json.dumps(
                        {"Name": "wide", "ID": "wide-%05d" % i, "Port": 1 + i,
                         "Meta": meta}))
                    r = c.getresponse()
                    r.read()
                    assert r.status == 200, r.status
                c.close()

            n = 2400  # about 7 MB of /v1/agent/services: past both socket buffers
            ts = [threading.Thread(target=worker, args=(k, k + n // 8))
                  for k in range(0, n, n // 8)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

            def file_bytes():  # the store's used pages (LMDB's last page)
                return d.metric("registryd_store_bytes")

            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", d.port))
            slow = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
            slow.sock = sock
            slow.request("GET", "/v1/agent/services")
            answer = slow.getresponse()
            self.assertEqual(answer.status, 200)
            head = answer.read(2000)
            time.sleep(1)  # the server fills the socket and waits
            # it let its read go (on a host whose socket buffers held the
            # whole answer this would fail, not pass for nothing)
            self.assertGreaterEqual(d.metric("registryd_http_streams_parked_total"), 1)
            before = file_bytes()
            writes = 300
            d.churn(writes)
            grown = file_bytes() - before
            # pinned, each write took fresh pages for every B-tree path it
            # changed: 16 MB here before streams parked their reads, 0 after
            self.assertLess(grown, 4 << 20, "the store file grew %d bytes in %d writes "
                            "while a client did not read" % (grown, writes))
            body = json.loads(head + answer.read())
            slow.close()
            self.assertEqual(len([k for k in body if k.startswith("wide-")]), n)
            self.assertEqual(body["wide-00007"]["Meta"], meta)
            # a client that goes while its stream is parked
            parked = d.metric("registryd_http_streams_parked_total")
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", d.port))
            sock.sendall(b"GET /v1/agent/services?x=2 HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1000)
            deadline = time.monotonic() + 10
            while d.metric("registryd_http_streams_parked_total") == parked and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertGreater(d.metric("registryd_http_streams_parked_total"), parked)
            sock.close()
            self.assertEqual(d.request("GET", "/v1/status/leader")[0], 200)
        finally:
            d.stop()
            tmp.cleanup()


if __name__ == "__main__":
    unittest.main()
