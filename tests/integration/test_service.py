#!/usr/bin/python3
"""registryd under a service manager: sd_notify READY/STOPPING and watchdog
pings (Type=notify, WatchdogSec), and SIGHUP reloading the configuration.
The notification socket is ours: no systemd needed."""
import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from harness import REGISTRYD, free_port

HAVE_SYSTEMD = os.environ.get("REGISTRY_HAVE_SYSTEMD") == "1"


class ServiceTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.config = os.path.join(self.dir.name, "registryd.yaml")
        self.http = free_port()
        self.write_config("info")

    def tearDown(self):
        self.dir.cleanup()

    def write_config(self, level, http=None, concurrent=1024):
        with open(self.config, "w") as f:
            f.write("dev: true\nhttp_addr: 127.0.0.1:%d\ndns_addr: 127.0.0.1:%d\n"
                    "log_level: %s\ncheck_max_concurrent: %d\n"
                    % (http or self.http, free_port(), level, concurrent))

    def start(self, env=None):
        self.log = open(os.path.join(self.dir.name, "log"), "w+")
        return subprocess.Popen([REGISTRYD, "--config", self.config], env=env,
                                stdout=self.log, stderr=subprocess.STDOUT)

    def read_log(self):
        self.log.flush()
        with open(os.path.join(self.dir.name, "log")) as f:
            return f.read()

    @unittest.skipUnless(HAVE_SYSTEMD, "built without libsystemd (REGISTRY_SYSTEMD)")
    def test_notify_ready_watchdog_stopping(self):
        path = os.path.join(self.dir.name, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="300000")
        p = self.start(env)
        try:
            first = sock.recv(4096).decode()
            self.assertIn("READY=1", first)
            pings, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < 1.0:
                if "WATCHDOG=1" in sock.recv(4096).decode():
                    pings += 1
            self.assertGreaterEqual(pings, 4)  # every WATCHDOG_USEC/2 = 150 ms
            p.send_signal(signal.SIGTERM)
            rest = ""
            while "STOPPING=1" not in rest:
                rest += sock.recv(4096).decode()
            self.assertEqual(p.wait(20), 0)
        finally:
            if p.poll() is None:
                p.kill()
            sock.close()

    def test_sighup_reloads(self):
        p = self.start()
        try:
            deadline = time.monotonic() + 15
            while 'msg="ready"' not in self.read_log() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.write_config("debug", http=free_port(), concurrent=7)
            p.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "configuration reloaded" not in self.read_log() and time.monotonic() < deadline:
                time.sleep(0.05)
            log = self.read_log()
            self.assertIn('log level changed" log_level=debug', log)
            self.assertIn("restart to apply\" key=http_addr", log)
            self.assertNotIn("key=check_max_concurrent", log)  # applied live
            deadline = time.monotonic() + 3
            while "max_concurrent=7" not in self.read_log() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertIn('limits changed" max_concurrent=7', self.read_log())
            # a broken file is refused and the server keeps running
            with open(self.config, "w") as f:
                f.write("dev: true\nlog_level: [nope]\n")
            p.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "reload failed" not in self.read_log() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertIn("registryd.yaml:2:12", self.read_log())
            self.assertIsNone(p.poll())
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(20), 0)
        finally:
            if p.poll() is None:
                p.kill()


if __name__ == "__main__":
    unittest.main()
