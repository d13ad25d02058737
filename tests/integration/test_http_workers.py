#!/usr/bin/python3
"""HTTP on several threads (http_workers: 2): connections spread over the
worker threads (one SO_REUSEPORT group); blocking queries parked on every
worker wake at a write; writes and reads on many connections stay right;
the answer cache is shared; SIGTERM with queries parked on the workers
stops promptly; an http_addr already held is a clear start-up error."""
import http.client
import json
import socket
import threading
import time
import unittest

from harness import Registryd, connected_sockets, tcp_nodelay_of, thread_ticks

WORKERS = 2


def http_threads(pid):
    """{thread name: CPU ticks} of the process's http-N threads."""
    return thread_ticks(pid, r"http-\d+")


def listeners(port):
    """How many TCP sockets listen on 127.0.0.1:port (/proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                n += 1
    return n


class OneFile:
    """A socket stand-in whose makefile() is always the same reader, so
    that responses read one after another off it lose no bytes."""

    def __init__(self, f):
        self.f = f

    def makefile(self, *args, **kwargs):
        return self

    def __getattr__(self, name):
        return getattr(self.f, name)

    def close(self):
        pass  # a response's end closes its reader: not this shared one


def register(d, name, i):
    code, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
        {"Name": name, "ID": "%s-%d" % (name, i), "Address": "10.0.0.%d" % (i % 250 + 1),
         "Port": 1000 + i}))
    return code, text


class HttpWorkersTest(unittest.TestCase):
    def setUp(self):
        self.d = Registryd(extra_args=["--http-workers", str(WORKERS)]).start()

    def tearDown(self):
        self.d.stop()  # asserts exit status 0 and no sanitizer report

    def test_one_reuseport_group_and_work_on_every_thread(self):
        d = self.d
        self.assertEqual(listeners(d.port), WORKERS)
        self.assertEqual(sorted(http_threads(d.proc.pid)), ["http-1"])
        before = http_threads(d.proc.pid)["http-1"]
        # many connections: the kernel gives the worker thread its share
        served = 0
        for _ in range(200):
            c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
            for _ in range(20):
                c.request("GET", "/v1/catalog/services")
                r = c.getresponse()
                r.read()
                served += r.status == 200
            c.close()
        self.assertEqual(served, 4000)
        self.assertGreater(http_threads(d.proc.pid)["http-1"], before,
                           "the worker thread served nothing")

    def test_parked_queries_on_every_worker_wake_at_a_write(self):
        d = self.d
        self.assertEqual(register(d, "web", 0)[0], 200)
        _, _, headers = d.request_full("GET", "/v1/health/service/web")
        index = int(headers["X-Consul-Index"])
        n = 40  # over 40 connections both workers hold some (2^-39 they do not)
        results = [None] * n
        conns = [http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
                 for _ in range(n)]

        def wait(i):
            conns[i].request("GET", "/v1/health/service/web?index=%d&wait=20s" % index)
            r = conns[i].getresponse()
            results[i] = (time.monotonic(), r.status, r.getheader("X-Consul-Index"),
                          json.loads(r.read()))

        threads = [threading.Thread(target=wait, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while d.metric("registryd_blocking_queries_parked") < n:
            self.assertLess(time.monotonic(), deadline, "the queries did not park")
            time.sleep(0.05)
        self.assertTrue(all(r is None for r in results))
        wrote = time.monotonic()
        self.assertEqual(register(d, "web", 1)[0], 200)
        for t in threads:
            t.join(20)
        for c in conns:
            c.close()
        for at, status, idx, body in results:
            self.assertEqual(status, 200)
            self.assertGreater(int(idx), index)
            self.assertEqual(sorted(e["Service"]["ID"] for e in body), ["web-0", "web-1"])
            self.assertLess(at - wrote, 5.0)
        self.assertEqual(d.metric("registryd_blocking_queries_parked"), 0)

    def test_concurrent_writes_and_reads_on_many_connections(self):
        d = self.d
        errors = []
        n_writers, per_writer = 4, 50

        def writer(w):
            try:
                c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
                for i in range(per_writer):
                    body = json.dumps({"Name": "svc", "ID": "svc-%d-%d" % (w, i), "Port": i})
                    c.request("PUT", "/v1/agent/service/register", body)
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        errors.append(("write", r.status))
                    # a read after the write on a new connection (maybe
                    # another worker) sees it: writes answer once applied
                    rc = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
                    rc.request("GET", "/v1/agent/service/svc-%d-%d" % (w, i))
                    rr = rc.getresponse()
                    rr.read()
                    rc.close()
                    if rr.status != 200:
                        errors.append(("read", w, i, rr.status))
                c.close()
            except OSError as e:
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        code, text = d.request("GET", "/v1/catalog/service/svc")
        self.assertEqual(code, 200)
        self.assertEqual(len(json.loads(text)), n_writers * per_writer)

    def test_answer_cache_is_shared(self):
        d = self.d
        self.assertEqual(register(d, "cached", 0)[0], 200)
        before = d.metric("registryd_http_cache_misses_total")
        bodies = set()
        for _ in range(30):  # new connections: both workers answer some
            bodies.add(d.request("GET", "/v1/health/service/cached")[1])
        self.assertEqual(len(bodies), 1)
        self.assertEqual(d.metric("registryd_http_cache_misses_total") - before, 1)

    def test_replies_written_at_once_and_by_the_loop(self):
        """A reply goes out as it is made (write_now) when the socket takes
        it whole, and through evhttp's own writes for the rest when it does
        not: a cached answer of megabytes to a reader with a tiny receive
        buffer, then more requests on that connection; pipelined requests
        each answered in order; HTTP/1.0 and Connection: close answered,
        then closed."""
        d = self.d
        for i in range(2000):
            code, _ = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "wide", "ID": "wide-%d" % i, "Port": 1000 + i % 60000,
                 "Meta": {"pad": "p" * 500}}))
            self.assertEqual(code, 200)
        d.request("GET", "/v1/catalog/service/wide")  # rendered and cached
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(30)
        s.connect(("127.0.0.1", d.port))
        try:
            for _ in range(3):
                s.sendall(b"GET /v1/catalog/service/wide HTTP/1.1\r\nHost: x\r\n\r\n")
                r = http.client.HTTPResponse(s)
                r.begin()
                self.assertEqual(r.status, 200)
                self.assertGreater(int(r.getheader("Content-Length")), 1 << 20)
                body = b""
                while True:
                    part = r.read(8192)
                    if not part:
                        break
                    body += part
                    time.sleep(0.0001)
                self.assertEqual(len(json.loads(body)), 2000)
            # then three pipelined requests on the same connection
            s.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /v1/catalog/service/nothing-here HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /v1/agent/self/nonexistent HTTP/1.1\r\nHost: x\r\n\r\n")
            statuses = []
            f = s.makefile("rb")  # one reader for the three: none reads past its own
            for _ in range(3):
                r = http.client.HTTPResponse(OneFile(f))
                r.begin()
                r.read()
                statuses.append(r.status)
            self.assertEqual(statuses[:2], [200, 200])
            self.assertEqual(statuses[2] // 100, 4)
        finally:
            s.close()
        for req in (b"GET /v1/status/leader HTTP/1.0\r\n\r\n",
                    b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            s.sendall(req)
            data = b""
            while True:
                part = s.recv(65536)
                if not part:
                    break  # the server closed: the answer was whole
                data += part
            s.close()
            self.assertTrue(data.split(b"\r\n")[0].endswith(b"200 OK"), data[:80])
            self.assertIn(b"127.0.0.1", data.split(b"\r\n\r\n", 1)[1])

    def test_connections_send_at_once(self):
        """Every accepted HTTP and DNS-over-TCP connection has TCP_NODELAY
        (inherited from its listener). Without it, an answer written in two
        pieces (above 16 KiB; TLS records) had its second piece wait for the
        ACK of the first, which the client delays: every answer of 21-38 KB
        on a kept-alive connection took 44 ms instead of 0.1 ms. The
        server's sockets are looked at (pidfd_getfd), not timed."""
        d = self.d
        conns = [http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
                 for _ in range(2 * WORKERS)]  # SO_REUSEPORT spreads them
        dns = socket.create_connection(("127.0.0.1", d.dns_port), timeout=10)
        try:
            for c in conns:
                c.request("GET", "/v1/status/leader")
                self.assertEqual(c.getresponse().read(), b'"127.0.0.1:%d"' % d.raft_port)
            mine = {c.sock.getsockname()[1] for c in conns} | {dns.getsockname()[1]}
            deadline = time.monotonic() + 10  # the DNS worker accepts in its own time
            while True:
                server_side = {fd: ports for fd, ports in
                               connected_sockets(d.proc.pid, mine).items() if ports[1] in mine}
                if len(server_side) == len(mine) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual({ports[1] for ports in server_side.values()}, mine)
            for fd, ports in server_side.items():
                self.assertEqual(tcp_nodelay_of(d.proc.pid, fd), 1, ports)
        finally:
            for c in conns:
                c.close()
            dns.close()

    def test_big_answers_rendered_on_both_workers_at_once(self):
        """The per-record JSON is one store for every worker: big answers
        rendered concurrently on both, while writes change some records,
        are each complete and of one index."""
        d = self.d
        n = 400
        for i in range(n):
            self.assertEqual(register(d, "big", i)[0], 200)
        errors = []
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
                for path in ("/v1/health/service/big", "/v1/catalog/service/big",
                             "/v1/agent/services", "/v1/health/state/any"):
                    c.request("GET", path)
                    r = c.getresponse()
                    body = json.loads(r.read())
                    if r.status != 200:
                        errors.append((path, r.status))
                    elif path.startswith("/v1/health/service"):
                        ids = sorted(e["Service"]["ID"] for e in body)
                        if ids != sorted("big-%d" % i for i in range(n)):
                            errors.append((path, len(ids)))
                    elif path.startswith("/v1/catalog/service"):
                        if len(body) != n:
                            errors.append((path, len(body)))
                    elif path == "/v1/agent/services":
                        if sum(1 for k in body if k.startswith("big-")) != n:
                            errors.append((path, len(body)))
                c.close()

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(0, n, 7):  # change some records while they render
            code, text = d.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "big", "ID": "big-%d" % i, "Port": 5000 + i,
                 "Meta": {"v": "2"}}))
            self.assertEqual(code, 200, text)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])

    def test_sigterm_with_queries_parked_on_the_workers(self):
        d = self.d
        conns = d.park_queries(20)
        t0 = time.monotonic()
        d.stop()
        self.assertLess(time.monotonic() - t0, 5.0)
        for c in conns:
            c.close()
        self.d = Registryd(extra_args=["--http-workers", str(WORKERS)]).start()  # for tearDown


