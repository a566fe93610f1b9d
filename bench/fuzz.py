"""Fuzz a live lilush_http with mutated requests; exits 0 when nothing went wrong.

A corpus of requests (GET, POST with Content-Length, chunked, pipelined
pairs, HTTP/1.0 with and without Host, Expect: 100-continue, absolute-form and
asterisk-form targets, obs-text in a Cookie, and a bare-LF head that must be
refused) is mutated (byte flips, inserted CR, LF,
NUL, space, colon, tab or high bytes, deletions, duplicated or dropped lines,
bare-LF line ends, truncation) and each mutant is sent on its own connection
(half-closed after the write) by several worker threads at once. What comes
back is parsed with h11 as a strict client. A failure is: a response h11
refuses, an incomplete response, bytes after a ``Connection: close`` response,
a 5xx other than 501 (a malformed request is a 4xx), a server that hangs or
goes away, or a WARNING/ERROR/traceback in its log.

    python bench/fuzz.py [--count 100000] [--seconds 600] [--workers 8] [--seed 1]
"""

import argparse
import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import h11

from common import loud_lines, read_log, run_workers, start_server

APP = '''
def handle(method, query, args, headers, body, ctx):
    return "ok %s %s %d" % (method, query, len(body or b"")), 200, {
        "content-type": "text/plain", "x-method": method}
'''

CONFIG = {
    "max_body_size": 64 * 1024,
    "request_header_timeout": 3,
    "request_body_timeout": 3,
    "keepalive_idle_timeout": 3,
    "response_send_timeout": 3,
    "connection_limit": 256,
    "backlog": 1024,
}

