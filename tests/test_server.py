"""The server live on loopback: protocol behaviour seen by real clients."""

import http.client
import json
import logging
import socket
import subprocess
import time

import gevent
import pytest
import requests

from lilush_http import server
from conftest import read_response, read_to_end


def echo(method, query, args, headers, body, ctx):
    """Answers with what the handler was given, as JSON."""
    seen = {
        "method": method, "query": query, "args": args, "headers": headers,
        "body": body.decode("latin-1") if body is not None else None,
        "body_type": type(body).__name__, "count": ctx["count"], "client_ip": ctx["client_ip"],
        "ctx_keys": sorted(ctx),
    }
    return json.dumps(seen), 200, {"content-type": "application/json"}


def test_sample_handle_answers_hi_there(live_server):
    live = live_server()
    response = requests.get(live.url + "/")
    assert response.status_code == 200
    assert response.text == "Hi there!"
    assert response.headers["content-type"] == "text/html"
    assert response.headers["content-length"] == "9"
    assert response.headers["server"] == "lilush_http"
    assert response.headers["date"].endswith(" GMT")


def test_handler_gets_lilush_arguments(live_server):
    live = live_server(echo)
    response = requests.post(live.url + "/path/x?a=1&b=?2", data=b"payload",
                             headers={"X-Thing": "one"})
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["query"] == "/path/x"
    assert seen["args"] == "a=1&b=?2"
    assert seen["body"] == "payload" and seen["body_type"] == "bytes"
    assert seen["headers"]["x-thing"] == "one"
    assert all(name == name.lower() for name in seen["headers"])
    assert seen["headers"]["x-client-ip"] == "127.0.0.1"
    assert seen["headers"]["x-real-ip"] == "127.0.0.1"
    assert seen["count"] == 1
    assert {"logger", "client", "cfg", "client_ip", "redis", "count"} <= set(seen["ctx_keys"])


def test_no_body_is_none_and_empty_path_is_slash(live_server):
    live = live_server(echo)
    sock = live.connect()
    sock.sendall(b"GET http://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")  # absolute-form, empty path
    status, _, body = read_response(sock)
    seen = json.loads(body)
    assert status == 200
    assert seen["query"] == "/" and seen["args"] == "x=1"
    assert seen["body"] is None and seen["body_type"] == "NoneType"


def test_proxied_client_headers_are_kept(live_server):
    live = live_server(echo)
    seen = requests.get(live.url, headers={"X-Real-IP": "10.1.2.3", "X-Client-IP": "6.6.6.6",
                                           "X-Forwarded-For": "10.1.2.3"}).json()
    assert seen["headers"]["x-real-ip"] == "10.1.2.3"  # set by a proxy in front: kept
    assert seen["headers"]["x-client-ip"] == "127.0.0.1"  # always the peer, never the client's claim
    assert seen["headers"]["x-forwarded-for"] == "10.1.2.3"


def test_repeated_request_headers_are_joined(live_server):
    live = live_server(echo)
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nAccept: a/b\r\nAccept: c/d\r\n\r\n")
    seen = json.loads(read_response(sock)[2])
    assert seen["headers"]["accept"] == "a/b, c/d"


def test_status_lines_have_reason_and_crlf(live_server):
    def handle(method, query, args, headers, body, ctx):
        return "x", int(query[1:]), {}
    live = live_server(handle)
    for code, reason in [(200, b"OK"), (404, b"Not Found"), (418, b"I'm a Teapot"),
                         (503, b"Service Unavailable"), (599, b"Unknown")]:
        sock = live.connect()
        sock.sendall(b"GET /%d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" % code)
        data = read_to_end(sock)[0]
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0] == b"HTTP/1.1 %d %s" % (code, reason)
        assert b"\n" not in head.replace(b"\r\n", b"")  # no bare LF anywhere in the head
        assert body == b"x"


