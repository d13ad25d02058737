#!/usr/bin/python3
"""Start-up and shutdown with a large store: SIGTERM at any moment of
start-up stops the daemon promptly; damaged or missing raft state is an
error that names the file (or the recovery flag), never a hang or a silent
start with less data."""
import os
import signal
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


if __name__ == "__main__":
    unittest.main()
