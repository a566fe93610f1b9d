"""Hostile and broken clients against a live server on loopback.

Smuggling probes (each followed, in the same write, by a complete second
request that must never be answered), absurd sizes, slow clients, clients that
vanish at every stage, and handlers that return nonsense. Timeouts are small;
every wait is a read with a deadline.
"""

import io
import logging
import select
import selectors
import socket
import struct
import time

import gevent
import pytest

from conftest import read_response, read_to_end

SECOND = b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n"
GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def recorder(calls):
    """A handler that records (method, query, body) and answers "ok"."""

    def handle(method, query, args, headers, body, ctx):
        calls.append((method, query, body))
        return "ok", 200, {"content-type": "text/plain"}
    return handle


def read_until_closed(sock, within=5.0):
    """Everything the server sends until it closes; fails if it does not close in time."""
    data, closed = read_to_end(sock, within)
    assert closed, "the server did not close the connection; got %r" % data[:300]
    return data


def responses(data):
    """All responses in ``data``: [(status, headers, body)]."""
    f = io.BytesIO(data)
    out = []
    while f.tell() < len(data):
        out.append(read_response(f))
    return out


def http_error_records(caplog, at_least=logging.WARNING):
    return [r for r in caplog.records if r.name.startswith("lilush_http") and r.levelno >= at_least]


# -- request smuggling ------------------------------------------------------------

POST = b"POST / HTTP/1.1\r\nHost: h\r\n"
BODY_THAT_LOOKS_LIKE_A_REQUEST = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"


def te(*lines):
    """A POST with the given header lines and a body that is a request when read as chunked."""
    return POST + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + BODY_THAT_LOOKS_LIKE_A_REQUEST


def cl(*lines, body=b"hello"):
    return POST + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def chunks(size_line):
    return POST + b"Transfer-Encoding: chunked\r\n\r\n" + size_line + b"\r\nhello\r\n0\r\n\r\n"