def test_response_headers_from_handler(live_server):
    def handle(method, query, args, headers, body, ctx):
        return b"{}", 201, {"content-type": "application/json", "x-n": 5,
                            "set-cookie": ["a=1; Path=/", "b=2; HttpOnly"]}
    live = live_server(handle)
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    data = sock.recv(65536)
    assert data.count(b"\r\nset-cookie: ") == 2
    assert b"\r\nset-cookie: a=1; Path=/\r\n" in data and b"\r\nset-cookie: b=2; HttpOnly\r\n" in data
    assert b"\r\ncontent-type: application/json\r\n" in data
    assert b"Content-Type: text/html" not in data
    assert b"\r\nx-n: 5\r\n" in data
    assert data.startswith(b"HTTP/1.1 201 Created\r\n")


def test_str_content_is_utf8_and_length_in_bytes(live_server):
    live = live_server(lambda *a: ("héllo ✓", 200, {"content-type": "text/plain; charset=utf-8"}))
    response = requests.get(live.url)
    assert response.content == "héllo ✓".encode("utf-8")
    assert response.headers["content-length"] == str(len("héllo ✓".encode("utf-8")))


def test_two_value_return_like_lua(live_server):
    live = live_server(lambda *a: ("short", 202))
    response = requests.get(live.url)
    assert response.status_code == 202 and response.text == "short"


def test_head_gets_get_headers_without_body(live_server):
    live = live_server(lambda m, *a: ("x" * 1000, 200, {"content-type": "text/plain"}))
    sock = live.connect()
    sock.sendall(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    f = sock.makefile("rb")
    status, headers, body = read_response(f, head_only=True)
    assert status == 200 and headers["content-length"] == "1000" and body == b""
    # The next bytes are the GET's response, so HEAD sent no body at all.
    status, get_headers, body = read_response(f)
    assert status == 200 and body == b"x" * 1000
    assert {k: v for k, v in get_headers.items() if k != "date"} == \
        {k: v for k, v in headers.items() if k != "date"}


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(live_server, status):
    live = live_server(lambda *a: ("ignored body", status, {}))
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    f = sock.makefile("rb")
    for _ in range(2):
        code, headers, body = read_response(f)
        assert code == status and body == b""
        assert "content-type" not in headers
        if status == 204:
            assert "content-length" not in headers


def test_keep_alive_reuses_one_connection(live_server):
    live = live_server(echo)
    conn = http.client.HTTPConnection(live.host, live.port, timeout=5)
    ports = set()
    for i in range(1, 11):
        conn.request("GET", "/n/%d" % i)
        response = conn.getresponse()
        seen = json.loads(response.read())
        assert seen["count"] == i  # the server counts requests on this one connection
        ports.add(conn.sock.getsockname()[1])
    assert len(ports) == 1
    conn.close()


def test_requests_per_connection_closes_at_limit(live_server):
    live = live_server(echo, requests_per_connection=3)
    sock = live.connect()
    f = sock.makefile("rb")
    for i in range(1, 4):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, body = read_response(f)
        assert json.loads(body)["count"] == i
        assert headers.get("connection") == ("close" if i == 3 else None)
    assert f.read() == b""  # the server closed the connection


def test_connection_close_and_http10_rules(live_server):
    live = live_server()
    cases = [
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", "close"),
        (b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", "close"),
        (b"GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", "keep-alive"),
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", None),
    ]
    for request, expected in cases:
        sock = live.connect(timeout=2)
        sock.sendall(request)
        f = sock.makefile("rb")
        status, headers, body = read_response(f)
        assert status == 200 and body == b"Hi there!"
        assert headers.get("connection") == expected
        if expected == "close":
            assert f.read() == b""
        else:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(f)[0] == 200
        sock.close()


def test_handler_connection_close_header_closes(live_server):
    live = live_server(lambda *a: ("bye", 200, {"connection": "close"}))
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    f = sock.makefile("rb")
    status, headers, body = read_response(f)
    assert headers["connection"] == "close" and body == b"bye"
    assert f.read() == b""


def test_pipelined_requests_answered_in_order(live_server):
    live = live_server(echo)
    sock = live.connect()
    batch = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(20))
    batch += b"POST /post HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    batch += b"POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    batch += b"GET /last HTTP/1.1\r\nHost: h\r\n\r\n"
    sock.sendall(batch)
    f = sock.makefile("rb")
    queries = []
    for _ in range(23):
        status, _, body = read_response(f)
        assert status == 200
        seen = json.loads(body)
        queries.append((seen["query"], seen["body"]))
    assert queries == [("/%d" % i, None) for i in range(20)] + \
        [("/post", "hello"), ("/chunked", "abc"), ("/last", None)]


def test_pipelined_bytes_split_across_writes(live_server):
    live = live_server(echo)
    sock = live.connect()
    data = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nwxyzGET /c HTTP/1.1\r\nHost: h\r\n\r\n"
    for i in range(0, len(data), 7):
        sock.sendall(data[i:i + 7])
        time.sleep(0.005)
    f = sock.makefile("rb")
    got = [json.loads(read_response(f)[2]) for _ in range(3)]
    assert [(g["query"], g["body"]) for g in got] == [("/a", None), ("/b", "wxyz"), ("/c", None)]


def test_chunked_request_body(live_server):
    live = live_server(echo)

    def chunks():
        yield b"hello "
        yield b"chunked "
        yield b"world"
    response = requests.post(live.url + "/up", data=chunks())  # requests sends this chunked
    assert response.json()["body"] == "hello chunked world"
    sock = live.connect()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"A;ext=1\r\n0123456789\r\n1f\r\n" + b"x" * 31 + b"\r\n0\r\nX-Trailer: t\r\n\r\n")
    seen = json.loads(read_response(sock)[2])
    assert seen["body"] == "0123456789" + "x" * 31
    assert "x-trailer" not in seen["headers"]  # trailers are dropped


