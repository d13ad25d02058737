"""Shared helpers for the integration tests: real registryd processes on free
loopback ports, HTTP over urllib, registryctl over subprocess.

Binaries come from the environment (REGISTRYD, REGISTRYCTL, set by CMake) or
default to the build tree next to this checkout.
"""
import http.client
import http.server
import json
import os
import re
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(extra=None):
    """The environment for the binaries under test. A test process that
    preloaded the ASan runtime to load an ASan libregistry (see
    test_client_tls.py) keeps its own preload and leak settings to itself."""
    e = dict(os.environ)
    if "REGISTRY_TEST_ASAN_OPTIONS" in e:
        e["ASAN_OPTIONS"] = e.pop("REGISTRY_TEST_ASAN_OPTIONS")
        e.pop("LD_PRELOAD", None)
    e.update(extra or {})
    return e
REGISTRYD = os.environ.get("REGISTRYD", os.path.join(ROOT, "build/registryd/registryd"))
REGISTRYCTL = os.environ.get("REGISTRYCTL", os.path.join(ROOT, "build/cli/registryctl"))


def sanitized_binary(path=None):
    """Whether the registryd under test is built with AddressSanitizer (its
    allocator keeps freed memory in quarantine: memory figures mean little)."""
    with open(path or REGISTRYD, "rb") as f:
        return b"libasan.so" in f.read()


class CannedServer:
    """A loopback HTTP server posing as a registry (or anything else): every
    GET is answered with answer() -> (body bytes, {header: value}), status
    200; hits holds when each came. A context manager; addr is HOST:PORT."""

    def __init__(self, answer):
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(time.monotonic())
                body, headers = answer()
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = "127.0.0.1:%d" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()