PROBES = [
    # Content-Length and Transfer-Encoding together, either order.
    ("cl-te", te(b"Content-Length: 6", b"Transfer-Encoding: chunked"), 400),
    ("te-cl", te(b"Transfer-Encoding: chunked", b"Content-Length: 6"), 400),
    ("te-cl-zero", te(b"Transfer-Encoding: chunked", b"Content-Length: 0"), 400),
    ("te-obfuscated-cl", te(b"Transfer-Encoding: xchunked", b"Content-Length: 6"), 400),
    # Transfer-Encoding obfuscations.
    ("te-xchunked", te(b"Transfer-Encoding: xchunked"), 501),
    ("te-chunked-identity", te(b"Transfer-Encoding: chunked, identity"), 501),
    ("te-identity-chunked", te(b"Transfer-Encoding: identity, chunked"), 501),
    ("te-upper", te(b"Transfer-Encoding: CHUNKED"), 501),
    ("te-capitalised", te(b"Transfer-Encoding: Chunked"), 501),
    ("te-two-lines", te(b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity"), 501),
    ("te-twice-chunked", te(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 501),
    ("te-empty", te(b"Transfer-Encoding:"), 501),
    ("te-quoted", te(b'Transfer-Encoding: "chunked"'), 501),
    ("te-comma", te(b"Transfer-Encoding: chunked,"), 501),
    ("te-obs-fold", te(b"Transfer-Encoding: identity", b" chunked"), 400),
    ("te-obs-fold-tab", te(b"Transfer-Encoding:", b"\tchunked"), 400),
    ("te-space-before-colon", te(b"Transfer-Encoding : chunked"), 400),
    ("te-tab-before-colon", te(b"Transfer-Encoding\t: chunked"), 400),
    ("te-leading-space-name", te(b" Transfer-Encoding: chunked"), 400),
    ("te-vertical-tab", te(b"Transfer-Encoding:\x0bchunked"), 400),
    ("te-form-feed", te(b"Transfer-Encoding: chunked\x0c"), 400),
    ("te-nul", te(b"Transfer-Encoding: chunked\x00"), 400),
    ("te-bare-cr", te(b"Transfer-Encoding: chunked\rX: y"), 400),
    ("te-non-ascii", te(b"Transfer-Encoding: chunk\xe9d"), 501),  # obs-text: a value, not "chunked"
    ("te-kelvin", te("Transfer-Encoding: \u212ahunked".encode("utf-8")), 501),
    ("te-in-http10", te(b"Transfer-Encoding: chunked").replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
    # Content-Length forms.
    ("cl-two-values", cl(b"Content-Length: 5", b"Content-Length: 6"), 400),
    ("cl-list", cl(b"Content-Length: 5, 6"), 400),
    ("cl-plus", cl(b"Content-Length: +5"), 400),
    ("cl-minus", cl(b"Content-Length: -1"), 400),
    ("cl-hex", cl(b"Content-Length: 0x10"), 400),
    ("cl-exponent", cl(b"Content-Length: 5e0"), 400),
    ("cl-inner-space", cl(b"Content-Length: 5 5"), 400),
    ("cl-trailing-comma", cl(b"Content-Length: 5,"), 400),
    ("cl-empty", cl(b"Content-Length:"), 400),
    ("cl-space-before-colon", cl(b"Content-Length : 5"), 400),
    ("cl-bare-cr", cl(b"Content-Length: 5\rX: y"), 400),
    ("cl-nul", cl(b"Content-Length: 5\x00"), 400),
    ("cl-non-ascii-digit", cl("Content-Length: \u0665".encode("utf-8")), 400),  # "\u0665".isdigit()
    ("cl-latin1-digit", cl(b"Content-Length: 5\xb9"), 400),  # superscript one in latin-1
    ("cl-fullwidth-digit", cl("Content-Length: \uff15".encode("utf-8")), 400),
    # Bare LF line ends in the head (issue 10): a front end reading the LF as part of
    # a field value (RFC 9110 section 5.5) would frame these otherwise.
    ("bare-lf-everywhere", b"POST / HTTP/1.1\nHost: h\nContent-Length: 5\n\nhello", 400),
    ("bare-lf-on-cl-line", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\n\r\nhello", 400),
    ("bare-lf-blank-line", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\nhello", 400),
    ("bare-lf-head-chunked", POST + b"Transfer-Encoding: chunked\n\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("bare-lf-hides-cl", b"GET / HTTP/1.1\r\nHost: h\r\nDummy: x\nContent-Length: 35\r\n\r\n", 400),
    ("bare-lf-hides-te", POST + b"x:x\nTransfer-Encoding: chunked\r\n\r\n" + BODY_THAT_LOOKS_LIKE_A_REQUEST, 400),
    ("bare-lf-before-request", b"\n" + GET, 400),
    ("cl-huge", cl(b"Content-Length: 99999999999999999999999999"), 413),
    ("cl-2-to-the-64-plus-5", cl(b"Content-Length: 18446744073709551621"), 413),
    # Chunk sizes.
    ("chunk-overflow", chunks(b"1" + b"0" * 16 + b"5"), 400),
    ("chunk-16-digits", chunks(b"f" * 16), 413),
    ("chunk-plus", chunks(b"+5"), 400),
    ("chunk-minus", chunks(b"-5"), 400),
    ("chunk-0x", chunks(b"0x5"), 400),
    ("chunk-junk", chunks(b"5 junk"), 400),
    ("chunk-letter", chunks(b"5g"), 400),
    ("chunk-leading-space", chunks(b" 5"), 400),
    ("chunk-empty", chunks(b""), 400),
    ("chunk-bare-cr", chunks(b"5\rX"), 400),
    ("chunk-nul", chunks(b"5\x00"), 400),
    ("chunk-ext-control", chunks(b"5;a\x01b"), 400),
    ("chunk-ext-non-ascii", chunks(b"5;n=\xff"), 400),
    ("trailer-request-line", POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nGET /smuggled HTTP/1.1\r\n"
                             b"Host: h\r\n\r\n", 400),
    ("trailer-obs-fold", POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n folded\r\n\r\n", 400),
    ("trailer-no-colon", POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-T\r\n\r\n", 400),
    ("trailer-space-before-colon", POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-T : 1\r\n\r\n", 400),
    ("chunk-too-short", POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", 400),
    # Bare CR, NUL, bad names, bad request lines.
    ("bare-cr-in-request-line", b"GET /\r HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("bare-cr-line-end", b"GET / HTTP/1.1\r\nHost: h\rX-A: 1\r\n\r\n", 400),
    ("cr-cr-lf", b"GET / HTTP/1.1\r\nHost: h\r\r\n\r\n", 400),
    ("nul-in-target", b"GET /\x00 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("nul-in-name", b"GET / HTTP/1.1\r\nHost: h\r\nX\x00A: 1\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    ("name-with-parens", b"GET / HTTP/1.1\r\nHost: h\r\nX(A): 1\r\n\r\n", 400),
    ("name-with-slash", b"GET / HTTP/1.1\r\nHost: h\r\nX/A: 1\r\n\r\n", 400),
    ("name-with-at", b"GET / HTTP/1.1\r\nHost: h\r\n@A: 1\r\n\r\n", 400),
    ("name-non-ascii", b"GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: 1\r\n\r\n", 400),
    ("empty-name", b"GET / HTTP/1.1\r\nHost: h\r\n: 1\r\n\r\n", 400),
    ("no-colon", b"GET / HTTP/1.1\r\nHost: h\r\nX-A 1\r\n\r\n", 400),
    ("fold-after-request-line", b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("no-host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("double-space-request-line", b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("tab-request-line", b"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("lowercase-version", b"GET / http/1.1\r\nHost: h\r\n\r\n", 400),
    ("http09", b"GET /\r\n\r\n", 400),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),  # with http2 off (below)
]


@pytest.mark.parametrize("probe,status", [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_smuggling_probe_refused_and_closed(live_server, probe, status):
    calls = []
    # The HTTP/2 preface starts HTTP/2 unless it is off; then it is a malformed HTTP/1.1 request.
    live = live_server(recorder(calls), **({"http2": False} if probe.startswith(b"PRI ") else {}))
    sock = live.connect()
    sock.sendall(probe + SECOND)
    answered = responses(read_until_closed(sock))
    assert [r[0] for r in answered] == [status]  # one answer: the refusal, never /second
    assert answered[0][1]["connection"] == "close"
    assert calls == []  # the handler saw nothing, not even the first request


ACCEPTED = [
    # Tab as optional whitespace before the value is valid (RFC 9110 5.6.3): chunked.
    ("te-tab-ows", POST + b"Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("te-trailing-ows", POST + b"Transfer-Encoding: chunked \t\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    # Identical repeated Content-Length values (RFC 9110 8.6 lets a recipient accept them).
    ("cl-identical-lines", cl(b"Content-Length: 5", b"Content-Length: 5")),
    ("cl-identical-list", cl(b"Content-Length: 5, 5")),
    ("cl-leading-zeros", cl(b"Content-Length: 0005")),
    ("obs-text-values", POST + b"Cookie: greeting=caf\xc3\xa9\r\nX-Latin1: caf\xe9\r\nContent-Length: 5\r\n\r\nhello"),
    ("chunk-extension", POST + b"Transfer-Encoding: chunked\r\n\r\n5;a=b;c\r\nhello\r\n0;end\r\n\r\n"),
    ("chunked-trailers", POST + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n"
                                b"Content-Length: 99\r\nX-T: 1\r\n\r\n"),
    ("blank-lines-before", b"\r\n\r\n" + cl(b"Content-Length: 5")),
]


@pytest.mark.parametrize("probe", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_accepted_framing_cannot_smuggle(live_server, probe):
    """What is accepted is framed exactly: the POST gets "hello", then /second is served,
    and nothing else reaches the handler."""
    calls = []
    # The HTTP/2 preface starts HTTP/2 unless it is off; then it is a malformed HTTP/1.1 request.
    live = live_server(recorder(calls), **({"http2": False} if probe.startswith(b"PRI ") else {}))
    sock = live.connect()
    sock.sendall(probe + SECOND)
    f = sock.makefile("rb")
    assert read_response(f)[:3:2] == (200, b"ok")
    assert read_response(f)[:3:2] == (200, b"ok")
    assert calls == [("POST", "/", b"hello"), ("GET", "/second", None)]
    sock.sendall(b"GET /third HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert read_response(f)[0] == 200
    assert f.read() == b""
    assert calls[2:] == [("GET", "/third", None)]


@pytest.mark.parametrize("prefix", [b"\r", b"\r\r\n", b"\n\r"])
def test_bare_cr_before_the_request_line_is_refused(live_server, prefix):
    calls = []
    live = live_server(recorder(calls))
    sock = live.connect()
    sock.sendall(prefix + GET)
    assert read_response(sock)[0] == 400
    assert calls == []


@pytest.mark.parametrize("body", [
    b"2;\nxx\r\n0\r\n\r\n",  # LF after an extension: a proxy reading on to a CRLF frames it otherwise
    b"5\nhello\n0\n\n",  # bare LF everywhere in the framing
    b"5\r\nhello\n0\r\n\r\n",  # bare LF after the data
])
def test_bare_lf_inside_chunked_framing_is_refused(live_server, body):
    """RFC 9112 allows a bare LF only in the head; inside chunked framing it is the
    opening of the "funky chunks" smuggling family, so it is a 400 and a close."""
    calls = []
    live = live_server(recorder(calls))
    sock = live.connect()
    sock.sendall(POST + b"Transfer-Encoding: chunked\r\n\r\n" + body + SECOND)
    f = sock.makefile("rb")
    assert read_response(f)[0] == 400
    assert f.read() == b""
    assert calls == []


def test_body_that_looks_like_a_request_is_only_a_body(live_server):
    calls = []
    live = live_server(recorder(calls))
    sock = live.connect()
    inner = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    sock.sendall(cl(b"Content-Length: %d" % len(inner), body=inner) + SECOND)
    f = sock.makefile("rb")
    assert read_response(f)[0] == 200 and read_response(f)[0] == 200
    assert calls == [("POST", "/", inner), ("GET", "/second", None)]


def test_underscore_is_not_a_dash(live_server):
    """``Content_Length`` is a valid but different field: it frames nothing, so the bytes
    after the head are the next request, exactly as a proxy would read them."""
    calls = []
    live = live_server(recorder(calls))
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nContent_Length: %d\r\n\r\n" % len(SECOND) + SECOND)
    f = sock.makefile("rb")
    assert read_response(f)[0] == 200 and read_response(f)[0] == 200
    assert calls == [("GET", "/", None), ("GET", "/second", None)]


# -- absurd sizes -----------------------------------------------------------------

def wait_readable(sock, timeout):
    return bool(select.select([sock], [], [], timeout)[0])


def test_100mb_content_length_refused_before_the_body(live_server):
    calls = []
    live = live_server(recorder(calls))
    sock = live.connect()
    started = time.monotonic()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (100 * 1024 * 1024))
    assert wait_readable(sock, 2), "no answer before the body"
    assert time.monotonic() - started < 1
    answered = responses(read_until_closed(sock))
    assert [r[0] for r in answered] == [413]
    assert calls == []


def stream_until_answered(sock, pieces, limit_bytes):
    """Send ``pieces`` until the server answers (or the connection breaks); returns
    (bytes sent, what the server sent). Never sends more than ``limit_bytes``."""
    sent = 0
    for piece in pieces:
        if wait_readable(sock, 0.002):
            break
        if sent + len(piece) > limit_bytes:
            break
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(piece)
    try:
        data = read_until_closed(sock, 5)
    except ConnectionResetError:
        data = b""
    return sent, data


def test_1gb_chunked_stream_stops_at_max_body_size(live_server):
    calls = []
    limit = 1024 * 1024
    live = live_server(recorder(calls), max_body_size=limit)
    sock = live.connect()
    block = b"a" * 65536
    chunk = b"%x\r\n%s\r\n" % (len(block), block)

    def pieces():
        yield POST + b"Transfer-Encoding: chunked\r\n\r\n"
        for _ in range(1024 ** 3 // len(block)):  # 1 GB, if it were all sent
            yield chunk
    sent, data = stream_until_answered(sock, pieces(), limit + 8 * 1024 * 1024)
    assert [r[0] for r in responses(data)] == [413]
    assert limit <= sent < limit + 8 * 1024 * 1024
    assert calls == []


def test_body_of_tiny_chunks_does_not_amplify_memory(live_server):
    """50,000 two-byte chunks (a 100 KB body): the server holds about the body, not
    an object per chunk (which peaked at ~6 MB here, 130 MB for a 5 MB body)."""
    import tracemalloc
    sizes = []

    def handle(method, query, args, headers, body, ctx):
        sizes.append(len(body))
        return "ok", 200, {}
    live = live_server(handle, max_body_size=1024 * 1024)
    sock = live.connect(timeout=60)  # tracemalloc slows the server (same process) a lot on a busy machine
    data = POST + b"Transfer-Encoding: chunked\r\n\r\n" + b"2\r\nxy\r\n" * 50000 + b"0\r\n\r\n"
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        sock.sendall(data)
        assert read_response(sock)[0] == 200
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert sizes == [100000]
    assert peak < 2 * 1024 * 1024, peak


def test_10000_headers_stop_at_max_headers(live_server):
    calls = []
    live = live_server(recorder(calls))  # max_headers 100
    sock = live.connect()
    lines = [b"GET / HTTP/1.1\r\nHost: h\r\n"] + [b"X-%d: 1\r\n" % i for i in range(10000)]
    pieces = (b"".join(lines[i:i + 50]) for i in range(0, len(lines), 50))
    sent, data = stream_until_answered(sock, pieces, 10 ** 6)
    assert [r[0] for r in responses(data)] == [431]
    total = sum(len(line) for line in lines)
    assert sent < total // 2  # refused while the head was still arriving
    assert calls == []


def test_1mb_request_line_refused_after_about_the_limit(live_server):
    calls = []
    limit = 8192
    live = live_server(recorder(calls), request_line_limit=limit)
    sock = live.connect()
    pieces = [b"GET /"] + [b"a" * 4096] * 256  # 1 MB, sent 4 KB at a time
    sent, data = stream_until_answered(sock, pieces, 2 * 1024 * 1024)
    assert [r[0] for r in responses(data)] == [414]
    # One read (64 KB) past the limit at most, plus what was in flight: not the megabyte.
    assert sent < limit + 256 * 1024
    assert calls == []


# -- slow clients -------------------------------------------------------------------

def test_slowloris_200_clients_cut_at_header_timeout(live_server):
    calls = []
    # 1.1 s: the deadline falls between two 0.2 s ticks, not on one.
    live = live_server(recorder(calls), request_header_timeout=1.1, keepalive_idle_timeout=10,
                       connection_limit=256, log_level="info")
    trickle = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-Slow: " + b"a" * 200
    clients = []
    for _ in range(200):
        sock = live.connect()
        sock.setblocking(False)
        clients.append({"sock": sock, "sent": 0, "first": None, "closed": None, "data": b""})
    sel = selectors.DefaultSelector()
    for c in clients:
        sel.register(c["sock"], selectors.EVENT_READ, c)
    started = time.monotonic()
    normal = None
    next_tick = started
    while any(c["closed"] is None for c in clients) and time.monotonic() - started < 6:
        now = time.monotonic()
        if now >= next_tick:
            next_tick = now + 0.2
            for c in clients:
                if c["closed"] is None:
                    try:
                        c["sock"].send(trickle[c["sent"]:c["sent"] + 1])
                        c["sent"] += 1
                        if c["first"] is None:
                            c["first"] = time.monotonic()
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        pass
        if normal is None and now - started > 0.5:
            # A normal client in the middle of the siege is served at once.
            t0 = time.monotonic()
            with live.connect(timeout=2) as other:
                other.sendall(GET)
                status, _, body = read_response(other)
            normal = (status, body, time.monotonic() - t0)
        for key, _ in sel.select(timeout=max(0, next_tick - time.monotonic())):
            c = key.data
            try:
                chunk = c["sock"].recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                c["data"] += chunk
            else:
                c["closed"] = time.monotonic()
                sel.unregister(c["sock"])
                c["sock"].close()
    sel.close()
    assert normal is not None and normal[:2] == (200, b"ok") and normal[2] < 0.5
    assert calls == [("GET", "/", None)]
    assert all(c["closed"] is not None for c in clients), "%d clients still open" % sum(
        c["closed"] is None for c in clients)
    lifetimes = [c["closed"] - c["first"] for c in clients]
    assert min(lifetimes) > 0.9 and max(lifetimes) < 2.6, (min(lifetimes), max(lifetimes))
    # Each was told why (a 408), at most one byte per 0.2 s having been sent.
    timed_out = [c for c in clients if c["data"].startswith(b"HTTP/1.1 408 Request Timeout\r\n")]
    assert len(timed_out) == 200, [c["data"][:40] for c in clients if c not in timed_out][:5]
    assert max(c["sent"] for c in clients) <= 15


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_slow_body_trickle_cut_at_body_timeout(live_server, framing):
    calls = []
    live = live_server(recorder(calls), request_body_timeout=1)
    sock = live.connect()
    if framing == "chunked":
        sock.sendall(POST + b"Transfer-Encoding: chunked\r\n\r\n")
        body = b"64\r\n" + b"b" * 100
    else:
        sock.sendall(POST + b"Content-Length: 100\r\n\r\n")
        body = b"b" * 100
    started = time.monotonic()
    for i in range(len(body)):
        if wait_readable(sock, 0.2):
            break
        sock.sendall(body[i:i + 1])
    answered = responses(read_until_closed(sock, 3))
    elapsed = time.monotonic() - started
    assert [r[0] for r in answered] == [408]
    assert 0.8 < elapsed < 2.0  # a deadline for the whole body, not per byte
    assert calls == []


BIG = 50 * 1024 * 1024


def big_handler(method, query, args, headers, body, ctx):
    if query == "/fixed":
        return b"x" * BIG, 200, {"content-type": "application/octet-stream"}
    if query == "/stream":
        block = b"y" * (1024 * 1024)
        return (block for _ in range(BIG // len(block))), 200, {"content-type": "application/octet-stream"}
    return "small", 200, {"content-type": "text/plain"}


@pytest.mark.parametrize("path", ["/fixed", "/stream"])
def test_reader_that_reads_nothing_cut_by_response_send_timeout(live_server, caplog, path):
    caplog.set_level(logging.DEBUG, logger="lilush_http")
    live = live_server(big_handler, response_send_timeout=0.5, log_level="debug")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    stalled.connect((live.host, live.port))
    stalled.sendall(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % path.encode())
    started = time.monotonic()
    # Meanwhile others are served.
    with live.connect(timeout=2) as other:
        other.sendall(GET)
        assert read_response(other)[2] == b"small"
    deadline = started + 5
    while time.monotonic() < deadline and "response send timeout" not in caplog.text:
        time.sleep(0.05)
    gave_up = time.monotonic() - started
    assert "response send timeout" in caplog.text
    assert gave_up < 3
    received = len(read_until_closed(stalled, 10))
    assert 0 < received < BIG
    with live.connect(timeout=2) as other:
        other.sendall(GET)
        assert read_response(other)[2] == b"small"
    assert not http_error_records(caplog)


# -- clients that vanish ------------------------------------------------------------

def vanish_handler(method, query, args, headers, body, ctx):
    if query == "/stream":
        block = b"s" * 65536
        return (block for _ in range(2000)), 200, {"content-type": "application/octet-stream"}
    if query == "/fixed":
        return b"f" * (20 * 1024 * 1024), 200, {"content-type": "application/octet-stream"}
    if query == "/slow":
        gevent.sleep(0.2)
    return "ok", 200, {"content-type": "text/plain"}


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_some(sock, size=100):
    sock.settimeout(5)
    assert sock.recv(size)


VANISH = {
    "mid-head": lambda s: (s.sendall(b"GET / HTTP/1.1\r\nHo"), s.close()),
    "mid-head-rst": lambda s: (s.sendall(b"GET / HTTP/1.1\r\nHo"), reset(s)),
    "mid-body": lambda s: (s.sendall(POST + b"Content-Length: 100\r\n\r\nabc"), s.close()),
    "mid-chunked-body": lambda s: (s.sendall(POST + b"Transfer-Encoding: chunked\r\n\r\n64\r\nab"), s.close()),
    "mid-body-rst": lambda s: (s.sendall(POST + b"Content-Length: 100\r\n\r\nabc"), reset(s)),
    "during-handler": lambda s: (s.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"), s.close()),
    "during-handler-rst": lambda s: (s.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"), reset(s)),
    "mid-stream": lambda s: (s.sendall(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n"), read_some(s), s.close()),
    "mid-stream-rst": lambda s: (s.sendall(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n"), read_some(s), reset(s)),
    "mid-fixed": lambda s: (s.sendall(b"GET /fixed HTTP/1.1\r\nHost: h\r\n\r\n"), read_some(s), s.close()),
    "mid-fixed-rst": lambda s: (s.sendall(b"GET /fixed HTTP/1.1\r\nHost: h\r\n\r\n"), read_some(s), reset(s)),
    "idle-keepalive-rst": lambda s: (s.sendall(GET), read_some(s), reset(s)),
}


@pytest.mark.parametrize("how", sorted(VANISH))
def test_vanishing_client_frees_its_slot_quietly(live_server, caplog, how):
    caplog.set_level(logging.DEBUG, logger="lilush_http")
    live = live_server(vanish_handler, connection_limit=2, log_level="debug")
    started = time.monotonic()
    for _ in range(5):
        VANISH[how](live.connect())
    # With 2 slots, 5 leaked connections would leave this one waiting forever.
    with live.connect(timeout=5) as sock:
        sock.sendall(GET)
        status, _, body = read_response(sock)
    assert (status, body) == (200, b"ok")
    assert time.monotonic() - started < 5
    time.sleep(0.3)  # let the last vanished connections be noticed and logged
    # (Freeing slots for the waiting clients is logged at info by design: admission.py.)
    loud = [r for r in caplog.records if r.name.startswith("lilush_http") and r.levelno > logging.DEBUG
            and r.name != "lilush_http.access" and " serving on " not in r.getMessage()
            and "to free a slot" not in r.getMessage()]
    assert not loud, [r.getMessage() for r in loud]
    with live.connect(timeout=5) as sock:  # and after that, still fine
        sock.sendall(GET)
        assert read_response(sock)[0] == 200


# -- handler faults -------------------------------------------------------------------

class Weird:
    def __repr__(self):
        return "<weird>"


FAULTS = {
    "generator-yields-object": (lambda: ((x for x in [Weird()]), 200, {}), "content of type Weird"),
    "generator-yields-int": (lambda: ((x for x in [5]), 200, {}), "content of type int"),
    "generator-yields-none-then-object": (lambda: ((x for x in [b"", Weird()]), 200, {}), "content of type Weird"),
    "status-1000-streamed": (lambda: ((x for x in [b"a"]), 1000, {}), "invalid status 1000"),
    "status-float": (lambda: ("x", 200.0, {}), "invalid status 200.0"),
    "status-bool": (lambda: ("x", True, {}), "invalid status True"),
    "status-99": (lambda: ("x", 99, {}), "invalid status 99"),
    "header-value-none": (lambda: ("x", 200, {"x-a": None}), "'x-a' has a value of type NoneType"),
    "header-value-none-streamed": (lambda: ((x for x in [b"a"]), 200, {"x-a": None}),
                                   "'x-a' has a value of type NoneType"),
    "header-list-with-none": (lambda: ("x", 200, {"set-cookie": ["a=1", None]}), "value of type NoneType"),
    "header-name-int": (lambda: ("x", 200, {5: "v"}), "invalid response header name 5"),
    "header-name-empty": (lambda: ("x", 200, {"": "v"}), "invalid response header name ''"),
    "header-value-lf": (lambda: ("x", 200, {"x-a": "a\nb"}), "CR, LF or NUL"),
    "four-values": (lambda: ("x", 200, {}, "extra"), "expected a tuple"),
    "empty-tuple": (lambda: (), "expected a tuple"),
    "list-not-tuple": (lambda: ["x", 200, {}], "expected a tuple"),
    "content-int": (lambda: (5, 200, {}), "content of type int"),
    "generator-raises-first": (lambda: ((1 / 0 for _ in [1]), 200, {}), "ZeroDivisionError"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_handler_fault_is_500_logged_and_survived(live_server, caplog, fault):
    make, problem = FAULTS[fault]

    def handle(method, query, *rest):
        if query == "/fault":
            return make()
        return "fine", 200, {}
    caplog.set_level(logging.ERROR, logger="lilush_http")
    live = live_server(handle)
    sock = live.connect()
    f = sock.makefile("rb")
    sock.sendall(b"GET /fault HTTP/1.1\r\nHost: h\r\n\r\n")
    status, headers, body = read_response(f)
    assert status == 500 and body == b"500 Internal Server Error\n"
    errors = http_error_records(caplog, logging.ERROR)
    assert any(problem in r.getMessage() and "/fault" in r.getMessage() for r in errors), \
        [r.getMessage() for r in errors]
    sock.sendall(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")  # the same connection goes on
    assert read_response(f)[:3:2] == (200, b"fine")


def test_generator_yielding_object_mid_stream_truncates_and_closes(live_server, caplog):
    def handle(method, query, *rest):
        if query == "/fault":
            return (x for x in [b"first", Weird()]), 200, {}
        return "fine", 200, {}
    caplog.set_level(logging.ERROR, logger="lilush_http")
    live = live_server(handle)
    sock = live.connect()
    sock.sendall(b"GET /fault HTTP/1.1\r\nHost: h\r\n\r\n")
    data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in data.lower()
    assert data.endswith(b"5\r\nfirst\r\n")  # no terminating chunk: the client sees the truncation
    assert any("content of type Weird" in r.getMessage() for r in http_error_records(caplog, logging.ERROR))
    with live.connect() as other:
        other.sendall(GET)
        assert read_response(other)[2] == b"fine"


def test_handler_calling_sys_exit_does_not_kill_the_server(live_server, caplog):
    import sys

    def handle(method, query, *rest):
        if query == "/exit":
            sys.exit(3)
        return "fine", 200, {}
    caplog.set_level(logging.ERROR, logger="lilush_http")
    live = live_server(handle)
    with live.connect(timeout=3) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /exit HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(f)[0] == 500
        sock.sendall(GET)  # the connection goes on, like after any handler fault
        assert read_response(f)[2] == b"fine"
    with live.connect(timeout=1) as other:
        other.sendall(GET)
        assert read_response(other)[2] == b"fine"
    assert "SystemExit" in caplog.text


def test_handler_raising_generator_exit_is_500(live_server, caplog):
    def handle(method, query, *rest):
        if query == "/gexit":
            raise GeneratorExit
        return "fine", 200, {}
    caplog.set_level(logging.ERROR, logger="lilush_http")
    live = live_server(handle)
    with live.connect(timeout=3) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /gexit HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(f)[0] == 500
        sock.sendall(GET)
        assert read_response(f)[2] == b"fine"
    with live.connect(timeout=3) as other:
        other.sendall(GET)
        assert read_response(other)[2] == b"fine"
    assert "GeneratorExit" in caplog.text


def test_pipelined_flood_without_reading_is_cut(live_server, caplog):
    """A client that pipelines requests and never reads the answers: the server stops
    when its sends stall for response_send_timeout, rather than buffering answers."""
    caplog.set_level(logging.WARNING, logger="lilush_http.access")  # thousands of entries otherwise
    caplog.set_level(logging.DEBUG, logger="lilush_http")  # (the capture handler's level: the last call's)
    calls = []
    live = live_server(recorder(calls), response_send_timeout=0.5, log_level="debug",
                       requests_per_connection=10 ** 6)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    sock.connect((live.host, live.port))
    sock.setblocking(False)
    burst = GET * 256
    started = time.monotonic()
    stalled_since = None
    sent = 0
    while time.monotonic() - started < 10:
        try:
            sent += sock.send(burst)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if "response send timeout" in caplog.text:
                break
            time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            break
    elapsed = time.monotonic() - started
    assert "response send timeout" in caplog.text
    assert stalled_since is not None and elapsed - (stalled_since - started) < 3, (elapsed, stalled_since - started)
    assert elapsed < 8
    served = len(calls)
    assert served * len(GET) <= sent
    sock.close()
    with live.connect(timeout=2) as other:
        other.sendall(SECOND)
        assert read_response(other)[0] == 200
    assert not http_error_records(caplog)