def test_large_content_length_body(live_server):
    live = live_server(lambda m, q, a, h, body, ctx: (str(len(body)) + ":" + str(sum(body) % 9973), 200, {}))
    payload = bytes(range(256)) * 8192  # 2 MiB
    response = requests.post(live.url, data=payload)
    assert response.text == "%d:%d" % (len(payload), sum(payload) % 9973)


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 400),
    (b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", 417),
])
def test_bad_requests_get_error_and_close(live_server, request_bytes, status):
    called = []
    live = live_server(lambda *a: called.append(a) or ("no", 200, {}))
    sock = live.connect()
    sock.sendall(request_bytes + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    f = sock.makefile("rb")
    code, headers, body = read_response(f)
    assert code == status
    assert headers["connection"] == "close"
    assert body.startswith(b"%d " % status)
    assert f.read() == b""  # closed: the request after it was never answered
    assert called == []


def test_chunked_body_over_limit_is_413(live_server):
    live = live_server(echo, max_body_size=100)
    sock = live.connect()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + b"40\r\n" + b"a" * 64 + b"\r\n" + b"40\r\n" + b"a" * 64 + b"\r\n")
    assert read_response(sock)[0] == 413


def test_huge_line_refused_before_it_is_complete(live_server):
    live = live_server()
    sock = live.connect()
    sock.sendall(b"GET /" + b"a" * 20000)  # no end of line yet
    status, headers, _ = read_response(sock)
    assert status == 414


