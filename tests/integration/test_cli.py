#!/usr/bin/python3
"""registryctl against a real registryd: every verb, tables, --json, exit codes."""
import json
import os
import re
import socket
import struct
import tempfile
import threading
import time
import unittest

from harness import REGISTRYCTL, CannedServer, Registryd, free_port
import subprocess


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Registryd().start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def ok(self, *args, **kw):
        rc, out, err = self.d.ctl(*args, **kw)
        self.assertEqual(rc, 0, (args, out, err))
        self.assertEqual(err, "")
        return out

    def test_register_list_check_maint_deregister(self):
        self.ok("register", "--name", "web", "--id", "web-1", "--address", "10.0.0.9",
                "--port", "8080", "--tag", "v1", "--tag", "blue", "--meta", "zone=a",
                "--ttl", "30s")
        out = self.ok("services")
        self.assertIn("web", out)
        self.assertIn("v1,blue", out)
        out = self.ok("instances", "web")
        self.assertIn("web-1", out)
        self.assertIn("10.0.0.9", out)
        self.assertIn("critical", out)
        self.assertNotIn("web-1", self.ok("instances", "web", "--passing"))
        self.ok("check", "pass", "service:web-1", "--note", "all good & well")
        self.assertIn("web-1", self.ok("instances", "--passing", "web", "--tag", "blue"))
        self.assertNotIn("web-1", self.ok("instances", "web", "--tag", "v9"))
        out = self.ok("checks", "web")
        self.assertIn("service:web-1", out)
        self.assertIn("passing", out)
        self.assertIn("all good & well", out)
        data = json.loads(self.ok("--json", "instances", "web"))
        self.assertEqual(data[0]["Service"]["Meta"], {"zone": "a"})
        self.ok("maint", "web-1", "on", "--reason", "deploy")
        self.assertNotIn("web-1", self.ok("instances", "web", "--passing"))
        self.ok("maint", "web-1", "off")
        self.assertIn("web-1", self.ok("instances", "web", "--passing"))
        self.ok("deregister", "web-1")
        self.assertNotIn("web-1", self.ok("instances", "web"))

    def test_json_output_escapes_what_the_server_says(self):
        """pick and watch printed a server's strings into their JSON as they
        were: an Address with quotes made a second, made-up instance."""
        evil = ('10.0.0.1", "Port": 1, "Status": "passing"}, '
                '{"ID": "evil", "Address": "6.6.6.6", "Port": 80, "Status": "passing')
        status, text = self.d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "inj", "ID": "inj-1", "Address": evil, "Port": 5}))
        self.assertEqual(status, 200, text)
        self.addCleanup(self.d.request, "PUT", "/v1/agent/service/deregister/inj-1")
        got = json.loads(self.ok("--json", "pick", "inj"))
        self.assertEqual((got["ID"], got["Address"], got["Port"]), ("inj-1", evil, 5))
        got = json.loads(self.ok("--json", "pick", "inj", "-n", "3"))
        self.assertEqual(got, [{"ID": "inj-1", "Picks": 3}])
        p = subprocess.Popen([REGISTRYCTL, "--json", "watch", "inj"], stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ, REGISTRY_HTTP_ADDR=self.d.addr))
        try:
            line = p.stdout.readline()
        finally:
            p.kill()
            p.wait()
        got = json.loads(line)
        self.assertEqual([(i["ID"], i["Address"]) for i in got["Instances"]], [("inj-1", evil)])

    def test_snapshot_save_refuses_what_is_not_a_snapshot(self):
        """An empty, foreign or cut answer to GET /v1/snapshot was 'saved'
        (exit 0): a backup that could never be restored."""
        bodies = [b"", b"{\"not\": \"a snapshot\"}" * 4,
                  b"RSNAP002\x02\0\0\0\x28\0\0\0" + b"\0" * 80]
        srv = CannedServer(lambda: (bodies.pop(0), {}))
        self.addCleanup(srv.__exit__)
        with tempfile.TemporaryDirectory() as tmp:
            out_file = os.path.join(tmp, "backup.snap")
            for why in ("shorter", "not a registryd snapshot", "cut short"):
                rc, out, err = self.d.ctl("--http-addr", srv.addr, "snapshot", "save", out_file)
                self.assertEqual(rc, 1, (out, err))
                self.assertIn(why, err)
                self.assertFalse(os.path.exists(out_file))
                self.assertEqual(os.listdir(tmp), [])
            self.ok("snapshot", "save", out_file)  # a real one is saved
            self.assertTrue(os.path.getsize(out_file) > 60)

    def test_register_from_file_and_stdin(self):
        body = {"Name": "db", "ID": "db-1", "Port": 5432, "Checks": [{"TTL": "10s"}]}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(body, f)
        try:
            self.ok("register", "-f", f.name)
        finally:
            os.unlink(f.name)
        self.assertIn("db-1", json.loads(self.ok("--json", "instances", "db"))[0]["Service"]["ID"])
        body["ID"] = "db-2"
        self.ok("register", "-f", "-", stdin=json.dumps(body))
        self.assertEqual(len(json.loads(self.ok("instances", "db", "--json"))), 2)

    def test_services_json_and_leader(self):
        self.ok("register", "--name", "lead", "--port", "1")
        self.assertIn("lead", json.loads(self.ok("services", "--json")))
        leader = self.ok("leader").strip()
        self.assertRegex(leader, r"^127\.0\.0\.1:\d+$")
        self.assertEqual(json.loads(self.ok("--json", "leader")), leader)

    def test_server_errors_exit_1(self):
        for args, why in ((["check", "pass", "no-such-check"], "no-such-check"),
                          (["deregister", "no-such-id"], "no-such-id"),
                          (["register", "-f", "-"], "decode")):
            rc, out, err = self.d.ctl(*args, stdin="{bad json")
            self.assertEqual(rc, 1, (args, out, err))
            self.assertTrue(err.startswith("registryctl: "), err)
            self.assertIn(why, err)
            self.assertEqual(err.count("\n"), 1)

    def test_unreachable_server_exits_1(self):
        rc, out, err = self.d.ctl("--http-addr", "127.0.0.1:%d" % free_port(), "services")
        self.assertEqual(rc, 1)
        self.assertIn("refused", err.lower())

    def test_failover_to_second_address(self):
        dead = "127.0.0.1:%d" % free_port()
        out = self.ok("services", env={"REGISTRY_HTTP_ADDR": "%s,%s" % (dead, self.d.addr)})
        self.assertIn("NAME", out)

    def test_usage_errors_exit_2(self):
        for args in ([], ["frobnicate"], ["instances"], ["register", "--port", "8080"],
                     ["register", "--name", "x", "--port", "70000"], ["check", "pass"],
                     ["check", "explode", "x"], ["maint", "x", "sideways"],
                     ["deregister"], ["--http-addr", "nonsense", "services"],
                     # an empty one (an unset shell variable) talked to 127.0.0.1:8500
                     ["--http-addr", "", "services"], ["--http-addr=", "services"],
                     # framing is registryctl's own: a second Host, or a
                     # Content-Length against the body, was sent as given
                     ["call", "web", "-H", "Host: evil"],
                     ["call", "web", "-H", "transfer-encoding: chunked", "-d", "x"],
                     ["call", "web", "-H", "Content-Length : 5", "-d", "abc"],
                     ["call", "web", "-H", " Host: evil"],  # a folded line
                     ["services", "extra"]):
            rc, out, err = self.d.ctl(*args)
            self.assertEqual(rc, 2, (args, out, err))
            self.assertTrue(err.startswith("registryctl: "), err)

    def test_verb_help_metrics_and_completion(self):
        out = self.ok("instances", "--help")
        self.assertTrue(out.startswith("Usage: registryctl"))
        self.assertIn("instances NAME", out)
        self.assertNotIn("deregister", out)
        self.assertIn("registryd_raft_leader 1", self.ok("metrics"))
        self.assertIn("leader", self.ok("members"))
        self.assertIn("Gauges", json.loads(self.ok("--json", "metrics")))
        completion = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                  "packaging", "bash-completion", "registryctl")
        for words, cword, want in ((["registryctl", "in"], 1, "instances"),
                                   (["registryctl", "check", "p"], 2, "pass"),
                                   (["registryctl", "pick", "web", "--strategy", "l"], 4,
                                    "latency"),
                                   (["registryctl", "register", "--na"], 2, "--name")):
            script = ('source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _registryctl; '
                      'echo "${COMPREPLY[@]}"' % (completion, " ".join(words), cword))
            p = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
            self.assertIn(want, p.stdout.split(), (words, p.stdout, p.stderr))

    def test_help_and_version(self):
        out = self.ok("--help")
        for verb in ("services", "instances", "checks", "register", "deregister", "check",
                     "maint", "leader"):
            self.assertIn(verb, out)
        self.assertRegex(self.ok("--version"), r"^registryctl \d+\.\d+\.\d+\n$")
        p = subprocess.run([REGISTRYCTL, "-h"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)


class RawServer:
    """A loopback TCP server that hands each connection, in a thread, to
    serve(sock, n) (n counts connections from 0); requests keeps each
    request head read with read_request()."""

    def __init__(self, serve):
        self.requests = []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.serve = serve
        self.open = []  # (connection, its handler thread)
        self.acceptor = threading.Thread(target=self.loop, daemon=True)
        self.acceptor.start()

    def loop(self):
        n = 0
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            t = threading.Thread(target=self.serve, args=(c, n), daemon=True)
            self.open.append((c, t))
            t.start()
            n += 1

    def read_request(self, c):
        """The head and its Content-Length body; the head is recorded."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        self.requests.append(head.split(b"\r\n")[0].decode())
        m = re.search(rb"(?i)content-length: *(\d+)", head)
        want = int(m.group(1)) if m else 0
        while len(body) < want:
            chunk = c.recv(65536)
            if not chunk:
                break
            body += chunk
        return head

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """No socket is closed while a thread may still use it: a closed
        descriptor's number goes to the next socket opened, and a call the
        thread was about to make lands there. The accept thread, late under
        load, once took the next test's listener and handed its connection
        to an old handler that reset it (CI: "Connection reset by peer")."""
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes accept() with EINVAL
        except OSError:
            pass
        self.acceptor.join(10)
        if not self.acceptor.is_alive():
            self.lsock.close()
        for c, _ in self.open:
            try:
                c.shutdown(socket.SHUT_RDWR)  # its client sees the end
            except OSError:
                pass
        deadline = time.monotonic() + 1
        for c, t in self.open:
            t.join(max(0, deadline - time.monotonic()))
            if not t.is_alive():  # one still asleep keeps its socket open
                c.close()


class HostileServerTest(unittest.TestCase):
    """registryctl (and libregistry under it) against servers that misbehave."""

    def ctl(self, addr, *args, timeout=60):
        t0 = time.monotonic()
        p = subprocess.run([REGISTRYCTL] + list(args), capture_output=True, text=True,
                           env=dict(os.environ, REGISTRY_HTTP_ADDR=addr), timeout=timeout)
        return p.returncode, p.stdout, p.stderr, time.monotonic() - t0

    def test_acl_bootstrap_that_fails_exits_1(self):
        """A failed `acl bootstrap` freed a pointer never set: SIGBUS."""
        rc, out, err, _ = self.ctl("127.0.0.1:%d" % free_port(), "acl", "bootstrap")
        self.assertEqual(rc, 1, (out, err))
        self.assertTrue(err.startswith("registryctl: "), err)
        self.assertEqual(err.count("\n"), 1, err)

    def test_answer_on_a_connection_kept_open(self):
        """An answer whose Content-Length (or last chunk) says it is whole is
        taken at once, though the server keeps the connection open (a proxy
        may): the client waited for the close and timed out."""
        body = b'{"web":["v1"]}'
        for framing in ("length", "chunked"):
            def serve(c, n, framing=framing):
                srv.read_request(c)
                if framing == "length":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              b"X-Consul-Index: 3\r\nContent-Length: %d\r\n\r\n" % len(body) +
                              body)
                else:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              b"X-Consul-Index: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
                time.sleep(30)  # and never closes
            with RawServer(serve) as srv, self.subTest(framing=framing):
                rc, out, err, took = self.ctl(srv.addr, "services")
                self.assertEqual(rc, 0, (out, err))
                self.assertIn("web", out)
                self.assertLess(took, 5)

    def test_a_write_is_not_sent_again_elsewhere(self):
        """A write sent whole to a server that then dropped the connection
        may have been done: it is not sent to the next server (a token, say,
        created twice). A read still goes on to the next."""
        def drop(c, n):
            srv_a.read_request(c)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()  # a reset, no answer

        def answer(c, n):
            srv_b.read_request(c)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"X-Consul-Index: 3\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            c.close()
        with RawServer(drop) as srv_a, RawServer(answer) as srv_b:
            both = "%s,%s" % (srv_a.addr, srv_b.addr)
            rc, out, err, _ = self.ctl(both, "register", "--name", "once", "--port", "80")
            self.assertEqual(rc, 1, (out, err))
            self.assertEqual(len(srv_a.requests), 1, srv_a.requests)
            self.assertEqual(srv_b.requests, [])
            self.assertIn("not sent again", err)
            rc, out, err, _ = self.ctl(both, "services")
            self.assertEqual(rc, 0, (out, err))
            self.assertEqual([r.split()[0] for r in srv_b.requests], ["GET"])

    def test_answers_read_strictly_and_shown_safely(self):
        """What a server says is read by the letter and shown as text: a
        status past 2^31 (sscanf's %d overflowed: "-2147483648: ..."), a
        chunk size "0x2" (strtoul took it), an error whose text carries
        terminal escapes (they reached the terminal), an error without text
        (its "(no reason given)" was printed with a precision of 0)."""
        cases = (
            (b"HTTP/1.1 2147483648 OK\r\nContent-Length: 2\r\n\r\n{}", "malformed", None),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
             "malformed", None),
            (b"HTTP/1.1 500 Oops\r\nContent-Length: 14\r\n\r\n\x1b[31mred\x07 text",
             "500: ?[31mred? text", "\x1b"),
            (b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", "500: (no reason given)", None))
        for answer, want, never in cases:
            def serve(c, n, answer=answer):
                srv.read_request(c)
                c.sendall(answer)
                c.close()
            with RawServer(serve) as srv, self.subTest(answer=answer):
                rc, out, err, _ = self.ctl(srv.addr, "services")
                self.assertEqual(rc, 1, (out, err))
                self.assertIn(want, err)
                if never:
                    self.assertNotIn(never, err)

    def test_leave_waits_a_bounded_time(self):
        """`leave` on a server that took the PUT and then accepts but never
        answers gives up after 15 s: each look could take 10 s, 150 of them."""
        def serve(c, n):
            head = srv.read_request(c)
            if head.startswith(b"PUT /v1/agent/leave"):
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                c.close()
                return
            time.sleep(60)
        with RawServer(serve) as srv:
            rc, out, err, took = self.ctl(srv.addr, "leave", timeout=40)
        self.assertEqual(rc, 1, (out, err))
        self.assertIn("has not stopped after 15 s", err)
        self.assertLess(took, 25)


if __name__ == "__main__":
    unittest.main()