class HttpWorkersStopTest(unittest.TestCase):
    def test_sigterm_with_writes_in_flight_on_every_worker(self):
        """Writes in flight on both workers when SIGTERM comes: the cluster
        answers them as it stops, and those answers reach a worker's
        requests while the cluster still exists (under ASan a reply that
        read the freed cluster's status was a use after free)."""
        for round_ in range(3):
            d = Registryd(extra_args=["--http-workers", str(WORKERS),
                                      "--raft-snapshot-threshold", "16"]).start()
            stop = threading.Event()

            def writer(k):
                i = 0
                while not stop.is_set():
                    try:
                        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
                        c.request("PUT", "/v1/agent/service/register", json.dumps(
                            {"Name": "w%d" % (i % 5), "ID": "w-%d-%d" % (k, i)}))
                        c.getresponse().read()
                        c.close()
                    except OSError:
                        pass
                    i += 1

            threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
            for t in threads:
                t.start()
            time.sleep(0.5 + 0.2 * round_)
            try:
                d.stop()  # exit status 0 and no sanitizer report
            finally:
                stop.set()
                for t in threads:
                    t.join(30)


class HttpWorkersAddressTest(unittest.TestCase):
    def test_http_addr_in_use_is_a_clear_error(self):
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        other = Registryd(extra_args=["--http-workers", str(WORKERS)], http_port=port)
        try:
            other.start(wait=False)
            rc = other.proc.wait(15)
            log = other.log()
            other.proc = None
            self.assertNotEqual(rc, 0)
            self.assertIn("http_addr 127.0.0.1:%d: cannot listen: Address already in use" % port,
                          log)
        finally:
            holder.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