def test_expect_100_continue(live_server):
    live = live_server(echo, max_body_size=1000)
    sock = live.connect()
    sock.sendall(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(b"abcde")
    status, _, body = read_response(sock)
    assert status == 200 and json.loads(body)["body"] == "abcde"

    # Chunked with 100-continue.
    sock = live.connect()
    sock.sendall(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
    assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(b"2\r\nok\r\n0\r\n\r\n")
    assert json.loads(read_response(sock)[2])["body"] == "ok"

    # Refused before the body: 413 and no 100 Continue.
    sock = live.connect()
    sock.sendall(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    data = sock.recv(1000)
    assert data.startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert b"100 Continue" not in data


def test_expect_100_continue_with_curl(live_server, tmp_path):
    live = live_server(echo)
    upload = tmp_path / "up.bin"
    upload.write_bytes(b"z" * 2_000_000)  # curl sends Expect: 100-continue above 1 MiB
    out = subprocess.run(["curl", "-sv", "--data-binary", "@%s" % upload, live.url + "/u"],
                         capture_output=True, timeout=30)
    assert b"< HTTP/1.1 100 Continue" in out.stderr
    assert len(json.loads(out.stdout)["body"]) == 2_000_000


def test_curl_keeps_connection_alive(live_server):
    live = live_server(lambda m, q, a, h, b, ctx: ("%s=%d\n" % (q, ctx["count"]), 200, {}))
    out = subprocess.run(["curl", "-sv", live.url + "/1", live.url + "/2", live.url + "/3"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0
    assert out.stderr.count(b"Re-using existing connection") == 2
    assert out.stdout == b"/1=1\n/2=2\n/3=3\n"  # three requests, one connection


def test_handler_exception_is_500_and_logged(live_server, caplog):
    def handle(method, query, *rest):
        if query == "/boom":
            raise RuntimeError("kaboom")
        return "fine", 200, {}
    live = live_server(handle)
    caplog.set_level(logging.ERROR, logger="lilush_http")
    conn = http.client.HTTPConnection(live.host, live.port, timeout=5)
    conn.request("GET", "/boom")
    response = conn.getresponse()
    assert response.status == 500 and b"Internal Server Error" in response.read()
    # The same connection goes on serving.
    conn.request("GET", "/ok")
    assert conn.getresponse().read() == b"fine"
    assert "kaboom" in caplog.text and "Traceback" in caplog.text
    assert requests.get(live.url + "/other").text == "fine"


@pytest.mark.parametrize("result,problem", [
    ("just a string", "expected a tuple"),
    (("x", "200", {}), "invalid status"),
    (("x", 1000, {}), "invalid status"),
    (("x", 200, {"x-bad": "a\r\nInjected: yes"}), "CR, LF or NUL"),
    (("x", 200, {"bad name": "v"}), "invalid response header name"),
    ((object(), 200, {}), "content of type object"),
    (("x", 200, ["not", "a dict"]), "headers of type list"),
])
def test_bad_handler_results_are_500(live_server, caplog, result, problem):
    live = live_server(lambda *a: result)
    caplog.set_level(logging.ERROR, logger="lilush_http")
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    f = sock.makefile("rb")
    status, headers, body = read_response(f)
    assert status == 500
    assert b"Injected" not in body and "injected" not in headers
    assert problem in caplog.text
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")  # the connection survives
    assert read_response(f)[0] == 500


def test_handler_answering_on_socket_itself(live_server):
    def proxy(method, query, args, headers, body, ctx):
        if query == "/raw":
            ctx["client"].sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Raw: 1\r\n\r\nraw")
            return None, None, None
        return "normal", 200, {}
    live = live_server(proxy)
    sock = live.connect()
    f = sock.makefile("rb")
    sock.sendall(b"GET /raw HTTP/1.1\r\nHost: h\r\n\r\n")
    status, headers, body = read_response(f)
    assert body == b"raw" and headers["x-raw"] == "1"
    sock.sendall(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")  # kept alive, nothing extra written
    assert read_response(f)[2] == b"normal"


def test_proxying_handler_reads_buffered_bytes_first(live_server):
    def tunnel(method, query, args, headers, body, ctx):
        client = ctx["client"]
        data = client.recv(5)  # bytes that arrived with the head must not be lost
        client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n" + data)
        return None, None, None
    live = live_server(tunnel)
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nHELLO")
    assert read_response(sock)[2] == b"HELLO"


def test_access_log_entry(live_server, caplog):
    live = live_server(log_headers=["user-agent", "referer", "x-real-ip"])
    caplog.set_level(logging.DEBUG, logger="lilush_http")
    requests.get(live.url + "/page?q=1", headers={"Referer": "http://r/", "User-Agent": "ua/1",
                                                   "X-Forwarded-For": "1.2.3.4", "X-Real-IP": "1.2.3.4"})
    deadline = time.monotonic() + 2  # the entry is written just after the response is sent
    while not [r for r in caplog.records if r.name == "lilush_http.access"] and time.monotonic() < deadline:
        time.sleep(0.01)
    records = [r for r in caplog.records if r.name == "lilush_http.access"]
    assert len(records) == 1 and records[0].levelname == "ACCESS"
    entry = json.loads(records[0].getMessage())
    assert entry["method"] == "GET" and entry["target"] == "/page?q=1" and entry["status"] == 200
    assert entry["vhost"] == "%s:%d" % (live.host, live.port)
    # 127.0.0.1 is a trusted proxy by default: its X-Real-IP gives the client address
    assert entry["client_ip"] == "1.2.3.4" and entry["size"] > 9 and entry["duration"] >= 0
    assert entry["forwarded_for"] == "1.2.3.4" and entry["forwarded_real_ip"] == "1.2.3.4"
    assert entry["user-agent"] == "ua/1" and entry["referer"] == "http://r/"


def test_log_level_info_silences_access_log(live_server, caplog):
    live = live_server(log_level="info")
    assert requests.get(live.url).status_code == 200
    assert not [r for r in caplog.records if r.name == "lilush_http.access"]


def test_bind_failure_is_returned(live_server):
    live = live_server()
    srv, err = server.new({"ip": "127.0.0.1", "port": live.port})
    assert srv is not None
    ok, err = srv.serve()
    assert ok is None
    assert err.startswith("failed to bind 127.0.0.1:%d: " % live.port)
    assert "in use" in err


def test_stop_lets_inflight_request_finish(live_server):
    def slow(method, query, *rest):
        gevent.sleep(0.5)
        return "done", 200, {}
    live = live_server(slow)
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    time.sleep(0.1)
    idle = live.connect()
    idle.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    time.sleep(0.1)
    started = time.monotonic()
    live.srv.stop(5)
    assert time.monotonic() - started < 3
    status, headers, body = read_response(sock)
    assert status == 200 and body == b"done" and headers["connection"] == "close"
    with pytest.raises(OSError):
        live.connect(timeout=1)


def test_bare_lf_line_endings_refused(live_server):
    live = live_server(echo)
    sock = live.connect()
    sock.sendall(b"GET /lf?x HTTP/1.1\nHost: h\nX-A: 1\n\n")
    status, headers, body = read_response(sock)
    assert (status, headers["connection"]) == (400, "close")
    assert b"Bare LF in request head" in body


def test_bare_cr_refused(live_server):
    live = live_server(echo)
    sock = live.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\rX-A: 1\r\n\r\n")
    assert read_response(sock)[0] == 400


def test_blank_lines_before_a_request_are_ignored(live_server):
    live = live_server()
    sock = live.connect()
    f = sock.makefile("rb")
    sock.sendall(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")  # arriving with the request
    assert read_response(f)[0] == 200
    sock.sendall(b"\r\n")  # arriving alone, before the next request
    time.sleep(0.05)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert read_response(f)[2] == b"Hi there!"


def test_every_connection_has_tcp_nodelay(live_server):
    """TCP_NODELAY comes from the listener (set once, inherited by accepted sockets):
    the first connection and the ones after it all have it, so a small response
    never waits for the client's delayed ACK."""
    def nodelay(method, query, args, headers, body, ctx):
        value = ctx["client"].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        return str(value), 200, {}

    live = live_server(nodelay)
    for _ in range(3):
        response = requests.get("http://%s:%d/" % (live.host, live.port), headers={"Connection": "close"},
                                timeout=5)
        assert response.text == "1"
