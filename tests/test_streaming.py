"""Streamed bodies (generators, lists, iterables, files) over a live server:
chunked framing, incremental delivery, compression on the fly, failures mid-stream,
sendfile, closing what the handler returned, and header hygiene."""

import gzip
import io
import logging
import os
import threading
import time
import zlib

import brotli
import gevent
import gevent.socket
import pytest
import requests

from lilush_http import server
from lilush_http.connection import Connection
from conftest import read_response

WAIT = 10  # seconds a blocked generator waits before giving up (the client times out first)


# -- helpers -------------------------------------------------------------------

def open_request(live, path="/", method="GET", version="HTTP/1.1", headers=(), timeout=5):
    """Send one request on a new raw connection: (socket, its binary reader)."""
    sock = live.connect(timeout)
    extra = "".join("%s: %s\r\n" % header for header in headers)
    sock.sendall(("%s %s %s\r\nHost: t\r\n%s\r\n" % (method, path, version, extra)).encode("latin-1"))
    return sock, sock.makefile("rb")


def read_head(f):
    """(status, headers by lower-case name, the raw header lines) of one response head."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 ") and status_line.endswith(b"\r\n"), status_line
    lines = []
    while True:
        line = f.readline()
        assert line.endswith(b"\r\n"), line
        if line == b"\r\n":
            break
        lines.append(line[:-2].decode("latin-1"))
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, lines


def read_chunk(f):
    """The data of the next chunk, or None for the last (zero-size) chunk."""
    size_line = f.readline()
    assert size_line.endswith(b"\r\n"), size_line
    size = int(size_line.split(b";")[0], 16)
    if size == 0:
        assert f.readline() == b"\r\n"
        return None
    data = f.read(size)
    assert len(data) == size
    assert f.read(2) == b"\r\n"
    return data


def wait_until(predicate, timeout=5.0):
    """Poll ``predicate`` until true or the deadline; returns the last answer."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.01)
    return True


def gevent_wait(event, timeout=WAIT):
    """Block a generator running in the server's hub until a threading.Event is set."""
    deadline = time.monotonic() + timeout
    while not event.is_set():
        if time.monotonic() > deadline:
            raise RuntimeError("the test never released the generator")
        gevent.sleep(0.01)


