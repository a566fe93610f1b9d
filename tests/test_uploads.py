"""Streamed request bodies: WSGI apps (Flask, Django, Falcon) and opted-in
Lilush-style handlers read the body from the connection as they go."""

import hashlib
import os
import socket
import time

import pytest
import requests

from conftest import read_response, read_to_end
from lilush_http.body import BodyReader, streamed_body
from lilush_http.wsgi import to_handle

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)


def pieces(data, size=100_000):
    """A generator body: requests sends it chunked."""
    for i in range(0, len(data), size):
        yield data[i:i + size]


def digest(data):
    return hashlib.sha256(data).hexdigest()


# -- WSGI frameworks ---------------------------------------------------------------------


def flask_app():
    import flask
    app = flask.Flask("uploads")

    @app.route("/stream", methods=["POST"])
    def stream():
        h = hashlib.sha256()
        size = 0
        while True:
            block = flask.request.stream.read(65536)
            if not block:
                break
            h.update(block)
            size += len(block)
        return {"size": size, "sha256": h.hexdigest(), "input": type(flask.request.environ["wsgi.input"]).__name__}

    @app.route("/data", methods=["POST"])
    def data():
        body = flask.request.get_data()
        return {"size": len(body), "sha256": digest(body)}

    @app.route("/ignore", methods=["POST"])
    def ignore():
        return "ignored"

    return app


@pytest.fixture
def flask_server(live_server):
    return live_server(to_handle(flask_app()), max_body_size=8 * 1024 * 1024)


@pytest.mark.parametrize("path", ["/stream", "/data"])
@pytest.mark.parametrize("chunked", [True, False])
def test_flask_upload(flask_server, path, chunked):
    body = pieces(PAYLOAD) if chunked else PAYLOAD
    r = requests.post(flask_server.url + path, data=body)
    assert r.status_code == 200
    assert r.json()["size"] == len(PAYLOAD) and r.json()["sha256"] == digest(PAYLOAD)
    if path == "/stream":
        assert r.json()["input"] == "BodyReader"


def test_flask_chunked_upload_with_curl(flask_server, tmp_path):
    import subprocess
    from conftest import need_program
    src = tmp_path / "upload.bin"
    src.write_bytes(PAYLOAD)
    out = subprocess.run([need_program("curl"), "-s", "-H", "Transfer-Encoding: chunked", "--data-binary",
                          "@" + str(src), flask_server.url + "/stream"], capture_output=True, timeout=30)
    assert b'"sha256":"%s"' % digest(PAYLOAD).encode() in out.stdout.replace(b" ", b"")


def test_django_upload(live_server):
    import django
    from django.conf import settings
    if not settings.configured:
        settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="x",
                           MIDDLEWARE=[], DATA_UPLOAD_MAX_MEMORY_SIZE=None)
        django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    live = live_server(to_handle(WSGIHandler()), max_body_size=8 * 1024 * 1024)
    # Django reads CONTENT_LENGTH bytes (request.body); a chunked body has no length, and
    # Django reads it from wsgi.input, which ends where the body ends.
    r = requests.post(live.url + "/django/", data=PAYLOAD)
    assert r.json() == {"body": len(PAYLOAD), "input": 0, "sha256": digest(PAYLOAD)}
    r = requests.post(live.url + "/django/", data=pieces(PAYLOAD))
    assert r.json() == {"body": 0, "input": len(PAYLOAD), "sha256": digest(PAYLOAD)}


def django_view(request):
    from django.http import JsonResponse
    body = request.body
    rest = request.META["wsgi.input"].read()
    return JsonResponse({"body": len(body), "input": len(rest), "sha256": digest(body or rest)})


def _urlpatterns():
    try:
        from django.urls import path
    except Exception:  # django missing: the test above fails on import instead
        return []
    return [path("django/", django_view)]


def test_falcon_upload(live_server):
    import falcon

    class Upload:
        def on_post(self, req, resp):
            h = hashlib.sha256()
            size = 0
            for block in iter(lambda: req.stream.read(65536), b""):
                h.update(block)
                size += len(block)
            resp.media = {"size": size, "sha256": h.hexdigest(), "length": req.content_length}

    app = falcon.App()
    app.add_route("/up", Upload())
    live = live_server(to_handle(app), max_body_size=8 * 1024 * 1024)
    for body, length in ((PAYLOAD, len(PAYLOAD)), (pieces(PAYLOAD), None)):
        r = requests.post(live.url + "/up", data=body)
        assert r.json() == {"size": len(PAYLOAD), "sha256": digest(PAYLOAD), "length": length}


# -- limits, 100 Continue, what is left unread ---------------------------------------------------


def test_limit_enforced_as_the_app_reads(live_server):
    live = live_server(to_handle(flask_app()), max_body_size=1024 * 1024)
    r = requests.post(live.url + "/stream", data=pieces(PAYLOAD))
    assert r.status_code == 413
    # Under the limit, the same server takes it.
    small = PAYLOAD[:500_000]
    r = requests.post(live.url + "/stream", data=pieces(small))
    assert r.json()["sha256"] == digest(small)


