"""Soak: a long mix of requests against lilush_http; exits 0 when nothing leaked.

Two server processes (``python -m lilush_http`` on free loopback ports: one
plain, one TLS with a trustme certificate) serve a mix from several client
threads: keep-alive GETs, ``Connection: close`` requests, chunked uploads
(checked by length and SHA-1), gzip downloads (decompressed and compared),
pipelined pairs, and TLS keep-alive GETs. After a warm-up, with every client
connection closed, each server's open descriptors (/proc/PID/fd) and RSS
(VmRSS) are taken; again after the run. It fails on any wrong answer, more
than 5 descriptors more, RSS growth of 20 MB or more, or a log line at WARNING
or above (the servers run with --log-level info).

    python bench/soak.py [--count 200000] [--seconds 900] [--workers 8]
"""

import argparse
import collections
import functools
import gzip
import hashlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

from common import fd_count, loud_lines, read_log, rss_mb, run_workers, start_server

APP = '''
import hashlib

PAGE = ("<!DOCTYPE html><html><body>\\n" + "".join(
    "<p>Row %d: the quick brown fox jumps over the lazy dog, %d times.</p>\\n" % (i, i * 7)
    for i in range(1500)) + "</body></html>\\n").encode()


def handle(method, query, args, headers, body, ctx):
    if method == "POST":
        body = body or b""
        return "%d %s" % (len(body), hashlib.sha1(body).hexdigest()), 200, {"content-type": "text/plain"}
    if query == "/page":
        return PAGE, 200, {"content-type": "text/html"}
    return "hello", 200, {"content-type": "text/plain"}
'''

PAGE = ("<!DOCTYPE html><html><body>\n" + "".join(
    "<p>Row %d: the quick brown fox jumps over the lazy dog, %d times.</p>\n" % (i, i * 7)
    for i in range(1500)) + "</body></html>\n").encode()

CONFIG = {"connection_limit": 256, "backlog": 1024}
OPS = [("keep-alive", 30), ("close", 10), ("chunked upload", 15), ("gzip download", 15),
       ("pipelined pair", 15), ("tls keep-alive", 15)]


class Bad(Exception):
    pass


class Client:
    """One keep-alive connection (plain or TLS) with its buffered reader."""

    def __init__(self, port, context=None):
        self.port = port
        self.context = context
        self.sock = None
        self.file = None

    def open(self):
        if self.sock is None:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=15)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname="localhost")
            self.sock = sock
            self.file = sock.makefile("rb")
        return self

    def close(self):
        if self.sock is not None:
            self.file.close()
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = self.file = None

    def send(self, data):
        self.open().sock.sendall(data)

    def response(self):
        status, headers, body = read_response(self.file)
        if headers.get("connection", "").lower() == "close":
            self.close()  # e.g. requests_per_connection reached: the next request reconnects
        return status, headers, body


