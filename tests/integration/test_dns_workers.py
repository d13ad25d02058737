#!/usr/bin/python3
"""DNS on several threads (dns_workers: 2): UDP and TCP answers stay right
under concurrent queries while writes happen (every answer reflects the
writes done before it was asked, and nothing not yet written); SIGTERM stops
busy workers promptly and cleanly; a dns_addr already held is a clear
start-up error."""
import json
import os
import random
import re
import socket
import struct
import threading
import time
import unittest

from harness import Registryd, thread_ticks

WORKERS = 2


def query(name, qtype=33, qid=None, edns=4096):
    """A query packet (SRV by default) with EDNS advertising edns bytes."""
    qid = random.randrange(65536) if qid is None else qid
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 1 if edns else 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", qtype, 1)
    if edns:
        q += b"\x00" + struct.pack(">HHIH", 41, edns, 0, 0)
    return q


def skip_name(msg, off):
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n
        if n == 0:
            return off


def parse(msg):
    """(id, flags, rcode, [(type, rdata)] of the answer section)."""
    qid, flags_, qd, an = struct.unpack(">HHHH", msg[:8])
    off = 12
    for _ in range(qd):
        off = skip_name(msg, off) + 4
    out = []
    for _ in range(an):
        off = skip_name(msg, off)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        off += 10
        out.append((rtype, msg[off:off + rdlen]))
        off += rdlen
    return qid, flags_, flags_ & 0xF, out


def srv_ports(records):
    return {struct.unpack(">HHH", rd[:6])[2] for t, rd in records if t == 33}


def recv_tcp(sock):
    buf = b""
    while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf[2:2 + struct.unpack(">H", buf[:2])[0]]


def dns_threads(pid):
    """{thread name: CPU ticks} of the process's dns-N threads."""
    return thread_ticks(pid, r"dns-\d+")


