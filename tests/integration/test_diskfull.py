#!/usr/bin/python3
"""A full data disk: writes fail with a clear 507 and a log line, reads go
on, writes resume by themselves once space is freed, and every acknowledged
write is still there after a restart. Runs on a small tmpfs mounted for the
test (skipped where the machine does not allow mounting)."""
import http.server
import json
import os
import subprocess
import threading
import time
import unittest

from harness import Registryd, TempDir

REG = "/v1/agent/service/register"


class DiskFullTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.mnt = os.path.join(self.tmp.path, "disk")
        os.makedirs(self.mnt)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", self.mnt],
                           capture_output=True, text=True)
        if p.returncode != 0:
            self.tmp.cleanup()
            self.skipTest("cannot mount a tmpfs here (needs root): " + p.stderr.strip())
        self.d = Registryd(data_dir=os.path.join(self.mnt, "d"))

    def tearDown(self):
        if self.d.proc:
            self.d.stop(check=False)
        subprocess.run(["umount", self.mnt], check=True)
        self.tmp.cleanup()

    def register(self, sid):
        body = json.dumps({"Name": "fill", "ID": sid, "Port": 1, "Meta": {"pad": "x" * 400}})
        return self.d.request("PUT", REG, body, timeout=20)

    def test_disk_full(self):
        self.d.start()
        acked = []
        for i in range(20):
            self.assertEqual(self.register("a-%d" % i)[0], 200)
            acked.append("a-%d" % i)
        filler = self.fill()
        # writes are refused within a few seconds, with a reason; none crashes it
        refused, deadline, i = None, time.monotonic() + 15, 0
        while refused is None and time.monotonic() < deadline:
            status, text = self.register("b-%d" % i)
            if status == 200:
                acked.append("b-%d" % i)
            else:
                refused = (status, text)
            i += 1
        self.assertIsNotNone(refused, "writes never refused on a full disk")
        self.assertEqual(refused[0], 507, refused[1])
        self.assertIn("no space", refused[1])
        self.assertIsNone(self.d.proc.poll(), "registryd died:\n" + self.d.log()[-2000:])
        self.assertIn("data disk full", self.d.log())
        # reads go on
        status, text = self.d.request("GET", "/v1/catalog/service/fill")
        self.assertEqual(status, 200)
        self.assertEqual(len(json.loads(text)), len(acked))
        # and a backup: with no room for its copy on the disk, the snapshot
        # is sent from the store as it is read, whole
        import snapfmt
        import urllib.request
        with urllib.request.urlopen("http://%s/v1/snapshot" % self.d.addr, timeout=60) as r:
            snap = r.read()
        _, recs = snapfmt.parse(snap)
        saved = {r[1] for r in recs if r[0] == 0}
        for sid in acked:
            self.assertIn(sid.encode(), saved)
        self.assertIn("no room on the data disk for a snapshot's copy", self.d.log())
        # space comes back: writes resume by themselves
        os.unlink(filler)
        deadline = time.monotonic() + 15
        while True:
            status, text = self.register("c-0")
            if status == 200:
                acked.append("c-0")
                break
            self.assertLess(time.monotonic(), deadline, "writes did not resume: " + text)
            time.sleep(0.2)
        self.assertIn("writes resume", self.d.log())
        self.d.stop()
        self.d.start()
        services = json.loads(self.d.request("GET", "/v1/agent/services")[1])
        self.assertEqual(sorted(services), sorted(acked))

    def fill(self):
        """Takes every free block; the filler's path."""
        filler = os.path.join(self.mnt, "filler")
        with open(filler, "wb") as f:
            try:
                for _ in range(200):
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        return filler

    def test_check_result_refused_is_sent_again(self):
        """A check's new status the disk refused was held back for 10 s
        (PENDING_MS) once space came back: results the same as the one
        'pending' were not sent again, and the registry kept the old
        status. Now a refusal lets the next result go."""
        code = [200]

        class Backend(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(code[0])
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass
        backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
        threading.Thread(target=backend.serve_forever, daemon=True).start()
        self.addCleanup(backend.server_close)
        self.addCleanup(backend.shutdown)
        self.d.start()
        url = "http://127.0.0.1:%d/" % backend.server_address[1]
        status, text = self.d.request("PUT", REG, json.dumps(
            {"Name": "hc", "ID": "hc-1", "Port": 1,
             "Check": {"CheckID": "hc-check", "HTTP": url, "Interval": "1s"}}))
        self.assertEqual(status, 200, text)

        def stored():
            checks = json.loads(self.d.request("GET", "/v1/health/checks/hc")[1])
            return checks[0]["Status"] if checks else None
        deadline = time.monotonic() + 15
        while stored() != "passing":
            self.assertLess(time.monotonic(), deadline, "never passing")
            time.sleep(0.2)
        filler = self.fill()
        deadline, i = time.monotonic() + 15, 0
        while self.register("b-%d" % i)[0] != 507:
            self.assertLess(time.monotonic(), deadline, "writes never refused")
            i += 1
        code[0] = 500
        time.sleep(3)  # the checker sees it fail; its update is refused
        self.assertEqual(stored(), "passing")
        os.unlink(filler)
        t0 = time.monotonic()
        while stored() != "critical":
            self.assertLess(time.monotonic() - t0, 30, "never critical")
            time.sleep(0.1)
        # space is looked at every second or so, the check runs every
        # second; held back, the update came some 7 s after (10 s after
        # the refused one)
        self.assertLess(time.monotonic() - t0, 5)

    def test_restore_larger_than_the_disk(self):
        """The body of PUT /v1/snapshot goes to a file in the data dir as it
        arrives: one that does not fit is refused with 507 once it has been
        read, the registry unchanged, the space given back."""
        import bigstore
        self.d.start()
        for i in range(20):
            self.assertEqual(self.register("a-%d" % i)[0], 200)
        before = self.d.request("GET", "/v1/agent/services")[1]
        st = os.statvfs(self.mnt)
        free_before = st.f_bavail * st.f_frsize
        meta = {"k%02d" % i: "v" * 480 for i in range(64)}
        big = bigstore.big_snapshot(4000, meta=meta)  # ~125 MB on a 100 MB disk
        self.assertGreater(len(big), 110 << 20)
        status, text = self.d.request("PUT", "/v1/snapshot", big, timeout=120)
        self.assertEqual(status, 507, text)
        self.assertIn("Cannot store the request body", text)
        self.assertIn("No space left", text)
        self.assertIsNone(self.d.proc.poll(), "registryd died:\n" + self.d.log()[-2000:])
        self.assertEqual(self.d.request("GET", "/v1/agent/services")[1], before)
        # the file never took the store's reserve: writes go on at once
        self.assertEqual(self.register("after-0")[0], 200)
        self.assertEqual([f for f in os.listdir(os.path.join(self.mnt, "d"))
                          if f.startswith(".spool")], [])
        st = os.statvfs(self.mnt)
        self.assertGreater(st.f_bavail * st.f_frsize, free_before - (8 << 20))  # blocks given back
        # one that fits as a file but not three times over (raft log, store)
        # is refused before it reaches raft
        free_now = st.f_bavail * st.f_frsize
        n = max(1, int((free_now - (32 << 20)) / 2 / 31000))
        mid = bigstore.big_snapshot(n, meta=meta)
        self.assertLess(len(mid) + (32 << 20), free_now)
        status, text = self.d.request("PUT", "/v1/snapshot", mid, timeout=120)
        self.assertEqual(status, 507, text)
        self.assertIn("needs about", text)
        self.assertEqual(self.register("after-1")[0], 200)


if __name__ == "__main__":
    unittest.main()