def free_port(addr="127.0.0.1", kind=None):
    """A port that binds for both TCP and UDP, chosen at random below the
    kernel's ephemeral range (32768+), so that no outgoing connection of a
    parallel test can take it between our check and the daemon's bind."""
    while True:
        port = random.randrange(20000, 32000)
        socks = []
        try:
            for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, k)
                socks.append(s)
                s.bind((addr, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()


def thread_ticks(pid, pattern):
    """{thread name: CPU ticks (utime + stime)} of the process's threads whose
    name matches the regular expression pattern (dns-N, http-N)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if re.fullmatch(pattern, name):
            out[name] = int(fields[11]) + int(fields[12])
    return out


class Registryd:
    """One registryd process. data_dir=None means --dev."""

    def __init__(self, data_dir=None, extra_args=(), http_port=None, host="127.0.0.1"):
        self.data_dir = data_dir
        self.host = host
        self.extra = list(extra_args)
        self.fixed_http_port = http_port
        self.pick_ports()
        self.proc = None
        self.log_file = None

    def pick_ports(self):
        self.port = self.fixed_http_port or free_port()
        self.dns_port = free_port()
        self.raft_port = free_port()

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def args(self):
        # --dev servers get their raft port from us too; a data dir keeps the
        # one it chose the first time (server.json)
        where = (["--data-dir", self.data_dir] if self.data_dir
                 else ["--dev", "--raft-addr", "127.0.0.1:%d" % self.raft_port])
        return [REGISTRYD] + where + ["--http-addr", self.addr,
                                      "--dns-addr", "127.0.0.1:%d" % self.dns_port,
                                      "--log-level", "info"] + self.extra

    def start(self, wait=True):
        for attempt in range(3):
            self.log_file = tempfile.NamedTemporaryFile(prefix="registryd-log-", delete=False)
            self.proc = subprocess.Popen(self.args(), stdout=self.log_file,
                                         stderr=subprocess.STDOUT, env=child_env())
            if not wait:
                return self
            try:
                self.wait_ready()
                return self
            except RuntimeError:
                # a port taken by a parallel test between our check and the bind:
                # pick others and try again; anything else is a real failure
                if "Address already in use" not in self.log() or attempt == 2:
                    self.abandon()  # a setUp that fails gets no tearDown
                    raise
                self.proc.wait()
                os.unlink(self.log_file.name)
                self.pick_ports()
        return self

    def abandon(self):
        """Kill a server that failed to come up, so that no process outlives
        the test that started it (a failing setUp runs no tearDown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("registryd exited with %d:\n%s"
                                   % (self.proc.returncode, self.log()))
            try:
                status, body = self.request("GET", "/v1/status/leader", timeout=2)
                if status == 200 and body.strip('"\n') and self.serves_its_address():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("registryd not ready in %ds:\n%s" % (timeout, self.log()))

    def serves_its_address(self):
        """Whether this process listens on the port its requests go to: a
        port another test's server took between free_port() and our bind
        answered for us (200, a leader) while ours was exiting, and the
        retry on "Address already in use" never came."""
        return int(self.addr.rsplit(":", 1)[1]) in listening_ports(self.proc.pid)

    def log(self):
        if self.log_file is None:
            return ""
        with open(self.log_file.name, errors="replace") as f:
            return f.read()

    def sanitizer_errors(self):
        text = self.log()
        return [l for l in text.splitlines()
                if "ERROR: AddressSanitizer" in l or "runtime error:" in l
                or "ERROR: LeakSanitizer" in l]

    def sanitizer_report(self):
        """The first sanitizer report's lines (its stack, where the thread
        began), before the whole log in a failure's message: CI shows a
        failure's first lines, and a report at the end of a long log was
        cut off there. "" when there is none."""
        lines = self.log().splitlines()
        for i, l in enumerate(lines):
            if "ERROR: AddressSanitizer" in l or "runtime error:" in l \
                    or "ERROR: LeakSanitizer" in l:
                return "--- sanitizer report:\n%s\n--- the whole log:\n" % "\n".join(
                    lines[i:i + 80])
        return ""

    def stop(self, check=True):
        """SIGTERM; with check, the exit must be clean (status 0, no sanitizer report)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            if check:
                raise AssertionError("registryd did not stop on SIGTERM:\n" + self.log())
        self.proc = None
        errors = self.sanitizer_errors()
        if check and (rc != 0 or errors):
            raise AssertionError("registryd exited with %d %s:\n%s%s" % (
                rc, errors, self.sanitizer_report(), self.log()))
        os.unlink(self.log_file.name)
        self.log_file = None
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def request_full(self, method, path, body=None, headers=None, timeout=60):
        """(status, text, headers) for one HTTP request; never raises on 4xx/5xx."""
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request("http://%s%s" % (self.addr, path), data=data,
                                     method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), e.headers

    def request(self, method, path, body=None, headers=None, timeout=60):
        status, text, _ = self.request_full(method, path, body, headers, timeout)
        return status, text

    def metric(self, name):
        """The value of one Prometheus series (name with its labels), or None."""
        status, text = self.request("GET", "/v1/agent/metrics?format=prometheus")
        assert status == 200, (status, text)
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return None

    def park_queries(self, n, connect=None, timeout=10,
                     path="/v1/catalog/services?index=100000&wait=60s"):
        """Open n connections (connect(): a new http.client connection; plain
        HTTP to this server by default), each with a blocking query (path)
        that waits for a change that never comes; return them once the server
        counts n parked (AssertionError after timeout seconds)."""
        connect = connect or (lambda: http.client.HTTPConnection("127.0.0.1", self.port,
                                                                 timeout=30))
        conns = []
        for _ in range(n):
            c = connect()
            c.request("GET", path)
            conns.append(c)
        deadline = time.monotonic() + timeout
        while self.metric("registryd_blocking_queries_parked") < n:
            if time.monotonic() > deadline:
                raise AssertionError("%d blocking queries not parked in %ds" % (n, timeout))
            time.sleep(0.05)
        return conns

    def churn(self, n):
        """n writes: one instance ("churn") registered again with a new port
        each time, over one connection; each must answer 200."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        for i in range(n):
            c.request("PUT", "/v1/agent/service/register", json.dumps(
                {"Name": "churn", "ID": "churn", "Port": 1 + i}))
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
        c.close()

    def ctl(self, *args, env=None, stdin=None):
        """Run registryctl against this server: (exit code, stdout, stderr)."""
        e = child_env({"REGISTRY_HTTP_ADDR": self.addr})
        e.update(env or {})
        p = subprocess.run([REGISTRYCTL] + list(args), capture_output=True, text=True,
                           env=e, input=stdin, timeout=60)
        return p.returncode, p.stdout, p.stderr


class TlsRegistryd(Registryd):
    """A registryd serving HTTPS (https_addr) with the TLS files of
    certs.make_certs(), and no plain listener unless plain=True (then
    plain_addr). addr is the HTTPS address (what --join and clients use);
    requests go over HTTPS verifying the CA and presenting `client`, a
    (cert, key) pair: the server certificate by default, so that internal
    routes answer."""

    def __init__(self, paths, data_dir=None, extra_args=(), verify_incoming=False, plain=False,
                 client=None):
        self.paths = paths
        self.verify_incoming = verify_incoming
        self.plain = plain
        self.client = client or (paths["server_cert"], paths["server_key"])
        super().__init__(data_dir=data_dir, extra_args=extra_args)

    def pick_ports(self):
        super().pick_ports()
        self.https_port = free_port()

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.https_port)

    @property
    def plain_addr(self):
        return "%s:%d" % (self.host, self.port)

    def args(self):
        where = (["--data-dir", self.data_dir] if self.data_dir
                 else ["--dev", "--raft-addr", "127.0.0.1:%d" % self.raft_port])
        tls = ["--tls-ca-file", self.paths["ca"], "--tls-cert-file", self.paths["server_cert"],
               "--tls-key-file", self.paths["server_key"]]
        if self.verify_incoming:
            tls.append("--tls-verify-incoming")
        return [REGISTRYD] + where + [
            "--http-addr", self.plain_addr if self.plain else "",
            "--https-addr", self.addr, "--dns-addr", "127.0.0.1:%d" % self.dns_port,
            "--log-level", "info"] + tls + self.extra

    def ssl_context(self, client=None, ca=None):
        """A client context trusting ca (default: the cluster's CA) and
        presenting client (cert, key), self.client if None, none if False."""
        ctx = ssl.create_default_context(cafile=ca or self.paths["ca"])
        client = self.client if client is None else client
        if client:
            ctx.load_cert_chain(*client)
        return ctx

    def request_full(self, method, path, body=None, headers=None, timeout=60, client=None):
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request("https://%s%s" % (self.addr, path), data=data,
                                     method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout,
                                        context=self.ssl_context(client)) as r:
                return r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), e.headers

    def request(self, method, path, body=None, headers=None, timeout=60, client=None):
        status, text, _ = self.request_full(method, path, body, headers, timeout, client)
        return status, text

    def ctl(self, *args, env=None, stdin=None):
        e = {"REGISTRY_HTTP_ADDR": "https://" + self.addr, "REGISTRY_CACERT": self.paths["ca"],
             "REGISTRY_CLIENT_CERT": self.client[0], "REGISTRY_CLIENT_KEY": self.client[1]}
        e.update(env or {})
        return super().ctl(*args, env=e, stdin=stdin)


def recv_until_closed(sock):
    """Every byte sock receives until its peer closes (or an error)."""
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return got
        if not chunk:
            return got
        got += chunk


def tcp_sockets():
    """Every TCP socket of this network namespace, from the kernel's tables:
    (state, local port, remote port, inode); state "01" is ESTABLISHED, "0A"
    LISTEN."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    yield (cols[3], int(cols[1].rsplit(":", 1)[1], 16),
                           int(cols[2].rsplit(":", 1)[1], 16), cols[9])
        except FileNotFoundError:
            pass


def socket_fds(pid):
    """Process pid's sockets: {inode: descriptor}."""
    found = {}
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            found[target[8:-1]] = int(fd)
    return found


def connected_sockets(pid, ports):
    """Process pid's established TCP sockets whose local or remote port is
    one of ports: {fd: (local port, remote port)}."""
    fds = socket_fds(pid)
    return {fds[inode]: (lport, rport) for state, lport, rport, inode in tcp_sockets()
            if state == "01" and inode in fds and (lport in ports or rport in ports)}


def tcp_nodelay_of(pid, fd):
    """TCP_NODELAY of descriptor fd of process pid, read off a duplicate
    taken with pidfd_getfd (Linux 5.6; root here)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pidfd = os.pidfd_open(pid)
    try:
        dup = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd
        if dup < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        sock = socket.socket(fileno=dup)
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            sock.close()
    finally:
        os.close(pidfd)


def listening_ports(pid):
    """The TCP ports process pid listens on (from /proc: its sockets' inodes
    against the kernel's LISTEN table)."""
    fds = socket_fds(pid)
    return {lport for state, lport, _, inode in tcp_sockets() if state == "0A" and inode in fds}


def leader_of(d):
    """The leader d knows (its raft address), or "" (none, or no answer)."""
    try:
        status, text = d.request("GET", "/v1/status/leader", timeout=2)
        return json.loads(text) if status == 200 else ""
    except OSError:
        return ""


def agreed_leader(among, raft_addr, timeout):
    """The server of `among` that they all name as leader (raft_addr(d) is
    d's raft address), or None if they do not agree within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {leader_of(d) for d in among}
        if len(seen) == 1 and "" not in seen:
            addr = seen.pop()
            for d in among:
                if raft_addr(d) == addr:
                    return d
        time.sleep(0.05)
    return None


def start_cluster(directory, n, extra=(), servers=None, join_graph=None, factory=None):
    """n servers with data dirs under directory forming one cluster
    (--bootstrap-expect n). join_graph maps a server's index to the indexes
    it is given --join for (default: each joins all). Servers are appended
    to `servers` as they start, so a caller's cleanup sees them even if one
    fails to come up; returns the list. factory(data_dir) makes each server
    (default: a plain Registryd).

    A server that could not bind a port a parallel test took between our
    check and its bind is not waited for: the whole cluster starts again on
    other ports and fresh data dirs (every server's --join names the others'
    addresses), at most three times."""
    servers = servers if servers is not None else []
    factory = factory or (lambda data_dir: Registryd(data_dir=data_dir))
    for attempt in range(3):
        here = os.path.join(directory, "try%d" % attempt) if attempt else directory
        new = [factory(os.path.join(here, "s%d" % i)) for i in range(n)]
        for i, d in enumerate(new):
            targets = join_graph.get(i, []) if join_graph is not None else range(n)
            joins = []
            for t in targets:
                joins += ["--join", new[t].addr]
            node = ["--node", "s%d" % i] if "--node" not in extra else []
            d.extra = ["--bootstrap-expect", str(n)] + node + list(extra) + joins
            d.start(wait=False)
            servers.append(d)
        failure = wait_all_ready(new, timeout=30)
        if failure is None:
            return servers
        logs = "".join("\n--- server s%d:\n%s" % (i, d.log()) for i, d in enumerate(new))
        for d in new:
            d.abandon()
            servers.remove(d)
        if "Address already in use" not in logs or attempt == 2:
            raise RuntimeError("%s\nevery server's log:%s" % (failure, logs))
    return servers


def wait_all_ready(new, timeout):
    """None once every server of new knows a leader; else what went wrong
    (a server exited, or the time ran out), as soon as it is known."""
    deadline = time.monotonic() + timeout
    waiting = list(enumerate(new))
    while waiting:
        for i, d in list(waiting):
            if d.proc.poll() is not None:
                return "server s%d exited with %d" % (i, d.proc.returncode)
            try:
                status, body = d.request("GET", "/v1/status/leader", timeout=2)
                if status == 200 and body.strip('"\n') and d.serves_its_address():
                    waiting.remove((i, d))
            except OSError:
                pass
        if waiting and time.monotonic() > deadline:
            return "servers %s not ready in %ds" % ([i for i, _ in waiting], timeout)
        if waiting:
            time.sleep(0.05)
    return None


class TempDir:
    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="registryd-test-")

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)
