#!/usr/bin/python3
"""BIND (Debian's bind9) in front of registryd, set up as README.md says:
the registry's domain forwarded to registryd's DNS port, registryd run with
--dns-enable-truncate and --dns-a-record-limit 100, and named.conf's
options with max-records-per-type 0. BIND 9.18.28 and later cache at most
100 records of any type by default and answer SERVFAIL beyond: the SRV
answer of a service with more than 100 instances (fetched over TCP after
TC) was SERVFAIL through BIND with the README's earlier advice (the A limit
alone). The named.conf is the README's own block, with only what runs it
here added: its files in a temporary directory, a loopback port, and root
hints on loopback (nothing is asked of the world)."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import ROOT, Registryd, free_port, socket_fds
from test_dns import answers, status

NAMED = shutil.which("named") or "/usr/sbin/named"  # scripts/install-deps: bind9


def readme_named_conf():
    """The named.conf block of README.md's resolver section."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    m = re.search(r"^```\n(# named\.conf.*?)^```$", text, re.M | re.S)
    assert m, "README.md has no named.conf block"
    return m.group(1)


def ask(port, name, qtype):
    """dig through the resolver (recursion desired; TC makes dig ask again over TCP)."""
    return subprocess.run(["dig", "-p", str(port), "@127.0.0.1", "+rec", "+time=5", "+tries=1",
                           name, qtype], capture_output=True, text=True, timeout=30).stdout


class BindInFrontTest(unittest.TestCase):
    def setUp(self):
        # installed by scripts/install-deps: a missing named is a failure
        self.assertTrue(os.access(NAMED, os.X_OK), "named not installed (bind9)")
        self.d = Registryd(extra_args=["--dns-enable-truncate", "--dns-a-record-limit", "100"])
        self.d.start()
        self.addCleanup(self.d.stop)
        for i in range(120):
            code, text = self.d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "many", "ID": "many-%d" % i, "Address": "10.8.0.%d" % (i + 1),
                 "Port": 9000 + i}))
            self.assertEqual(code, 200, text)
        self.dir = tempfile.mkdtemp(prefix="named-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        for attempt in range(3):  # a port another test took first: another port
            if self.start_named(free_port()):
                return
            self.stop_named()
        self.fail("named could not listen:\n" + self.named_log())

    def start_named(self, port):
        """named on port, as README.md sets it up; False when the port was
        taken (named goes on without it, and another test's server would
        answer our questions)."""
        self.port = port
        conf = readme_named_conf().replace("port 8600;", "port %d;" % self.d.dns_port)
        self.assertIn("max-records-per-type 0;", conf)
        self.assertIn("dnssec-validation no;", conf)
        own = """options {
    directory "%(dir)s";
    pid-file "%(dir)s/named.pid";
    session-keyfile "%(dir)s/session.key";
    managed-keys-directory "%(dir)s";
    listen-on port %(port)d { 127.0.0.1; };
    listen-on-v6 { none; };
    allow-query { localhost; };
""" % {"dir": self.dir, "port": self.port}
        conf = conf.replace("options {\n", own, 1)
        conf += 'controls { };\nzone "." { type hint; file "%s/root.hints"; };\n' % self.dir
        with open(os.path.join(self.dir, "root.hints"), "w") as f:
            f.write(".\t3600000\tNS\tlocalhost.\nlocalhost.\t3600000\tA\t127.0.0.1\n")
        path = os.path.join(self.dir, "named.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.log = open(os.path.join(self.dir, "named.log"), "a")
        self.addCleanup(self.log.close)
        # -g: in the foreground, logging to stderr; as root it stays root
        # (no -u): it writes only in its directory
        self.named = subprocess.Popen([NAMED, "-g", "-4", "-n", "1", "-c", path],
                                      stdout=self.log, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop_named)
        deadline = time.monotonic() + 10
        while not self.named_has_udp(port) or \
                status(ask(self.port, "registry.", "SOA")) != "NOERROR":
            if "address in use" in self.named_log():
                return False
            self.assertIsNone(self.named.poll(), "named exited:\n" + self.named_log())
            self.assertLess(time.monotonic(), deadline, "named never answered:\n"
                            + self.named_log())
            time.sleep(0.2)
        return "address in use" not in self.named_log()

    def named_has_udp(self, port):
        """Whether named's own socket holds UDP port (not another server's)."""
        mine = socket_fds(self.named.pid)
        with open("/proc/net/udp") as f:
            next(f)
            return any(int(c[1].rsplit(":", 1)[1], 16) == port and c[9] in mine
                       for c in (line.split() for line in f))

    def named_log(self):
        """What named wrote (read through a descriptor of our own: a seek on
        the one it shares would move where it writes)."""
        with open(self.log.name, errors="replace") as f:
            return f.read()[-4000:]

    def stop_named(self):
        self.named.terminate()
        try:
            self.named.wait(10)
        except subprocess.TimeoutExpired:
            self.named.kill()
            self.named.wait()

    def test_large_service_through_bind(self):
        out = ask(self.port, "many.service.registry.", "A")
        self.assertEqual(status(out), "NOERROR", out)
        self.assertEqual(len(answers(out, "A")), 100, out)
        out = ask(self.port, "many.service.registry.", "SRV")
        self.assertEqual(status(out), "NOERROR", out + self.named_log())  # SERVFAIL without
        self.assertEqual(len(answers(out, "SRV")), 120, out)             # max-records-per-type 0
        self.assertEqual(len(set(answers(out, "SRV"))), 120, out)
        out = ask(self.port, "nosuch.service.registry.", "A")
        self.assertEqual(status(out), "NXDOMAIN", out)
        self.assertIn("SOA", out.split("AUTHORITY SECTION")[-1], out)


if __name__ == "__main__":
    unittest.main()