class Writes:
    """What the writer has done, for the readers' bounds. An instance is in
    `sure` from the moment its registration returned until its
    deregistration starts; `ever` holds every instance whose registration
    started, `gone` every one whose deregistration returned."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sure, self.ever, self.gone = set(), set(), set()

    def snapshot(self):
        with self.lock:
            return set(self.sure), set(self.ever), set(self.gone)


class DnsWorkersTest(unittest.TestCase):
    def test_udp_and_tcp_answer_right_while_writes_happen(self):
        d = Registryd(extra_args=["--dns-workers", str(WORKERS)]).start()
        try:
            self.assertEqual(sorted(dns_threads(d.proc.pid)), ["dns-0", "dns-1"])
            self.run_concurrent(d)
            self.assertEqual(len(d.sanitizer_errors()), 0)
        finally:
            d.stop()

    def test_http_answers_only_once_started(self):
        """The first HTTP answer comes from a server that is up: its DNS
        threads serve and SIGTERM stops it cleanly. HTTP worker threads
        used to serve from their creation, before the DNS threads and the
        signal handlers existed: a test that asked for the DNS threads then
        found none, and a SIGTERM then killed the server (status -15)."""
        for round_ in range(int(os.environ.get("ROUNDS", "8"))):
            d = Registryd(extra_args=["--dns-workers", str(WORKERS), "--http-workers", "2"])
            d.start(wait=False)
            try:
                deadline = time.monotonic() + 30
                while True:
                    self.assertLess(time.monotonic(), deadline, d.log())
                    self.assertIsNone(d.proc.poll(), d.log())
                    try:
                        with socket.create_connection(("127.0.0.1", d.port), timeout=2) as c:
                            c.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
                            if c.recv(100).startswith(b"HTTP/1.1 200"):
                                break
                    except OSError:
                        pass
                    time.sleep(0.001)
                self.assertEqual(sorted(dns_threads(d.proc.pid)), ["dns-0", "dns-1"], round_)
            finally:
                d.stop()  # status 0: SIGTERM handled

    def run_concurrent(self, d):
        n = 30
        w = Writes()
        stop = threading.Event()
        errors, counts = [], {"udp": 0, "tcp": 0}
        count_lock = threading.Lock()

        def writer():
            try:
                for i in range(n):
                    port = 20000 + i
                    with w.lock:
                        w.ever.add(port)
                    body = {"Name": "live", "ID": "live-%d" % i, "Port": port,
                            "Address": "10.9.%d.%d" % (i // 200, i % 200 + 1)}
                    code, text = d.request("PUT", "/v1/agent/service/register", json.dumps(body))
                    assert code == 200, text
                    with w.lock:
                        w.sure.add(port)
                    time.sleep(0.01)
                for i in range(n):
                    port = 20000 + i
                    with w.lock:
                        w.sure.discard(port)
                    code, text = d.request("PUT", "/v1/agent/service/deregister/live-%d" % i)
                    assert code == 200, text
                    with w.lock:
                        w.gone.add(port)
                    time.sleep(0.01)
            except Exception as e:  # noqa: BLE001 - reported by the test
                errors.append("writer: %r" % e)
            finally:
                stop.set()

        def check(kind, ask):
            sure_before, _, gone_before = w.snapshot()
            qid = random.randrange(65536)
            msg = ask(query("live.service.registry.", qid=qid))
            sure_after, ever_after, _ = w.snapshot()
            rid, flags_, rcode, records = parse(msg)
            got = srv_ports(records)
            lower = sure_before & sure_after  # present the whole time we asked
            upper = ever_after - gone_before  # could have been present at some point
            if rid != qid or not flags_ & 0x8000 or flags_ & 0x0200:
                errors.append("%s: bad header id=%d/%d flags=%#x" % (kind, rid, qid, flags_))
            elif rcode not in (0, 3) or (rcode == 3 and got):
                errors.append("%s: rcode %d with %d answers" % (kind, rcode, len(got)))
            elif not lower <= got or not got <= upper:
                errors.append("%s: answer %s, missing %s, unexpected %s" % (
                    kind, sorted(got), sorted(lower - got), sorted(got - upper)))
            with count_lock:
                counts[kind] += 1

        def udp_reader():
            try:
                while not stop.is_set() and len(errors) < 5:
                    # a new socket (source port) each time: the kernel spreads
                    # them over the workers' SO_REUSEPORT sockets
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                        s.settimeout(5)
                        s.connect(("127.0.0.1", d.dns_port))

                        def ask(q):
                            s.send(q)
                            return s.recv(65535)
                        for _ in range(5):
                            check("udp", ask)
            except Exception as e:  # noqa: BLE001
                errors.append("udp reader: %r" % e)

        def tcp_reader():
            try:
                while not stop.is_set() and len(errors) < 5:
                    with socket.create_connection(("127.0.0.1", d.dns_port), timeout=5) as s:
                        def ask(q):
                            s.sendall(struct.pack(">H", len(q)) + q)
                            return recv_tcp(s)
                        for _ in range(20):  # several queries on one connection
                            check("tcp", ask)
            except Exception as e:  # noqa: BLE001
                errors.append("tcp reader: %r" % e)

        threads = [threading.Thread(target=writer)]
        threads += [threading.Thread(target=udp_reader) for _ in range(3)]
        threads += [threading.Thread(target=tcp_reader) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.assertGreater(counts["udp"], 100)
        self.assertGreater(counts["tcp"], 100)
        # both workers did some of it
        busy = dns_threads(d.proc.pid)
        self.assertEqual(len(busy), WORKERS)
        self.assertTrue(all(ticks > 0 for ticks in busy.values()), busy)
        # and the metrics count every worker's answers
        status, text = d.request("GET", "/v1/agent/metrics?format=prometheus")
        m = re.search(r'^registryd_dns_answers_total\{rcode="NOERROR"\} (\d+)', text, re.M)
        self.assertIsNotNone(m, text)
        total = sum(int(v) for v in re.findall(
            r'^registryd_dns_answers_total\{rcode="[A-Z]+"\} (\d+)', text, re.M))
        self.assertGreaterEqual(total, counts["udp"] + counts["tcp"])

    def test_sigterm_with_busy_workers(self):
        d = Registryd(extra_args=["--dns-workers", str(WORKERS)]).start()
        code, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
            {"Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 80}))
        self.assertEqual(code, 200, text)
        stop = threading.Event()
        sent = [0]

        def flood():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setblocking(False)
                q = query("web.service.registry.")
                while not stop.is_set():
                    try:
                        s.sendto(q, ("127.0.0.1", d.dns_port))
                        sent[0] += 1
                        s.recv(65535)
                    except OSError:
                        pass

        def tcp_flood():
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", d.dns_port), timeout=2) as s:
                        q = query("web.service.registry.")
                        while not stop.is_set():
                            s.sendall(struct.pack(">H", len(q)) + q)
                            recv_tcp(s)
                except OSError:
                    time.sleep(0.01)

        threads = [threading.Thread(target=flood) for _ in range(4)]
        threads += [threading.Thread(target=tcp_flood) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            busy = dns_threads(d.proc.pid)
            self.assertGreater(sum(busy.values()), 0, busy)
            t0 = time.monotonic()
            d.stop()  # SIGTERM; asserts exit status 0 and no sanitizer report
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            for t in threads:
                t.join(10)
            if d.proc is not None:
                d.stop(check=False)
        self.assertLess(elapsed, 5.0, "SIGTERM took %.1fs with busy DNS workers" % elapsed)
        self.assertGreater(sent[0], 0)

    def test_dns_addr_in_use_is_a_clear_error(self):
        d = Registryd(extra_args=["--dns-workers", str(WORKERS)]).start()
        other = Registryd(extra_args=["--dns-workers", str(WORKERS)])
        try:
            for proto, kind in (("udp", socket.SOCK_DGRAM), ("tcp", socket.SOCK_STREAM)):
                # held by another registryd (both protocols), or by anyone
                # holding just this one (no SO_REUSEPORT group to join)
                holder = socket.socket(socket.AF_INET, kind)
                holder.bind(("127.0.0.1", 0))
                if kind == socket.SOCK_STREAM:
                    holder.listen(1)
                port = holder.getsockname()[1]
                for taken in (d.dns_port, port):
                    with self.subTest(proto=proto, taken=taken):
                        other.pick_ports()
                        other.dns_port = taken
                        other.start(wait=False)
                        rc = other.proc.wait(15)
                        log = other.log()
                        other.proc = None
                        os.unlink(other.log_file.name)
                        self.assertNotEqual(rc, 0)
                        want = "dns_addr 127.0.0.1:%d (%s): Address already in use" % (
                            taken, proto if taken == port else "udp")
                        self.assertIn(want, log)
                holder.close()
            # the first server still answers, on both protocols
            q = query("registry.", qtype=6)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.sendto(q, ("127.0.0.1", d.dns_port))
                self.assertEqual(parse(s.recv(65535))[2], 0)
            with socket.create_connection(("127.0.0.1", d.dns_port), timeout=5) as s:
                s.sendall(struct.pack(">H", len(q)) + q)
                self.assertEqual(parse(recv_tcp(s))[2], 0)
        finally:
            d.stop()


if __name__ == "__main__":
    unittest.main()
