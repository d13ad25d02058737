#!/usr/bin/python3
"""Start-up and shutdown with a large store: SIGTERM at any moment of
start-up stops the daemon promptly; damaged or missing raft state is an
error that names the file (or the recovery flag), never a hang or a silent
start with less data."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import unittest

import bigstore
from harness import Registryd, TempDir

N_BIG = 60000


class LifecycleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.dir = os.path.join(cls.tmp.path, "big")
        d = Registryd(data_dir=cls.dir, extra_args=["--max-body-size", "1GiB"]).start()
        status, text = d.request("PUT", "/v1/snapshot", bigstore.big_snapshot(N_BIG))
        assert status == 200, text
        d.stop()
        cls.d = d

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_sigterm_during_startup(self):
        d = self.d
        for delay in (0.3, 0.8, 1.5, 2.5, "ready"):
            with self.subTest(delay=delay):
                d.start(wait=False)
                if delay == "ready":
                    d.wait_ready(timeout=60)
                else:
                    time.sleep(delay)
                d.proc.send_signal(signal.SIGTERM)
                try:
                    rc = d.proc.wait(20)
                except subprocess.TimeoutExpired:
                    d.proc.kill()
                    d.proc.wait()
                    self.fail("no exit within 20 s of SIGTERM %s s after start:\n%s"
                              % (delay, d.log()[-2000:]))
                # killed by the signal (before handlers exist) or a clean exit
                self.assertIn(rc, (0, -signal.SIGTERM), d.log()[-2000:])
                self.assertEqual(d.sanitizer_errors(), [])
                d.proc = None
        d.start()
        self.assertEqual(len(d.request("GET", "/v1/catalog/services")[1].split(",")), 50)
        d.stop()


def register(d, n, prefix="s"):
    for i in range(n):
        status, text = d.request("PUT", "/v1/agent/service/register",
                                 '{"Name": "%s%d", "Port": 1}' % (prefix, i))
        assert status == 200, text


def count(d):
    return len(json.loads(d.request("GET", "/v1/agent/services")[1]))


class RaftStateTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.d = Registryd(data_dir=os.path.join(self.tmp.path, "d"),
                           extra_args=["--raft-snapshot-threshold", "16"])

    def tearDown(self):
        if self.d.proc:
            self.d.stop(check=False)
        self.tmp.cleanup()

    def refused(self, *words):
        """The next start exits by itself, with a reason naming words."""
        self.d.start(wait=False)
        try:
            rc = self.d.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.d.proc.kill()
            self.d.proc.wait()
            self.fail("start-up hangs:\n" + self.d.log()[-2000:])
        log = self.d.log()
        self.d.proc = None
        self.assertNotEqual(rc, 0, log)
        for w in words:
            self.assertIn(w, log)
        return log

    def raft_dir(self):
        return os.path.join(self.d.data_dir, "raft")

    def test_damaged_raft_snapshot(self):
        self.d.start()
        register(self.d, 40)
        self.d.stop()
        snaps = sorted(f for f in os.listdir(self.raft_dir())
                       if f.startswith("snapshot-") and not f.endswith(".meta"))
        self.assertTrue(snaps)
        path = os.path.join(self.raft_dir(), snaps[-1])
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        self.refused(path, "damaged")

    def test_deleted_raft_directory(self):
        self.d.start()
        register(self.d, 30)
        self.d.stop()
        shutil.rmtree(self.raft_dir())
        for _ in range(2):  # refused every time, not just once
            self.refused("raft state", "missing", "--recover-from-store")
        self.d.extra.append("--recover-from-store")
        self.d.start()
        self.assertEqual(count(self.d), 30)
        self.d.stop()
        self.d.extra.remove("--recover-from-store")
        self.d.start()
        self.assertEqual(count(self.d), 30)
        register(self.d, 5, prefix="t")  # and it takes writes that last
        self.d.stop()
        self.d.start()
        self.assertEqual(count(self.d), 35)

    def test_deleted_raft_segments(self):
        self.d.start()
        register(self.d, 40)
        self.d.stop()
        for f in os.listdir(self.raft_dir()):
            if f[0].isdigit() or f.startswith("open-"):  # closed and open segments
                os.unlink(os.path.join(self.raft_dir(), f))
        for _ in range(2):
            self.refused("ends at index", "--recover-from-store")
        self.d.extra.append("--recover-from-store")
        self.d.start()
        self.assertEqual(count(self.d), 40)
        self.d.stop()
        self.d.extra.remove("--recover-from-store")
        self.d.start()
        self.assertEqual(count(self.d), 40)


class DataDirCase(unittest.TestCase):
    """A server (not started) with a data dir of its own, self.d."""

    def setUp(self):
        self.tmp = TempDir()
        self.d = Registryd(data_dir=os.path.join(self.tmp.path, "d"))

    def tearDown(self):
        if self.d.proc:
            self.d.stop(check=False)
        self.tmp.cleanup()


class LeaveTest(DataDirCase):
    """PUT /v1/agent/leave (registryctl leave) stops a server that is alone
    as Consul's agent stops (there is no cluster to leave), keeping its
    data. It was a 404: `consul leave` failed."""

    def test_leave_stops_a_lone_server_and_keeps_its_data(self):
        self.d.start()
        status, text = self.d.request("PUT", "/v1/agent/service/register",
                                      json.dumps({"Name": "kept", "ID": "kept-1"}))
        self.assertEqual(status, 200, text)
        status, text = self.d.request("GET", "/v1/agent/leave")
        self.assertEqual(status, 405, text)  # a PUT, as Consul's
        rc, out, err = self.d.ctl("leave")
        self.assertEqual((rc, err), (0, ""), out)
        self.assertIn("Graceful leave complete", out)
        self.assertEqual(self.d.proc.wait(10), 0, self.d.log())
        self.assertFalse(self.d.sanitizer_errors(), self.d.log())
        self.d.proc = None
        self.d.start()
        status, text = self.d.request("GET", "/v1/catalog/service/kept")
        self.assertEqual([i["ServiceID"] for i in json.loads(text)], ["kept-1"], text)


class SignalsTest(DataDirCase):
    def test_more_sigterms_while_stopping(self):
        """SIGTERM after SIGTERM (a second Ctrl-C, a supervisor that asks
        again) while the server stops: it still stops cleanly, status 0. The
        default action came back once the signal events were freed, and a
        late one ended the process by the signal halfway through its stop."""
        d = self.d.start()
        for i in range(20):
            status, text = d.request("PUT", "/v1/agent/service/register",
                                     json.dumps({"Name": "s", "ID": "s-%d" % i}))
            self.assertEqual(status, 200, text)
        d.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while d.proc.poll() is None and time.monotonic() < deadline:
            try:
                d.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                break
            time.sleep(0.001)
        rc = d.proc.wait(15)
        self.assertEqual(rc, 0, d.log()[-2000:])
        d.proc = None


class StartupErrorsTest(DataDirCase):
    """Each start-up failure says what is really wrong, promptly."""

    def fails(self, *words, within=15):
        self.d.start(wait=False)
        try:
            rc = self.d.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.d.proc.kill()
            self.d.proc.wait()
            self.fail("no exit within %d s:\n%s" % (within, self.d.log()[-2000:]))
        log = self.d.log()
        self.d.proc = None
        self.assertNotEqual(rc, 0, log)
        for w in words:
            self.assertIn(w, log)
        self.assertNotIn("in use by another registryd", log)
        return log

    def test_lock_is_a_directory(self):
        os.makedirs(os.path.join(self.d.data_dir, "LOCK"))
        self.fails("lock file", "Is a directory")

    def test_read_only_data_dir(self):
        os.makedirs(self.d.data_dir)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", self.d.data_dir],
                          capture_output=True).returncode != 0:
            self.skipTest("cannot mount a read-only tmpfs here (needs root)")
        try:
            self.fails("lock file", "Read-only file system")
        finally:
            subprocess.run(["umount", self.d.data_dir], check=True)

    def test_deleted_server_json(self):
        self.d.start()
        self.d.stop()
        os.unlink(os.path.join(self.d.data_dir, "server.json"))
        self.fails("server.json is missing", "raft identity", within=10)

    def test_raft_port_in_use(self):
        self.d.start()
        self.d.stop()
        with open(os.path.join(self.d.data_dir, "server.json")) as f:
            host, port = json.load(f)["raft_addr"].rsplit(":", 1)
        squatter = socket.socket()
        squatter.bind((host, int(port)))
        squatter.listen(1)
        try:
            self.fails("raft address %s:%s" % (host, port), "address already in use")
        finally:
            squatter.close()


if __name__ == "__main__":
    unittest.main()