class Tracked:
    """An iterable response body that counts what it produced and notes close()."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.produced = 0
        self.closed = threading.Event()

    def __iter__(self):
        return self

    def __next__(self):
        if self.produced >= len(self.chunks):
            raise StopIteration
        self.produced += 1
        return self.chunks[self.produced - 1]

    def close(self):
        self.closed.set()


class Endless(Tracked):
    """Produces 64 KB blocks for ever (until the client goes away)."""

    def __next__(self):
        self.produced += 1
        return b"x" * 65536


def endless_generator(closed):
    try:
        while True:
            yield b"y" * 65536
    finally:
        closed.set()


def log_text(caplog, needle, timeout=5.0):
    assert wait_until(lambda: needle in caplog.text, timeout), caplog.text
    return caplog.text


@pytest.fixture
def sendfile_calls(monkeypatch):
    """Every os.sendfile call (count of bytes asked) made while the test runs."""
    calls = []
    real = os.sendfile

    def spy(out_fd, in_fd, offset, count):
        calls.append(count)
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", spy)
    return calls


# -- chunked framing -------------------------------------------------------------

def framing_body():
    yield b"hello"
    yield b""  # an empty chunk does not end the stream
    yield "wörld"  # str is sent as UTF-8
    yield bytearray(b"!")


@pytest.mark.parametrize("make", [framing_body, lambda: list(framing_body()),
                                  lambda: [b"", b"hello", "", "wörld", b"!", b""]])
def test_iterable_body_is_chunked_with_exact_framing(live_server, make):
    live = live_server(lambda *a: (make(), 200, {"content-type": "text/plain"}))
    sock, f = open_request(live, headers=[("Connection", "close")])
    status, headers, lines = read_head(f)
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    assert f.read() == b"5\r\nhello\r\n6\r\nw\xc3\xb6rld\r\n1\r\n!\r\n0\r\n\r\n"  # then the server closed
    sock.close()


def test_chunked_responses_keep_the_connection(live_server):
    live = live_server(lambda m, q, *a: ((q.encode() + b"-%d" % i for i in range(3)), 200, {}))
    sock, f = open_request(live, "/one")
    status, headers, body = read_response(f)
    assert status == 200 and headers["transfer-encoding"] == "chunked" and body == b"/one-0/one-1/one-2"
    sock.sendall(b"GET /two HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = read_response(f)
    assert status == 200 and body == b"/two-0/two-1/two-2"
    sock.close()


@pytest.mark.parametrize("request_headers", [(), (("Connection", "keep-alive"),)])
def test_http10_stream_is_delimited_by_close(live_server, request_headers):
    live = live_server(lambda *a: (iter([b"part one, ", "part two"]), 200, {"content-type": "text/plain"}))
    sock, f = open_request(live, version="HTTP/1.0", headers=request_headers)
    status, headers, lines = read_head(f)
    assert status == 200
    assert "content-length" not in headers and "transfer-encoding" not in headers
    assert headers["connection"] == "close"
    assert f.read() == b"part one, part two"  # read to EOF: the server closed the connection
    assert sock.recv(1) == b""
    sock.close()


def test_http10_stream_with_gzip(live_server):
    live = live_server(lambda *a: (iter([b"alpha " * 100, b"beta " * 100]), 200, {}))
    sock, f = open_request(live, version="HTTP/1.0", headers=[("Accept-Encoding", "gzip")])
    status, headers, lines = read_head(f)
    assert headers["content-encoding"] == "gzip" and headers["connection"] == "close"
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert gzip.decompress(f.read()) == b"alpha " * 100 + b"beta " * 100
    sock.close()


def test_handler_content_length_with_generator(live_server):
    def chunks():
        yield b"hello"
        yield b" "
        yield "world"
    live = live_server(lambda *a: (chunks(), 200, {"content-type": "text/plain", "content-length": "11"}))
    sock, f = open_request(live, headers=[("Accept-Encoding", "gzip")])
    status, headers, lines = read_head(f)
    assert headers["content-length"] == "11"
    assert "transfer-encoding" not in headers
    assert "content-encoding" not in headers  # never compressed with a handler content-length
    assert f.read(11) == b"hello world"
    # exactly 11 bytes: the next response on the connection starts right after
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = read_response(f)
    assert status == 200 and headers["content-length"] == "11" and body == b"hello world"
    sock.close()


@pytest.mark.parametrize("chunks,length,sent,message", [
    ([b"12345", b"6789"], 8, b"12345", "more than its content-length 8"),
    ([b"12345"], 8, b"12345", "produced 5 of its content-length 8"),
    ([b"123", b"45"], 8, b"12345", "produced 5 of its content-length 8"),
])
def test_handler_content_length_broken_promise_closes(live_server, caplog, chunks, length, sent, message):
    live = live_server(lambda *a: (iter(chunks), 200, {"content-length": str(length)}))
    caplog.set_level(logging.ERROR, logger="lilush_http")
    sock, f = open_request(live)  # keep-alive requested, yet the server must close
    status, headers, lines = read_head(f)
    assert status == 200 and headers["content-length"] == str(length)
    assert f.read() == sent  # EOF before the promised length: never more than promised
    assert message in log_text(caplog, message)
    sock.close()


def test_handler_content_length_overflow_in_first_chunk_is_500(live_server, caplog):
    live = live_server(lambda *a: (iter([b"123456789"]), 200, {"content-length": "8"}))
    caplog.set_level(logging.ERROR, logger="lilush_http")
    status, headers, body = read_response(open_request(live)[1])
    assert status == 500 and b"123456789" not in body
    assert "more than its content-length 8" in log_text(caplog, "content-length 8")


# -- incremental delivery ---------------------------------------------------------

def test_first_chunk_arrives_while_generator_is_blocked(live_server):
    release = threading.Event()
    state = {"second": False}

    def body():
        yield b"first chunk"
        gevent_wait(release)
        state["second"] = True
        yield b"second chunk"

    live = live_server(lambda *a: (body(), 200, {"content-type": "text/plain"}))
    try:
        sock, f = open_request(live, timeout=3)  # a buffering server makes this read time out
        status, headers, lines = read_head(f)
        assert headers["transfer-encoding"] == "chunked"
        assert read_chunk(f) == b"first chunk"
        assert state["second"] is False  # read while the generator still waits
        release.set()
        assert read_chunk(f) == b"second chunk"
        assert read_chunk(f) is None
        sock.close()
    finally:
        release.set()


DECODERS = {
    "gzip": lambda: zlib.decompressobj(31),
    "deflate": lambda: zlib.decompressobj(),
}


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_compressed_stream_is_decodable_chunk_by_chunk(live_server, coding):
    release = threading.Event()
    state = {"second": False}
    first = b"<p>the first part</p>" * 20
    second = b"<p>the second part</p>" * 20

    def body():
        yield first
        gevent_wait(release)
        state["second"] = True
        yield second
        yield ""
        yield "<p>end</p>"

    live = live_server(lambda *a: (body(), 200, {"content-type": "text/html; charset=utf-8"}))
    try:
        sock, f = open_request(live, headers=[("Accept-Encoding", coding)], timeout=3)
        status, headers, lines = read_head(f)
        assert headers["content-encoding"] == coding
        assert headers["transfer-encoding"] == "chunked"
        assert headers["vary"] == "Accept-Encoding"
        assert "content-length" not in headers
        if coding == "br":
            d = brotli.Decompressor()
            decode = d.process
        else:
            d = DECODERS[coding]()
            decode = d.decompress
        raw = read_chunk(f)
        assert decode(raw) == first  # decodable on arrival, before the second part exists
        assert state["second"] is False
        release.set()
        got = b""
        while True:
            data = read_chunk(f)
            if data is None:
                break
            raw += data
            got += decode(data)
        assert got == second + b"<p>end</p>"
        if coding == "br":
            assert d.is_finished()
            assert brotli.decompress(raw) == first + second + b"<p>end</p>"
        else:
            assert d.eof and d.unused_data == b""  # a valid trailer (gzip: CRC and size checked)
        if coding == "gzip":
            assert gzip.decompress(raw) == first + second + b"<p>end</p>"
        sock.close()
    finally:
        release.set()


def test_stream_of_unknown_size_ignores_min_size(live_server):
    live = live_server(lambda *a: (iter(["hi"]), 200, {"content-type": "text/plain"}))
    response = requests.get(live.url, headers={"Accept-Encoding": "gzip"}, stream=True)
    raw = response.raw.read(decode_content=False)
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == b"hi"


def test_stream_with_handler_content_encoding_is_not_recompressed(live_server):
    encoded = gzip.compress(b"already compressed " * 100)
    live = live_server(lambda *a: (iter([encoded[:50], encoded[50:]]), 200,
                                   {"content-type": "text/html", "content-encoding": "gzip"}))
    response = requests.get(live.url, headers={"Accept-Encoding": "gzip, deflate"}, stream=True)
    raw = response.raw.read(decode_content=False)
    assert response.headers["content-encoding"] == "gzip" and "vary" not in response.headers
    assert raw == encoded


# -- failures mid-stream ----------------------------------------------------------

def failing_handler(method, query, *rest):
    if query == "/late":
        def body():
            yield b"first"
            raise RuntimeError("mid-stream boom")
        return body(), 200, {"content-type": "text/plain"}
    if query == "/early":
        def body():
            raise RuntimeError("early boom")
            yield b"never"
        return body(), 200, {"content-type": "text/plain"}
    return "fine", 200, {}


def test_generator_raising_mid_stream_truncates(live_server, caplog):
    live = live_server(failing_handler)
    caplog.set_level(logging.ERROR, logger="lilush_http")
    sock, f = open_request(live, "/late")
    status, headers, lines = read_head(f)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    rest = f.read()  # returns at EOF: the server closed the connection
    assert rest == b"5\r\nfirst\r\n"  # no terminating 0\r\n\r\n
    assert b"0\r\n\r\n" not in rest
    sock.close()
    assert "mid-stream boom" in log_text(caplog, "mid-stream boom")
    # a client library sees the truncation
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(live.url + "/late").content
    # the server goes on serving, on new connections
    assert requests.get(live.url + "/ok").text == "fine"


def test_generator_raising_before_first_chunk_is_500(live_server, caplog):
    live = live_server(failing_handler)
    caplog.set_level(logging.ERROR, logger="lilush_http")
    sock, f = open_request(live, "/early")
    status, headers, body = read_response(f)
    assert status == 500 and b"Internal Server Error" in body
    assert "early boom" in log_text(caplog, "early boom")
    sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")  # the connection goes on
    assert read_response(f)[2] == b"fine"
    sock.close()


# -- files and sendfile -----------------------------------------------------------

@pytest.fixture
def data_file(tmp_path):
    data = os.urandom(1024 * 1024)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


def file_handler(path, content_type, opened, seek=0):
    def handle(*args):
        f = open(path, "rb")
        f.seek(seek)
        opened.append(f)
        return f, 200, {"content-type": content_type}
    return handle


def test_file_goes_out_with_sendfile(live_server, data_file, sendfile_calls):
    path, data = data_file
    opened = []
    live = live_server(file_handler(path, "application/octet-stream", opened))
    response = requests.get(live.url, headers={"Accept-Encoding": "gzip, deflate, br"})
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert "transfer-encoding" not in response.headers
    assert "content-encoding" not in response.headers and "vary" not in response.headers
    assert sendfile_calls and sum(sendfile_calls) >= len(data)  # zero-copy path taken
    assert wait_until(lambda: opened[0].closed)


def test_file_from_its_position(live_server, data_file, sendfile_calls):
    path, data = data_file
    opened = []
    live = live_server(file_handler(path, "application/octet-stream", opened, seek=1000))
    response = requests.get(live.url)
    assert response.content == data[1000:]
    assert response.headers["content-length"] == str(len(data) - 1000)
    assert sendfile_calls
    assert wait_until(lambda: opened[0].closed)


def test_eligible_file_is_compressed_and_chunked(live_server, tmp_path, sendfile_calls):
    text = b"".join(b"<li>line %d of a text file</li>\n" % i for i in range(5000))
    path = tmp_path / "page.html"
    path.write_bytes(text)
    opened = []
    live = live_server(file_handler(path, "text/html", opened))
    response = requests.get(live.url, headers={"Accept-Encoding": "gzip"}, stream=True)
    raw = response.raw.read(decode_content=False)
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.headers
    assert gzip.decompress(raw) == text
    assert sendfile_calls == []
    assert wait_until(lambda: opened[0].closed)
    # without Accept-Encoding the same file goes out with sendfile and a Content-Length
    response = requests.get(live.url, headers={"Accept-Encoding": None})
    assert response.content == text and response.headers["content-length"] == str(len(text))
    assert response.headers["vary"] == "Accept-Encoding"
    assert sendfile_calls
    assert wait_until(lambda: opened[1].closed)


def test_head_on_file_matches_get_and_closes(live_server, data_file):
    path, data = data_file
    opened = []
    live = live_server(file_handler(path, "application/octet-stream", opened))
    sock, f = open_request(live, method="HEAD")
    status, head_headers, _ = read_head(f)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    status, get_headers, body = read_response(f)
    assert body == data
    head_headers.pop("date"), get_headers.pop("date")
    assert head_headers == get_headers
    assert wait_until(lambda: all(x.closed for x in opened)) and len(opened) == 2
    sock.close()


def tcp_pair():
    """A connected pair of gevent TCP sockets on loopback (server side, client side)."""
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = gevent.socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    return accepted, client


def read_exactly(sock, size):
    got = bytearray()
    while len(got) < size:
        data = sock.recv(65536)
        if not data:
            break
        got += data
    return bytes(got)


def test_connection_send_file_uses_sendfile(data_file, sendfile_calls):
    path, data = data_file
    accepted, client = tcp_pair()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data)
    with open(path, "rb") as f:
        reader = gevent.spawn(read_exactly, client, len(head) + len(data))
        sent = Connection(accepted).send_file(head, f, len(data), 5)
        received = reader.get(timeout=10)
    assert sent == len(head) + len(data)
    assert received == head + data
    assert sendfile_calls and sum(sendfile_calls) >= len(data)
    accepted.close()
    client.close()


def test_connection_send_file_on_unix_socketpair(data_file):
    path, data = data_file
    a, b = gevent.socket.socketpair()
    try:
        with open(path, "rb") as f:
            reader = gevent.spawn(read_exactly, b, 4 + len(data))
            Connection(a).send_file(b"HEAD", f, len(data), 5)
            assert reader.get(timeout=10) == b"HEAD" + data
    finally:
        a.close()
        b.close()


def test_process_request_file_on_unix_socket(data_file):
    path, data = data_file
    opened = []
    srv, err = server.new({}, file_handler(path, "application/octet-stream", opened))
    assert srv is not None, err
    a, b = gevent.socket.socketpair()
    try:
        b.settimeout(10)
        b.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        worker = gevent.spawn(srv.process_request, a, "local", 1)
        status, headers, body = read_response(b.makefile("rb"))  # yields to the worker
        assert worker.get(timeout=10) == ("keep-alive", None)
        assert status == 200 and body == data
        assert opened[0].closed
    finally:
        a.close()
        b.close()


def test_file_like_wrapper_sends_what_read_returns(live_server, tmp_path):
    text = b"hello world " * 100
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(text))
    opened = []

    def handle(*args):
        opened.append(gzip.open(path, "rb"))  # has fileno(): that of the compressed file
        return opened[-1], 200, {"content-type": "application/octet-stream"}

    live = live_server(handle)
    response = requests.get(live.url, headers={"Accept-Encoding": None})
    assert response.status_code == 200
    assert response.content == text


def test_file_closed_when_client_disconnects(live_server, tmp_path):
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(256 * 1024 * 1024)  # sparse: far more than the socket buffers hold
    opened = []
    live = live_server(file_handler(path, "application/octet-stream", opened))
    sock, f = open_request(live)
    status, headers, lines = read_head(f)
    assert headers["content-length"] == str(256 * 1024 * 1024)
    assert f.read(1000) == b"\0" * 1000
    f.close()
    sock.close()  # gone with most of the body unread
    assert wait_until(lambda: opened and opened[0].closed, 10)


@pytest.mark.parametrize("kind", ["generator", "iterable", "iterable-gzip"])
def test_iterable_closed_when_client_disconnects(live_server, kind):
    closed = threading.Event()
    if kind == "generator":
        make = lambda: endless_generator(closed)  # noqa: E731
    else:
        def make():
            body = Endless([])
            body.closed = closed
            return body
    live = live_server(lambda *a: (make(), 200, {"content-type": "application/octet-stream"
                                                 if kind != "iterable-gzip" else "text/plain"}))
    headers = [("Accept-Encoding", "gzip")] if kind == "iterable-gzip" else []
    sock, f = open_request(live, headers=headers)
    status, head_headers, lines = read_head(f)
    assert head_headers["transfer-encoding"] == "chunked"
    assert read_chunk(f)
    f.close()
    sock.close()
    assert closed.wait(10), "close() was not called after the client went away"


def test_iterable_close_called_after_response(live_server):
    bodies = []

    def handle(*args):
        body = Tracked([b"a", "b", b"c"])
        bodies.append(body)
        return body, 200, {"content-type": "text/plain"}

    live = live_server(handle)
    assert requests.get(live.url).content == b"abc"
    assert bodies[0].closed.wait(5)
    assert bodies[0].produced == 3


def test_generator_closed_after_response(live_server):
    events = []

    def handle(*args):
        done = threading.Event()
        events.append(done)

        def body():
            try:
                yield b"one"
                yield b"two"
                yield b"three"  # the server reads to the end, then closes
            finally:
                done.set()
        return body(), 200, {}

    live = live_server(handle)
    assert requests.get(live.url).content == b"onetwothree"
    assert events[0].wait(5)


def test_bytesio_is_chunked(live_server, sendfile_calls):
    data = os.urandom(600 * 1024)  # spans several read blocks
    bodies = []

    def handle(*args):
        bodies.append(io.BytesIO(data))
        return bodies[-1], 200, {"content-type": "application/octet-stream"}

    live = live_server(handle)
    sock, f = open_request(live)
    status, headers, body = read_response(f)
    assert status == 200 and body == data
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert sendfile_calls == []
    assert wait_until(lambda: bodies[0].closed)
    sock.close()


# -- HEAD ------------------------------------------------------------------------

@pytest.mark.parametrize("accept_encoding", [None, "gzip"])
def test_head_on_stream_sends_headers_only(live_server, accept_encoding):
    bodies = []

    def handle(method, query, *rest):
        body = Tracked([b"<p>streamed</p>", b"<p>more</p>"])
        bodies.append(body)
        return body, 200, {"content-type": "text/html"}

    live = live_server(handle)
    ae = [] if accept_encoding is None else [("Accept-Encoding", accept_encoding)]
    sock, f = open_request(live, method="HEAD", headers=ae)
    status, head_headers, _ = read_head(f)
    assert status == 200
    assert head_headers["transfer-encoding"] == "chunked"
    assert bodies[0].closed.wait(5)
    assert bodies[0].produced == 0  # not consumed
    # no body followed the head: the next response on the connection parses right away
    sock.sendall(("GET / HTTP/1.1\r\nHost: t\r\n%s\r\n"
                  % "".join("%s: %s\r\n" % h for h in ae)).encode())
    status, get_headers, body = read_response(f)
    assert status == 200
    head_headers.pop("date"), get_headers.pop("date")
    assert head_headers == get_headers
    if accept_encoding:
        assert get_headers["content-encoding"] == "gzip"
        assert gzip.decompress(body) == b"<p>streamed</p><p>more</p>"
    else:
        assert body == b"<p>streamed</p><p>more</p>"
    sock.close()


# -- header hygiene -------------------------------------------------------------------

@pytest.mark.parametrize("streamed", [False, True])
def test_header_list_gives_one_line_per_item(live_server, streamed):
    def handle(*args):
        content = iter([b"x"]) if streamed else "x"
        return content, 200, {"set-cookie": ["a=1; Path=/", "b=2; HttpOnly"], "X-Multi": ("one", "two")}

    live = live_server(handle)
    sock, f = open_request(live)
    status, headers, lines = read_head(f)
    assert status == 200
    assert [line for line in lines if line.lower().startswith("set-cookie:")] == \
        ["set-cookie: a=1; Path=/", "set-cookie: b=2; HttpOnly"]
    assert [line for line in lines if line.startswith("X-Multi:")] == ["X-Multi: one", "X-Multi: two"]
    sock.close()


BAD_HEADERS = [
    ({"x-bad": "a\r\nInjected: yes"}, "CR, LF or NUL"),
    ({"x-bad": "a\nInjected: yes"}, "CR, LF or NUL"),
    ({"x-bad": "a\rInjected: yes"}, "CR, LF or NUL"),
    ({"x-bad": "a\x00Injected: yes"}, "CR, LF or NUL"),
    ({"set-cookie": ["ok=1", "b=2\r\nInjected: yes"]}, "CR, LF or NUL"),
    ({"x-bad\r\nInjected": "yes"}, "invalid response header name"),
    ({"x-bad\nInjected": "yes"}, "invalid response header name"),
    ({"x-bad\x00Injected": "yes"}, "invalid response header name"),
]


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("bad,problem", BAD_HEADERS)
def test_cr_lf_nul_in_headers_is_500(live_server, caplog, bad, problem, streamed):
    bodies = []

    def handle(*args):
        body = Tracked([b"body"]) if streamed else "body"
        bodies.append(body)
        return body, 200, dict(bad)

    live = live_server(handle)
    caplog.set_level(logging.ERROR, logger="lilush_http")
    sock, f = open_request(live, headers=[("Connection", "close")])
    response = f.read()  # everything the server sent, up to its close
    sock.close()
    assert response.startswith(b"HTTP/1.1 500 ")
    assert b"Injected" not in response and b"injected" not in response.lower()
    assert problem in log_text(caplog, problem)
    if streamed:
        assert bodies[0].closed.wait(5) and bodies[0].produced == 0
