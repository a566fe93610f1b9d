"""Pipelined requests answered in batches: when the next request already waits in
the buffer, its response joins the previous ones in one write, in order, capped,
flushed before streamed and sendfile responses and whenever a handler blocks."""

import socket
import time

import gevent
import gevent.socket

from conftest import read_response, read_to_end
from lilush_http import connection, server


def get(path, extra=b""):
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: h\r\n" + extra + b"\r\n"


def test_pipelined_batch_keeps_order_and_its_cap(live_server):
    """Each handler sees how many responses are held at its start: they pile up
    to the cap and then leave; the client gets every response in order."""
    held = []

    def handle(method, query, args, headers, body, ctx):
        held.append(len(ctx["client"].pending))
        return query, 200, {"content-type": "text/plain"}
    live = live_server(handle)
    count = 3 * connection.BATCH_RESPONSES + 5
    with live.connect() as sock:
        sock.sendall(b"".join(get("/%d" % i) for i in range(count)))
        f = sock.makefile("rb")
        bodies = [read_response(f)[2] for _ in range(count)]
    assert bodies == [b"/%d" % i for i in range(count)]
    assert max(held) == connection.BATCH_RESPONSES  # held back, up to the cap and no further
    assert held[:3] == [0, 1, 2]
    assert held.count(0) >= 3  # the cap made the batch leave (and the last one of each recv)


def test_batch_is_capped_in_bytes(live_server):
    big = b"x" * (connection.BATCH_BYTES // 3)
    held = []

    def handle(method, query, args, headers, body, ctx):
        held.append(ctx["client"].pending_bytes)
        return big, 200, {"content-type": "text/plain"}
    live = live_server(handle)
    with live.connect() as sock:
        sock.sendall(get("/") * 8)
        f = sock.makefile("rb")
        assert [read_response(f)[2] for _ in range(8)] == [big] * 8
    assert 0 < max(held) <= connection.BATCH_BYTES


def test_streamed_and_sendfile_responses_flush_the_batch_first(live_server, tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"F" * 100000)
    seen = {}

    def stream(conn):
        seen["held when the stream starts"] = len(conn.pending)
        yield b"s1-"
        gevent.sleep(0.05)
        yield b"s2"

    def handle(method, query, args, headers, body, ctx):
        if query == "/stream":
            return stream(ctx["client"]), 200, {"content-type": "text/plain"}
        if query == "/file":
            return open(path, "rb"), 200, {"content-type": "application/octet-stream"}
        return query, 200, {"content-type": "text/plain"}
    live = live_server(handle)
    with live.connect() as sock:
        sock.sendall(get("/a") + get("/b") + get("/stream") + get("/c") + get("/file") + get("/d")
                     + b"HEAD /e HTTP/1.1\r\nHost: h\r\n\r\n" + get("/f"))
        f = sock.makefile("rb")
        got = [read_response(f)[2] for _ in range(6)]
        status, headers, body = read_response(f, head_only=True)
        assert status == 200 and headers["content-length"] == "2" and body == b""
        assert read_response(f)[2] == b"/f"
    assert got == [b"/a", b"/b", b"s1-s2", b"/c", b"F" * 100000, b"/d"]
    assert seen["held when the stream starts"] == 0


def test_a_slow_handler_does_not_hold_back_earlier_responses(live_server):
    """The responses batched before a handler that blocks leave as soon as it
    blocks, not when it returns."""
    def handle(method, query, args, headers, body, ctx):
        if query == "/slow":
            gevent.sleep(2.0)
        return query, 200, {"content-type": "text/plain"}
    live = live_server(handle)
    with live.connect(timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(get("/1") + get("/2") + get("/slow") + get("/3"))
        f = sock.makefile("rb")
        assert read_response(f)[2] == b"/1"
        assert read_response(f)[2] == b"/2"
        early = time.monotonic() - started
        assert read_response(f)[2] == b"/slow"
        late = time.monotonic() - started
        assert read_response(f)[2] == b"/3"
    assert early < 1.2, early  # before the slow handler's 2 s were over
    assert late >= 1.9, late


def test_pipelining_client_that_half_closes_gets_every_response(live_server):
    live = live_server(lambda method, query, *rest: (query, 200, {"content-type": "text/plain"}))
    with live.connect() as sock:
        sock.sendall(b"".join(get("/%d" % i) for i in range(10)))
        sock.shutdown(socket.SHUT_WR)
        data, closed = read_to_end(sock)
    assert closed
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 10 and data.endswith(b"/9")


def test_pipelining_client_that_leaves_mid_batch(live_server):
    """The client closes while a handler in the middle of its batch is blocked:
    the connection ends quietly and frees its slot; the server serves on."""
    def handle(method, query, args, headers, body, ctx):
        if query == "/slow":
            gevent.sleep(0.5)
        return query, 200, {"content-type": "text/plain"}
    live = live_server(handle)
    sock = live.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    sock.sendall(get("/1") + get("/slow") + b"".join(get("/%d" % i) for i in range(2, 40)))
    time.sleep(0.1)
    sock.close()
    deadline = time.monotonic() + 5
    while live.srv._connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not live.srv._connections
    with live.connect() as other:
        other.sendall(get("/after"))
        assert read_response(other)[2] == b"/after"


def test_an_error_in_the_batch_comes_after_the_responses_before_it(live_server):
    live = live_server(lambda method, query, *rest: (query, 200, {"content-type": "text/plain"}))
    with live.connect() as sock:
        sock.sendall(get("/1") + get("/2") + b"GET /bad HTTP/1.1\r\n\r\n" + get("/never"))
        data, closed = read_to_end(sock)
    assert closed
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2 and b"/never" not in data
    assert data.index(b"/2") < data.index(b"HTTP/1.1 400 Bad Request\r\n")


def test_connection_close_in_the_batch_sends_what_was_held(live_server):
    live = live_server(lambda method, query, *rest: (query, 200, {"content-type": "text/plain"}))
    with live.connect() as sock:
        sock.sendall(get("/1") + get("/2") + get("/3", b"Connection: close\r\n") + get("/never"))
        data, closed = read_to_end(sock)
    assert closed and data.count(b"HTTP/1.1 200 OK\r\n") == 3 and data.endswith(b"/3")


def test_process_request_called_directly_never_holds_a_response():
    """A caller looping process_request itself gets each response sent before it returns."""
    srv, err = server.new({}, None)
    assert srv is not None, err
    ours, theirs = gevent.socket.socketpair()
    theirs.sendall(get("/") * 2)
    assert srv.process_request(ours, "10.0.0.9", 1) == ("keep-alive", None)
    theirs.settimeout(2)
    assert theirs.recv(65536).count(b"HTTP/1.1 200 OK\r\n") == 1
    ours.close()
    theirs.close()


def test_a_handler_writing_on_the_socket_itself_comes_after_the_held_responses(live_server):
    held = []

    def handle(method, query, args, headers, body, ctx):
        client = ctx["client"]
        client.getsockname()  # no I/O: the batch stays held
        held.append(len(client.pending))
        if query == "/raw":
            client.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n/raw")
            return None, None, None
        return query, 200, {"content-type": "text/plain"}
    live = live_server(handle)
    with live.connect() as sock:
        sock.sendall(get("/1") + get("/2") + get("/raw") + get("/3"))
        f = sock.makefile("rb")
        assert [read_response(f)[2] for _ in range(4)] == [b"/1", b"/2", b"/raw", b"/3"]
    assert held[:3] == [0, 1, 2]
