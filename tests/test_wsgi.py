"""The WSGI bridge: PEP 3333 apps served through a Lilush-style handler."""

import json
import logging
import sys
import threading
import time
from wsgiref.validate import validator

import gevent
import pytest
import requests

from lilush_http.wsgi import to_handle
from conftest import read_response


def environ_app(environ, start_response):
    """Answers with the environ's plain values as JSON."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    seen = {k: v for k, v in environ.items() if isinstance(v, str)}
    seen["body"] = body.decode("latin-1")
    seen["wsgi.version"] = list(environ["wsgi.version"])
    data = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def test_environ(live_server):
    live = live_server(to_handle(validator(environ_app)))
    response = requests.post(live.url + "/a%20b/c?x=1&y=%20", data=b"form=1",
                             headers={"Content-Type": "application/x-www-form-urlencoded",
                                      "X-Custom": "v"})
    env = response.json()
    assert response.status_code == 200
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/a b/c"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["CONTENT_LENGTH"] == "6" and env["body"] == "form=1"
    assert env["HTTP_X_CUSTOM"] == "v" and env["HTTP_HOST"] == "%s:%d" % (live.host, live.port)
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(live.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http" and env["wsgi.version"] == [1, 0]


def test_path_info_is_latin1_of_utf8_bytes(live_server):
    live = live_server(to_handle(environ_app))
    env = requests.get(live.url + "/caf%C3%A9").json()
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café"


def test_header_values_are_latin1_strings_of_the_bytes(live_server):
    """PEP 3333: header values in the environ are native strings holding the bytes as
    latin-1, whatever they are (UTF-8 obs-text, or not UTF-8 at all)."""
    live = live_server(to_handle(validator(environ_app)))
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nCookie: greeting=caf\xc3\xa9\r\nX-Latin1: caf\xe9 \xff\r\n"
                 b"Content-Type: text/plain; name=\xe2\x9c\x93\r\nConnection: close\r\n\r\n")
    status, _, body = read_response(sock)
    env = json.loads(body)
    assert status == 200
    assert env["HTTP_COOKIE"].encode("latin-1") == b"greeting=caf\xc3\xa9"
    assert env["HTTP_X_LATIN1"].encode("latin-1") == b"caf\xe9 \xff"
    assert env["CONTENT_TYPE"].encode("latin-1") == b"text/plain; name=\xe2\x9c\x93"


@pytest.mark.parametrize("order", ["dash-first", "underscore-first"])
def test_header_names_with_underscore_never_reach_the_environ(live_server, order):
    """``X_Forwarded_For`` and ``X-Forwarded-For`` would both be HTTP_X_FORWARDED_FOR:
    a client could overwrite what a proxy set. Names with "_" are dropped (as gunicorn
    and nginx do), so no two names share a key."""
    live = live_server(to_handle(validator(environ_app)))
    lines = [b"X-Forwarded-For: 10.0.0.1", b"X_Forwarded_For: 6.6.6.6"]
    if order == "underscore-first":
        lines.reverse()
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"\r\n".join(lines) +
                 b"\r\nContent_Type: evil\r\nX_Only: u\r\nConnection: close\r\n\r\n")
    env = json.loads(read_response(sock)[2])
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"
    assert "CONTENT_TYPE" not in env and "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_X_ONLY" not in env
    assert not any("6.6.6.6" in str(v) for v in env.values())


def test_headers_status_and_multiple_cookies(live_server):
    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"),
                                       ("Set-Cookie", "b=2"), ("X-Thing", "t")])
        return [b"made"]
    live = live_server(to_handle(validator(app)))
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    f = sock.makefile("rb")
    data = f.peek(65536)
    assert data.startswith(b"HTTP/1.1 201 Created\r\n")
    assert data.count(b"set-cookie: ") == 2 and b"x-thing: t\r\n" in data
    assert read_response(f)[2] == b"made"


def test_streamed_iterable_and_close_always_called(live_server):
    closed = []

    class Result:
        def __init__(self):
            self.parts = [b"one,", b"", b"two,", b"three"]

        def __iter__(self):
            return iter(self.parts)

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Result()
    live = live_server(to_handle(validator(app)))
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    status, headers, body = read_response(sock)
    assert headers["transfer-encoding"] == "chunked" and body == b"one,two,three"
    deadline = time.monotonic() + 2
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == [True]


def test_generator_app_is_incremental(live_server):
    gate = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first "
        deadline = time.monotonic() + 5
        while not gate.is_set() and time.monotonic() < deadline:
            gevent.sleep(0.01)
        yield b"second"
    live = live_server(to_handle(app))
    response = requests.get(live.url, stream=True, timeout=5)
    chunks = response.iter_content(chunk_size=None)
    assert next(chunks) == b"first "  # arrives while the app still waits
    gate.set()
    assert b"".join(chunks) == b"second"


def test_lazy_start_response_in_generator(live_server):
    def app(environ, start_response):
        yield b""  # nothing yet
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        yield b"late"
    live = live_server(to_handle(app))
    response = requests.get(live.url)
    assert response.status_code == 202 and response.text == "late"


def test_write_callable(live_server):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]
    live = live_server(to_handle(app))
    assert requests.get(live.url).text == "written returned"


def test_exc_info_replaces_headers_before_start(live_server):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]
    live = live_server(to_handle(validator(app)))
    response = requests.get(live.url)
    assert response.status_code == 500 and response.text == "error page"


def test_app_exception_is_500(live_server, caplog):
    def app(environ, start_response):
        raise RuntimeError("app broke")
    live = live_server(to_handle(app))
    caplog.set_level(logging.ERROR, logger="lilush_http")
    response = requests.get(live.url)
    assert response.status_code == 500
    assert "app broke" in caplog.text


def test_head_request_has_no_body(live_server):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]
    live = live_server(to_handle(validator(app)))
    sock = live.connect()
    sock.sendall(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    f = sock.makefile("rb")
    status, headers, _ = read_response(f, head_only=True)
    assert headers["content-length"] == "5"
    assert read_response(f)[2] == b"hello"


def test_https_url_scheme(live_server, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    live = live_server(to_handle(environ_app), ssl={"default": {"cert": str(tmp_path / "cert.pem"),
                                                                "key": str(tmp_path / "key.pem")}})
    env = requests.get("https://127.0.0.1:%d/" % live.port, verify=str(tmp_path / "ca.pem")).json()
    assert env["wsgi.url_scheme"] == "https"


# -- a real Flask application ---------------------------------------------------

@pytest.fixture
def flask_server(live_server):
    flask = pytest.importorskip("flask")
    app = flask.Flask("lilush_test")

    @app.route("/items/<int:item_id>")
    def item(item_id):
        return flask.jsonify(id=item_id, q=flask.request.args.get("q"))

    @app.route("/form", methods=["POST"])
    def form():
        return "name=%s" % flask.request.form["name"]

    @app.route("/upload", methods=["POST"])
    def upload():
        f = flask.request.files["file"]
        data = f.read()
        return flask.jsonify(filename=f.filename, size=len(data), first=data[:4].decode())

    @app.route("/json", methods=["POST"])
    def echo_json():
        return flask.jsonify(got=flask.request.get_json())

    @app.route("/stream")
    def stream():
        def generate():
            for i in range(3):
                yield "line %d\n" % i
        return flask.Response(generate(), mimetype="text/plain")

    @app.route("/cookie")
    def cookie():
        return flask.jsonify(greeting=flask.request.cookies.get("greeting"))

    @app.route("/fail")
    def fail():
        raise ValueError("flask view failed")

    return live_server(to_handle(app))


def test_flask_routing_and_json(flask_server):
    response = requests.get(flask_server.url + "/items/42?q=abc")
    assert response.status_code == 200 and response.json() == {"id": 42, "q": "abc"}
    assert requests.get(flask_server.url + "/items/nope").status_code == 404
    assert requests.post(flask_server.url + "/json", json={"a": [1, 2]}).json() == {"got": {"a": [1, 2]}}
    assert requests.get(flask_server.url + "/json").status_code == 405


def test_flask_form_and_upload(flask_server):
    assert requests.post(flask_server.url + "/form", data={"name": "lilush"}).text == "name=lilush"
    payload = b"DATA" + bytes(range(256)) * 400
    response = requests.post(flask_server.url + "/upload", files={"file": ("blob.bin", payload)})
    assert response.json() == {"filename": "blob.bin", "size": len(payload), "first": "DATA"}


def test_flask_streaming_and_errors(flask_server):
    response = requests.get(flask_server.url + "/stream")
    assert response.text == "line 0\nline 1\nline 2\n"
    assert response.headers["transfer-encoding"] == "chunked"
    response = requests.get(flask_server.url + "/fail")
    assert response.status_code == 500  # Flask's own error page
    assert requests.get(flask_server.url + "/items/1").status_code == 200  # still serving


def test_flask_reads_a_utf8_cookie(flask_server):
    """A browser that set document.cookie = "greeting=caf\u00e9" sends the UTF-8 bytes;
    the request is served (it was a 400), and the bytes reach Flask intact (Werkzeug 3
    hands out the PEP 3333 latin-1 string, as it does under gunicorn)."""
    response = requests.get(flask_server.url + "/cookie", headers={"Cookie": "greeting=caf\u00e9".encode()})
    assert response.status_code == 200
    assert response.json()["greeting"].encode("latin-1").decode("utf-8") == "caf\u00e9"