@streamed_body
def echo_lines(method, query, args, headers, body, ctx):
    if query == "/ignore":
        return "ignored", 200, {}
    if query == "/stream-back":
        def produce():
            for line in body:
                yield line
        return produce(), 200, {}
    assert isinstance(body, BodyReader)
    first = body.readline()
    rest = list(body)
    return b"%d|%s|%d|%d" % (len(first), first.strip(), len(rest), sum(map(len, rest))), 200, {}


def test_lilush_handler_opts_in(live_server):
    live = live_server(echo_lines)
    text = b"first line\n" + b"x" * 99 + b"\n" + b"tail without newline"
    r = requests.post(live.url + "/", data=text)
    assert r.content == b"11|first line|2|%d" % (len(text) - 11)
    r = requests.post(live.url + "/", data=pieces(text, 7))
    assert r.content == b"11|first line|2|%d" % (len(text) - 11)


def test_lilush_handler_keeps_bytes_by_default(live_server):
    seen = []

    def handle(method, query, args, headers, body, ctx):
        seen.append(body)
        return "ok", 200, {}

    live = live_server(handle)
    requests.post(live.url + "/", data=pieces(b"abc" * 1000, 100))
    assert seen == [b"abc" * 1000]


def head(path, extra=b"", length=None):
    framing = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + framing + extra + b"\r\n"


def test_100_continue_sent_at_the_first_read_not_before(live_server):
    live = live_server(echo_lines)
    with live.connect() as sock:
        # The handler never reads: no 100 Continue, the answer comes at once, and the
        # connection closes (the client may still send the body it was holding).
        sock.sendall(head(b"/ignore", b"Expect: 100-continue\r\n", 10))
        status, headers, body = read_response(sock)
        assert status == 200 and body == b"ignored" and headers.get("connection") == "close"
    with live.connect() as sock:
        sock.sendall(head(b"/", b"Expect: 100-continue\r\n", 6))
        f = sock.makefile("rb")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n" and f.readline() == b"\r\n"
        sock.sendall(b"a\nbcd\n")
        status, _, body = read_response(f)
        assert status == 200 and body == b"2|a|1|4"
        f.close()


def test_unread_body_is_drained_and_the_connection_kept(live_server):
    live = live_server(echo_lines)
    with live.connect() as sock:
        f = sock.makefile("rb")
        sock.sendall(head(b"/ignore", length=5000) + b"z" * 5000
                     + head(b"/ignore") + b"3\r\nabc\r\n0\r\n\r\n"
                     + head(b"/", length=4) + b"ok\nx")
        for _ in range(2):
            status, headers, body = read_response(f)
            assert status == 200 and body == b"ignored" and "connection" not in headers
        assert read_response(f)[2] == b"3|ok|1|1"
        f.close()


def test_large_unread_body_closes_the_connection(live_server):
    live = live_server(echo_lines, max_body_size=64 * 1024 * 1024)
    with live.connect() as sock:
        sock.sendall(head(b"/ignore", length=20 * 1024 * 1024) + b"z" * 100_000)
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") == "close"
        try:
            while True:
                sock.sendall(b"z" * 65536)  # the server drains a little, then ends the connection
        except OSError:
            pass
        _, closed = read_to_end(sock, 10)
        assert closed


def test_limit_after_the_response_started_closes(live_server):
    live = live_server(echo_lines, max_body_size=100_000)
    with live.connect() as sock:
        sock.sendall(head(b"/stream-back"))
        try:
            for _ in range(20):
                sock.sendall(b"2710\r\n" + b"line\n" * 2000 + b"\r\n")  # 10,000 bytes a chunk
                time.sleep(0.01)
        except OSError:
            pass  # the server ended the connection
        data, closed = read_to_end(sock, 10)
    assert closed
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in data
    assert not data.endswith(b"0\r\n\r\n")  # truncated: no last chunk


def test_malformed_chunked_body_read_by_the_app_is_400(live_server):
    live = live_server(echo_lines)
    with live.connect() as sock:
        sock.sendall(head(b"/") + b"zz\r\nabc\r\n")
        status, _, body = read_response(sock)
        assert status == 400 and b"chunk" in body.lower()


def test_slow_body_times_out_with_408(live_server):
    live = live_server(echo_lines, request_body_timeout=0.5)
    with live.connect() as sock:
        sock.sendall(head(b"/", length=100) + b"partial")
        started = time.monotonic()
        status, _, _ = read_response(sock)
        assert status == 408 and time.monotonic() - started < 5


def test_client_leaving_mid_body_leaves_the_server_serving(live_server):
    live = live_server(to_handle(flask_app()), max_body_size=8 * 1024 * 1024)
    with live.connect() as sock:
        sock.sendall(head(b"/stream", length=1_000_000) + b"x" * 1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    r = requests.post(live.url + "/data", data=b"after")
    assert r.json()["size"] == 5


urlpatterns = _urlpatterns()