def read_response(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise Bad("bad status line %r" % line)
    version, status, _ = line.decode("ascii").split(" ", 2)
    if version != "HTTP/1.1":
        raise Bad("bad status line %r" % line)
    headers = {}
    while True:
        line = f.readline()
        if not line.endswith(b"\r\n"):
            raise Bad("bad header line %r" % line)
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if not size:
                f.readline()
                break
            body += f.read(size)
            f.read(2)
    else:
        raise Bad("response without framing: %r" % headers)
    return int(status), headers, body


def expect(got, status, body=None):
    if got[0] != status or (body is not None and got[2] != body):
        raise Bad("expected %d %r, got %d %r" % (status, body, got[0], got[2][:100]))


def upload_answer(body):
    return ("%d %s" % (len(body), hashlib.sha1(body).hexdigest())).encode()


def do_op(op, plain, tls, port, rng):
    if op == "keep-alive":
        plain.send(b"GET /hello HTTP/1.1\r\nHost: soak\r\n\r\n")
        expect(plain.response(), 200, b"hello")
    elif op == "close":
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            f = sock.makefile("rb")
            got = read_response(f)
            expect(got, 200, b"hello")
            if got[1].get("connection") != "close" or f.read() != b"":
                raise Bad("Connection: close not honoured")
            f.close()
    elif op == "chunked upload":
        body = rng.randbytes(rng.randrange(0, 65536))
        parts = []
        i = 0
        while i < len(body):
            n = rng.randrange(1, 8192)
            parts.append(b"%x\r\n%s\r\n" % (len(body[i:i + n]), body[i:i + n]))
            i += n
        plain.send(b"POST /up HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"".join(parts) + b"0\r\n\r\n")
        expect(plain.response(), 200, upload_answer(body))
    elif op == "gzip download":
        plain.send(b"GET /page HTTP/1.1\r\nHost: soak\r\nAccept-Encoding: gzip\r\n\r\n")
        status, headers, body = plain.response()
        if status != 200 or headers.get("content-encoding") != "gzip" or gzip.decompress(body) != PAGE:
            raise Bad("gzip download: %d %r" % (status, headers))
    elif op == "pipelined pair":
        body = rng.randbytes(rng.randrange(0, 2048))
        plain.send(b"GET /hello HTTP/1.1\r\nHost: soak\r\n\r\n"
                   b"POST /p HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        expect(plain.response(), 200, b"hello")
        expect(plain.response(), 200, upload_answer(body))
    elif op == "tls keep-alive":
        if rng.random() < 0.2:
            tls.send(b"GET /page HTTP/1.1\r\nHost: soak\r\nAccept-Encoding: gzip\r\n\r\n")
            status, headers, body = tls.response()
            if status != 200 or gzip.decompress(body) != PAGE:
                raise Bad("tls gzip download: %d %r" % (status, headers))
        else:
            tls.send(b"GET /hello HTTP/1.1\r\nHost: soak\r\n\r\n")
            expect(tls.response(), 200, b"hello")
    else:
        raise ValueError(op)


def run_phase(count, seconds, workers, port, tls_port, context, seed, counts, errors):
    """``count`` operations spread over ``workers`` threads; returns the seconds taken."""
    lock = threading.Lock()
    next_index = [0]
    stop_at = time.monotonic() + seconds
    names = [name for name, _ in OPS]
    weights = [w for _, w in OPS]

    def worker(w):
        rng = random.Random("%d-%d" % (seed, w))
        plain = Client(port)
        tls = Client(tls_port, context)
        done_here = 0
        try:
            while True:
                with lock:
                    if next_index[0] >= count or time.monotonic() > stop_at or len(errors) >= 20:
                        return
                    next_index[0] += 1
                op = rng.choices(names, weights)[0]
                try:
                    do_op(op, plain, tls, port, rng)
                    with lock:
                        counts[op] += 1
                except (Bad, OSError, ValueError) as exc:
                    with lock:
                        errors.append("%s: %s: %s" % (op, type(exc).__name__, exc))
                    plain.close()
                    tls.close()
                done_here += 1
                if done_here % 300 == 0:  # churn: new connections now and then
                    plain.close()
                    tls.close()
        finally:
            plain.close()
            tls.close()

    return run_workers([functools.partial(worker, w) for w in range(workers)],
                       lambda: "%d done, %d errors" % (sum(counts.values()), len(errors)), every=15)


def settle(pid, target=None, timeout=5):
    """Wait until the server's descriptor count stops changing (or reaches ``target``)."""
    deadline = time.monotonic() + timeout
    last = fd_count(pid)
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = fd_count(pid)
        if target is not None and now <= target:
            return now
        if now != last:
            last, stable_since = now, time.monotonic()
        elif target is None and time.monotonic() - stable_since > 0.5:
            return now
    return fd_count(pid)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200000, help="requests in the measured run")
    parser.add_argument("--warmup", type=int, default=None, help="requests before the first figures "
                        "(default: a tenth of --count, at least 2000)")
    parser.add_argument("--seconds", type=float, default=900, help="stop the measured run after this long")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else max(2000, args.count // 10)

    import trustme
    app_dir = tempfile.mkdtemp(prefix="lilush-soak-")
    with open(os.path.join(app_dir, "app.py"), "w") as f:
        f.write(APP)
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path = os.path.join(app_dir, "cert.pem")
    key_path = os.path.join(app_dir, "key.pem")
    with open(cert_path, "wb") as f:
        for pem in cert.cert_chain_pems:
            f.write(pem.bytes())
    cert.private_key_pem.write_to_path(key_path)
    context = ssl.create_default_context()
    ca.configure_trust(context)

    plain_proc, port, plain_log = start_server(app_dir, CONFIG, "plain")
    tls_proc, tls_port, tls_log = start_server(app_dir, CONFIG, "tls", extra=["--tls-cert", cert_path, "--tls-key", key_path])
    servers = {"plain": plain_proc, "tls": tls_proc}
    print("soak: plain server pid %d on :%d, TLS server pid %d on :%d; warm-up %d, run %d requests, "
          "%d workers, at most %gs" % (plain_proc.pid, port, tls_proc.pid, tls_port, warmup, args.count,
                                       args.workers, args.seconds), flush=True)
    errors = []
    try:
        warm_counts = collections.Counter()
        run_phase(warmup, args.seconds, args.workers, port, tls_port, context, args.seed, warm_counts, errors)
        before = {name: (settle(p.pid), rss_mb(p.pid)) for name, p in servers.items()}
        counts = collections.Counter()
        elapsed = run_phase(args.count, args.seconds, args.workers, port, tls_port, context, args.seed + 1,
                            counts, errors)
        after = {name: (settle(p.pid, before[name][0]), rss_mb(p.pid)) for name, p in servers.items()}
        alive = {name: p.poll() is None for name, p in servers.items()}
    finally:
        codes = {}
        for name, p in servers.items():
            p.send_signal(signal.SIGTERM)
        for name, p in servers.items():
            try:
                codes[name] = p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = "killed"
    loud = loud_lines(read_log(plain_log)) + loud_lines(read_log(tls_log))
    shutil.rmtree(app_dir, ignore_errors=True)

    done = sum(counts.values())
    print("soak: %d requests in %.1fs: %.0f req/s (%d workers)" % (done, elapsed, done / elapsed, args.workers))
    print("soak: by kind: %s" % ", ".join("%s %d" % kv for kv in sorted(counts.items())))
    problems = list(errors)
    for name in servers:
        fds0, rss0 = before[name]
        fds1, rss1 = after[name]
        print("soak: %-5s server: open fds %d -> %d, RSS %.1f MB -> %.1f MB (%+.1f MB), alive %s, exit code %s"
              % (name, fds0, fds1, rss0, rss1, rss1 - rss0, alive[name], codes[name]))
        if abs(fds1 - fds0) > 5:
            problems.append("%s: descriptors %d -> %d" % (name, fds0, fds1))
        if rss1 - rss0 >= 20:
            problems.append("%s: RSS grew %.1f MB" % (name, rss1 - rss0))
        if not alive[name] or codes[name] != 0:
            problems.append("%s: server died or did not exit cleanly (%s)" % (name, codes[name]))
    print("soak: log lines at WARNING or above: %d" % len(loud))
    problems += loud[:10]
    if done < args.count and not errors:
        print("soak: stopped by --seconds after %d of %d requests" % (done, args.count))
    print("soak: errors: %d" % len(errors))
    for line in problems[:20]:
        print("   ", line)
    ok = not problems and done > 0
    print("soak: %s" % ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
