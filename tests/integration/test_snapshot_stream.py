"""PUT /v1/snapshot reads its body into a file as it arrives (http_spool.c),
never into the daemon's heap, in every framing a client may use:
Content-Length, chunked (Go's net/http, so `consul snapshot restore`),
Expect: 100-continue (curl), and followed by a pipelined request. Framing
that cannot be read closes the connection and changes nothing."""
import json
import os
import socket
import threading
import time
import unittest

import bigstore
import snapfmt
from harness import Registryd, TempDir, sanitized_binary


def rss_anon_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """The daemon's peak anonymous memory while something runs."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, rss_anon_kb(pid), threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, rss_anon_kb(self.pid))
            except OSError:
                return
            time.sleep(0.005)

    def stop(self):
        self.done.set()
        self.join(5)
        return self.peak


class Conn:
    """A socket and the bytes read past the last response."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=30)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.s.close()

    def sendall(self, data):
        self.s.sendall(data)

    def recv(self, n):
        return self.s.recv(n)

    def settimeout(self, t):
        self.s.settimeout(t)


def read_response(sock, timeout=60):
    """One HTTP/1.1 response (Content-Length or chunked) from sock: status,
    headers (lower-case names), body; leftover bytes stay in sock.buf."""
    sock.settimeout(timeout)
    buf = sock.buf
    while b"\r\n\r\n" not in buf:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("closed before a response head: %r" % buf)
        buf += more
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while True:
            while b"\r\n" not in buf:
                buf += sock.recv(65536)
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                buf += sock.recv(65536)
            body, buf = body + buf[:size], buf[size + 2:]
            if size == 0:
                break
    else:
        n = int(headers.get("content-length", "0"))
        while len(buf) < n:
            more = sock.recv(65536)
            if not more:
                break
            buf += more
        body, buf = buf[:n], buf[n:]
    sock.buf = buf
    return status, headers, body


def chunked(data, sizes):
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        k += 1
        out.append(b"%x;ext=1\r\n" % len(data[i:i + n]) + data[i:i + n] + b"\r\n")
        i += n
    out.append(b"0\r\nX-Trailer: yes\r\n\r\n")
    return b"".join(out)


class SnapshotStreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.d = Registryd(data_dir=os.path.join(cls.tmp.path, "data")).start()
        cls.small = bigstore.big_snapshot(300)
        cls.other = bigstore.big_snapshot(120)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.tmp.cleanup()

    def connect(self):
        return Conn(self.d.addr)

    def count(self):
        return len(json.loads(self.d.request("GET", "/v1/agent/services")[1]))

    def test_chunked_with_expect_continue_then_keep_alive(self):
        with self.connect() as s:
            s.sendall(b"PUT /v1/snapshot HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            status, _, _ = read_response(s)
            self.assertEqual(status, 100)  # the client may send the body now
            body = chunked(self.small, [1, 7, 4096, 65536, 3])
            for i in range(0, len(body), 50000):  # in pieces, as a network delivers
                s.sendall(body[i:i + 50000])
            status, _, text = read_response(s)
            self.assertEqual(status, 200, text)
            self.assertEqual(self.count(), 300)
            # the same connection goes on serving
            s.sendall(b"GET /v1/catalog/services HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, text = read_response(s)
            self.assertEqual(status, 200)
            self.assertEqual(len(json.loads(text)), 50)

    def test_pipelined_request_after_the_body(self):
        with self.connect() as s:
            s.sendall(b"PUT /v1/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                      % len(self.other) + self.other +
                      b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, text = read_response(s)
            self.assertEqual(status, 200, text)
            status, _, text = read_response(s)
            self.assertEqual(status, 200)
            self.assertTrue(json.loads(text))
        self.assertEqual(self.count(), 120)

    def test_unreadable_framing_closes_and_changes_nothing(self):
        self.assertEqual(self.d.request("PUT", "/v1/snapshot", self.small)[0], 200)
        before = self.d.request("GET", "/v1/agent/services")[1]
        heads = [
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",                  # not hex
            b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcdXY",             # no CRLF after data
            b"Transfer-Encoding: gzip\r\n\r\n",                          # unsupported coding
            b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n",            # disagreeing lengths
            b"Content-Length: -1\r\n\r\n",
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",   # both
            b"X-Long: " + b"a" * (70 << 10) + b"\r\n\r\n",                # head too long
            # a NUL would end the line early, and the head evhttp is given
            # back with an empty line in it: the rest a request of its own
            b"\0\0\r\nDELETE /v1/agent/service/deregister/x HTTP/1.1\r\n\r\n",
            b"no colon here\r\n\r\n",
        ]
        for h in heads:
            with self.connect() as s:
                try:
                    s.sendall(b"PUT /v1/snapshot HTTP/1.1\r\nHost: x\r\n" + h)
                    s.settimeout(10)
                    got = s.recv(65536)
                except (ConnectionError, socket.timeout) as e:
                    got = repr(e).encode()
                # closed without an answer (or reset), never a 200
                self.assertNotIn(b"200 OK", got, h[:40])
        self.assertEqual(self.d.request("GET", "/v1/agent/services")[1], before)
        self.assertIn("request body refused", self.d.log())
        # a damaged snapshot that arrives whole is refused with the reason
        status, text = self.d.request("PUT", "/v1/snapshot", self.small[:-3] + b"\0\0\0")
        self.assertEqual(status, 400, text)
        self.assertIn("data unchanged", text)
        self.assertEqual(self.d.request("GET", "/v1/agent/services")[1], before)

    def test_no_spool_file_is_left_behind(self):
        self.assertEqual(self.d.request("PUT", "/v1/snapshot", self.other)[0], 200)
        data = os.path.join(self.tmp.path, "data")
        self.assertEqual([f for f in os.listdir(data) if f.startswith(".spool")], [])


class SnapshotMemoryTest(unittest.TestCase):
    def test_restore_does_not_hold_the_body_in_the_heap(self):
        """A 50 MB restore: the body goes to a file and is mapped, the raft
        entry is the one copy in the heap (libraft keeps entries in memory).
        Before, the body was held by evhttp, pulled up, base64-encoded into
        JSON and encoded again: the peak grew by ~8x the snapshot."""
        tmp = TempDir()
        # few instances, large ones: what the registry keeps per instance
        # stays small next to the restore's own copies
        meta = {"k%02d" % i: "v" * 480 for i in range(64)}
        big = bigstore.big_snapshot(1600, meta=meta)
        d = Registryd(data_dir=os.path.join(tmp.path, "data"),
                      ).start()
        try:
            path = os.path.join(tmp.path, "big.snap")
            with open(path, "wb") as f:
                f.write(big)
            del big
            # the first restore fills the registry (its own memory: the
            # checker's state, the listings); the second, of the same size,
            # costs only the restore's copies
            rc, out, err = d.ctl("snapshot", "restore", path)
            self.assertEqual(rc, 0, err)
            time.sleep(1)
            base = rss_anon_kb(d.proc.pid)
            sampler = Sampler(d.proc.pid)
            sampler.start()
            rc, out, err = d.ctl("snapshot", "restore", path)
            peak = sampler.stop()
            self.assertEqual(rc, 0, err)
            size_kb = os.path.getsize(path) // 1024
            grew = peak - base
            print("second restore of %d KiB: anonymous memory peak +%d KiB (%.2fx)"
                  % (size_kb, grew, grew / size_kb))
            # the raft entry (libraft keeps entries in memory), and the
            # registry's own per-instance state built anew before the old
            # goes; ~8x before (evhttp's copy, a pull-up, base64 in JSON...)
            if not sanitized_binary():  # ASan's quarantine holds what is freed
                self.assertLess(grew, 3 * size_kb)
            self.assertEqual(len(json.loads(d.request("GET", "/v1/catalog/services")[1])), 50)
            self.assertEqual(len(json.loads(d.request("GET", "/v1/agent/services")[1])), 1600)
        finally:
            d.stop()
            tmp.cleanup()


if __name__ == "__main__":
    unittest.main()