CORPUS = [
    b"GET / HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"GET /path/to?a=1&b=two HTTP/1.1\r\nHost: fuzz\r\nUser-Agent: fuzz/1\r\nAccept: */*\r\n"
    b"Accept-Encoding: gzip, br\r\nX-Thing: one, two\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: fuzz\r\nConnection: keep-alive\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 11\r\n\r\nhello=world",
    b"PUT /put HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nabcde",
    b"POST /chunked HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"POST /c2 HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
    # pipelined pairs
    b"GET /one HTTP/1.1\r\nHost: fuzz\r\n\r\nGET /two HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"POST /one HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 3\r\n\r\nabcGET /two HTTP/1.1\r\nHost: fuzz\r\n"
    b"Connection: close\r\n\r\n",
    b"POST /one HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    b"POST /two HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 2\r\n\r\nxy",
    b"GET /lf HTTP/1.1\nHost: fuzz\n\n",
    b"GET /health HTTP/1.0\r\n\r\n",
    b"GET http://fuzz:8080/abs?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    b"GET /cookie HTTP/1.1\r\nHost: fuzz\r\nCookie: greeting=caf\xc3\xa9; raw=\xff\r\n\r\n",
    b"POST /cl HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 4, 4\r\n\r\nabcd",
]

INSERTS = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b":", b"\t", b"\x80", b"\xff", b"\x7f", b",", b";", b"0",
           b"\x0b", b"#", b"*", b"@", b"http://h", b"\xc3\xa9", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 7\r\n", b"Host: again\r\n", b"\r\n\r\n"]


def mutate(data, rng):
    """One to four mutations of ``data``."""
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        kind = rng.randrange(9)
        i = rng.randrange(len(data) + 1) if data else 0
        if kind == 0 and data:  # flip a byte to anything
            i = min(i, len(data) - 1)
            data = data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
        elif kind == 1 and data:  # flip one bit
            i = min(i, len(data) - 1)
            data = data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]
        elif kind in (2, 3):  # insert a troublesome byte or line
            data = data[:i] + rng.choice(INSERTS) + data[i:]
        elif kind == 4 and data:  # delete one to three bytes
            data = data[:i] + data[i + rng.randint(1, 3):]
        elif kind == 5:  # duplicate a line
            lines = data.split(b"\n")
            j = rng.randrange(len(lines))
            lines.insert(j, lines[j])
            data = b"\n".join(lines)
        elif kind == 6:  # drop a line
            lines = data.split(b"\n")
            if len(lines) > 1:
                del lines[rng.randrange(len(lines))]
            data = b"\n".join(lines)
        elif kind == 7:  # bare LF line ends, all or one
            if rng.random() < 0.5:
                data = data.replace(b"\r\n", b"\n")
            else:
                j = data.find(b"\r\n", i)
                if j >= 0:
                    data = data[:j] + data[j + 1:]
        else:  # truncate
            data = data[:i]
    return data


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Failure(Exception):
    pass


def parse_responses(data):
    """The responses in ``data`` as [(status, method, body)], parsed by h11 as a strict client."""
    out = []
    rest = data
    while rest:
        if rest.startswith(CONTINUE):  # an interim response; the client may then have closed
            out.append((100, None, b""))
            rest = rest[len(CONTINUE):]
            continue
        got, rest, closing = _parse_one(rest, "GET")
        out.extend(got)
        if closing and rest:
            raise Failure("bytes after a Connection: close response: %r" % rest[:80])
    return out


def _parse_one(data, method):
    """([(status, method, body)], bytes after the response, whether it said Connection: close)."""
    conn = h11.Connection(our_role=h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "fuzz")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")  # all there is: the server closed
    out = []
    closing = False
    body = b""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise Failure("h11 refused the response: %s; bytes %r" % (exc, data[:200])) from None
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            raise Failure("incomplete response: %r" % data[:200])
        if isinstance(event, h11.InformationalResponse):
            out.append((event.status_code, None, b""))
        elif isinstance(event, h11.Response):
            headers = dict(event.headers)
            if method == "GET" and headers.get(b"x-method") == b"HEAD":
                return _parse_one(data, "HEAD")  # a mutant that became a HEAD request
            closing = b"close" in headers.get(b"connection", b"").lower()
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((status, method, body))
            break
    return out, conn.trailing_data[0], closing


def served(responses):
    """What lilush served, from its answers: [(method, path, body length)] up to its first refusal."""
    seen = []
    for status, method, body in responses:
        if status == 100:
            continue
        if status != 200:
            break
        if method == "HEAD":
            seen.append(None)  # no body to tell what it read
            continue
        _, method, path, length = body.decode("latin-1").split(" ")
        seen.append((method, path, int(length)))
    return seen


def h11_reads(data):
    """What h11, as a strict server, reads in ``data``: [(method, path, body length)] up to its
    first refusal, and whether it refused."""
    conn = h11.Connection(our_role=h11.SERVER, max_incomplete_event_size=1 << 20)
    conn.receive_data(data)
    conn.receive_data(b"")
    seen = []
    current = None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return seen, True
        if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
            return seen, False
        if isinstance(event, h11.Request):
            target = event.target
            if b"://" in target and not target.startswith(b"/"):  # absolute-form: its path
                target = target.partition(b"://")[2]
                target = target[min([i for i in (target.find(b"/"), target.find(b"?")) if i >= 0]
                                    or [len(target)]):]
            path = target.partition(b"?")[0] or b"/"
            current = [event.method.decode("latin-1"), path.decode("latin-1"), 0]
        elif isinstance(event, h11.Data):
            current[2] += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            seen.append(tuple(current))
            try:
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            except h11.LocalProtocolError:  # not keep-alive: h11 reads no further
                return seen, False


def compare(data, responses, stats):
    """Lilush and h11 must agree on every request both of them accepted: same method,
    path and body length, in the same order. Anything else is a framing disagreement,
    the stuff request smuggling is made of."""
    ours = served(responses)
    theirs, h11_refused = h11_reads(data)
    common = min(len(ours), len(theirs))
    for a, b in zip(ours[:common], theirs[:common]):
        if a is not None and a != b:
            raise Failure("framing disagreement: lilush served %r, h11 reads %r" % (ours, theirs))
    if len(ours) < len(theirs):
        stats["lilush refused, h11 accepted"] += 1
    elif len(ours) > len(theirs) and h11_refused:
        stats["h11 refused, lilush accepted"] += 1


def exchange(port, data, timeout):
    """Send ``data``, half-close, read until the server closes; the bytes read."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all was sent: read what it said
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100000, help="mutated requests to send")
    parser.add_argument("--seconds", type=float, default=600, help="stop sending after this long")
    parser.add_argument("--workers", type=int, default=8, help="client threads")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10, help="a response taking longer is a hang")
    args = parser.parse_args(argv)

    app_dir = tempfile.mkdtemp(prefix="lilush-fuzz-")
    with open(os.path.join(app_dir, "app.py"), "w") as f:
        f.write(APP)
    process, port, log_path = start_server(app_dir, CONFIG)
    print("fuzz: server pid %d on 127.0.0.1:%d; %d requests, %d workers, seed %d, at most %gs"
          % (process.pid, port, args.count, args.workers, args.seed, args.seconds), flush=True)

    lock = threading.Lock()
    next_index = [0]
    statuses = collections.Counter()
    failures = []
    disagreements = collections.Counter()
    silent = [0]  # connections closed without any response (incomplete requests)
    done = [0]
    started = time.monotonic()
    stop_at = started + args.seconds

    def worker():
        while True:
            with lock:
                i = next_index[0]
                if i >= args.count or time.monotonic() > stop_at or len(failures) >= 50:
                    return
                next_index[0] += 1
            rng = random.Random("%d-%d" % (args.seed, i))
            data = mutate(rng.choice(CORPUS), rng)
            problem = None
            got = []
            try:
                response = exchange(port, data, args.timeout)
                got = [status for status, _, _ in parse_responses(response)]
                bad = [s for s in got if s >= 500 and s != 501]
                if bad:
                    problem = "answered %s" % bad
                else:
                    compare(data, parse_responses(response), disagreements)
            except Failure as exc:
                problem = str(exc)
            except socket.timeout:
                problem = "no answer and no close within %gs" % args.timeout
            except OSError as exc:
                problem = "connection failed: %s" % exc
            except Exception as exc:  # a bug in this script: fail loudly, not silently
                problem = "fuzz.py itself failed: %s: %s" % (type(exc).__name__, exc)
            with lock:
                done[0] += 1
                statuses.update(got)
                if not got:
                    silent[0] += 1
                if problem:
                    failures.append((i, data, problem))

    elapsed = run_workers([worker] * args.workers,
                          lambda: "%d sent, %d failures" % (done[0], len(failures)))

    # The server is still up and serves a normal request.
    alive = process.poll() is None
    normal = None
    if alive:
        try:
            normal = [status for status, _, _ in parse_responses(exchange(port, CORPUS[0], 5))]
        except (Failure, OSError) as exc:
            normal = str(exc)
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        code = "killed"
    log = read_log(log_path)
    loud = loud_lines(log)
    shutil.rmtree(app_dir, ignore_errors=True)

    print("fuzz: %d mutated requests in %.1fs: %.0f req/s (one connection each, %d workers)"
          % (done[0], elapsed, done[0] / elapsed, args.workers))
    print("fuzz: responses by status: %s" % ", ".join("%d: %d" % kv for kv in sorted(statuses.items())))
    print("fuzz: connections closed without a response (incomplete requests): %d" % silent[0])
    print("fuzz: against h11 as a server on the same bytes: %d framing disagreements; stricter or laxer "
          "than h11: %s" % (sum(1 for _, _, p in failures if p.startswith("framing")),
                            dict(disagreements) or "never"))
    print("fuzz: server alive after the run: %s, normal request after: %s, exit code on SIGTERM: %s"
          % (alive, normal, code))
    print("fuzz: log lines at WARNING or above: %d" % len(loud))
    for line in loud[:10]:
        print("   ", line)
    print("fuzz: failures: %d" % len(failures))
    for i, data, problem in failures[:10]:
        print("    #%d %s\n        request %r" % (i, problem, data[:300]))
    ok = not failures and alive and normal == [200] and code == 0 and not loud and done[0] > 0
    print("fuzz: %s" % ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
