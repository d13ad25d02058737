#!/usr/bin/python3
"""HAProxy (Debian's haproxy) filling its servers from registryd's DNS with
`resolvers` and `server-template`, set up as its users set it up for Consul:
names under consul. (registryd's dns_alt_domain by default), SRV answers
whose additional records carry the addresses. Servers follow registrations
and removals; an instance in warning stays (Consul's only_passing is false:
HAProxy put it in maintenance); the server names are the SRV targets Consul
gives; `_web._tcp.consul` (RFC 2782 without "service") fills too."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from harness import Registryd, free_port, recv_until_closed

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

CONFIG = """
global
    log stdout format raw local0 info
    stats socket {sock} mode 600 level admin
defaults
    mode http
    log global
    timeout connect 1s
    timeout client 5s
    timeout server 5s
resolvers registry
    nameserver r1 127.0.0.1:{dns}
    accepted_payload_size 8192
    resolve_retries 2
    timeout resolve 200ms
    timeout retry 200ms
    hold valid 1s
    hold nx 1s
    hold obsolete 1s
backend be_web
    server-template web 4 _web._tcp.service.consul resolvers registry resolve-prefer ipv4 init-addr none
backend be_api
    server-template api 2 _api._tcp.service.consul resolvers registry resolve-prefer ipv4 init-addr none
backend be_short
    server-template short 2 _web._tcp.consul resolvers registry resolve-prefer ipv4 init-addr none
frontend fe
    bind 127.0.0.1:{fe}
    default_backend be_web
"""


class HaproxyTest(unittest.TestCase):
    def setUp(self):
        # installed by scripts/install-deps: a missing haproxy is a failure
        self.assertTrue(os.access(HAPROXY, os.X_OK), "haproxy not installed")
        self.d = Registryd().start()
        self.addCleanup(self.d.stop)
        self.node = json.loads(self.d.request("GET", "/v1/agent/self")[1])["Config"]["NodeName"]
        self.dir = tempfile.mkdtemp(prefix="haproxy-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.sock = os.path.join(self.dir, "admin.sock")
        config = os.path.join(self.dir, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(CONFIG.format(sock=self.sock, dns=self.d.dns_port, fe=free_port()))
        self.log = open(os.path.join(self.dir, "haproxy.log"), "w+")
        self.addCleanup(self.log.close)
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", config], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.addCleanup(self.stop_haproxy)

    def stop_haproxy(self):
        self.haproxy.terminate()
        try:
            self.haproxy.wait(10)
        except subprocess.TimeoutExpired:
            self.haproxy.kill()
            self.haproxy.wait()

    def register(self, body, status=None):
        code, text = self.d.request("PUT", "/v1/agent/service/register", json.dumps(body))
        self.assertEqual(code, 200, text)
        if status:
            code, text = self.d.request("PUT", "/v1/agent/check/%s/service:%s" %
                                        (status, body["ID"]))
            self.assertEqual(code, 200, text)

    def servers(self, backend):
        """{server: (address, fqdn, port)} from the admin socket's `show
        servers state`; address "-" for a slot not filled."""
        deadline = time.monotonic() + 5
        while True:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(2)
            try:
                s.connect(self.sock)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        s.sendall(b"show servers state %s\n" % backend.encode())
        data = recv_until_closed(s)
        s.close()
        out = {}
        for line in data.decode().splitlines():
            f = line.split()
            if len(f) > 19 and f[1] == backend:
                out[f[3]] = (f[4], f[17], f[18])
        return out

    def filled(self, backend):
        return sorted((a, p) for a, _, p in self.servers(backend).values() if a != "-")

    def wait_for(self, backend, want, timeout=8):
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.filled(backend)
            if got == want:
                break
            time.sleep(0.2)
        self.log.seek(0)
        self.assertEqual(got, want, self.log.read()[-2000:])

    def test_follows_registrations_and_removals(self):
        self.register({"Name": "web", "ID": "web-1", "Address": "127.0.0.11", "Port": 8081})
        self.register({"Name": "web", "ID": "web-2", "Address": "127.0.0.12", "Port": 8082})
        both = [("127.0.0.11", "8081"), ("127.0.0.12", "8082")]
        self.wait_for("be_web", both)
        self.d.request("PUT", "/v1/agent/service/deregister/web-2")
        self.wait_for("be_web", both[:1])

    def test_warning_instance_stays_in_the_backend(self):
        for i in (1, 2):
            self.register({"Name": "web", "ID": "web-%d" % i, "Address": "127.0.0.1%d" % i,
                           "Port": 8080 + i, "Check": {"TTL": "300s"}}, "pass")
        both = [("127.0.0.11", "8081"), ("127.0.0.12", "8082")]
        self.wait_for("be_web", both)
        code, text = self.d.request("PUT", "/v1/agent/check/warn/service:web-2")
        self.assertEqual(code, 200, text)
        time.sleep(4)  # several resolutions, past `hold obsolete`
        self.wait_for("be_web", both, timeout=0.5)
        code, text = self.d.request("PUT", "/v1/agent/check/fail/service:web-2")
        self.assertEqual(code, 200, text)
        self.wait_for("be_web", both[:1])  # critical: out, as with Consul

    def test_server_names_are_consuls_srv_targets(self):
        self.register({"Name": "api", "ID": "api-1", "Port": 9090})  # at its node's address
        self.register({"Name": "web", "ID": "web-1", "Address": "127.0.0.11", "Port": 8081})
        self.wait_for("be_api", [("127.0.0.1", "9090")])
        self.wait_for("be_web", [("127.0.0.11", "8081")])
        api = [v[1] for v in self.servers("be_api").values() if v[0] != "-"]
        web = [v[1] for v in self.servers("be_web").values() if v[0] != "-"]
        self.assertEqual(api, ["%s.node.dc1.consul" % self.node])
        self.assertEqual(web, ["7f00000b.addr.dc1.consul"])

    def test_rfc2782_name_without_service_label(self):
        self.register({"Name": "web", "ID": "web-1", "Address": "127.0.0.11", "Port": 8081})
        self.wait_for("be_web", [("127.0.0.11", "8081")])
        self.wait_for("be_short", [("127.0.0.11", "8081")])


if __name__ == "__main__":
    unittest.main()
