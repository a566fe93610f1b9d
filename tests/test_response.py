"""The response writer with plain values: no sockets."""

import pytest

from lilush_http.response import (CONTINUE, ResponseError, error_response, reason, render,
                                  status_line)


def split(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return lines[0], [line for line in lines[1:]], body


def test_status_line_and_reasons():
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(413) == b"HTTP/1.1 413 Content Too Large\r\n"
    assert status_line(299) == b"HTTP/1.1 299 Unknown\r\n"
    assert reason(404) == "Not Found"
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_default_headers_and_body():
    data, keep_alive = render(200, {}, "hi", True)
    first, lines, body = split(data)
    assert first == "HTTP/1.1 200 OK" and body == b"hi" and keep_alive is True
    names = [line.split(":")[0] for line in lines]
    assert names == ["Date", "Server", "Content-Type", "Content-Length"]
    assert "Content-Type: text/html" in lines and "Content-Length: 2" in lines


def test_connection_header_by_version():
    assert b"Connection: close\r\n\r\n" in render(200, None, "x", False)[0]
    assert b"Connection: keep-alive\r\n\r\n" in render(200, None, "x", True, http10=True)[0]
    assert b"Connection" not in render(200, None, "x", True)[0]


def test_handler_connection_close_wins():
    data, keep_alive = render(200, {"connection": "close"}, "x", True)
    assert keep_alive is False
    assert data.count(b"onnection") == 1 and b"Connection: close\r\n" in data


def test_handler_content_length_is_replaced_by_the_real_one():
    data, _ = render(200, {"content-length": "999"}, "abc", True)
    assert b"Content-Length: 3\r\n" in data and b"999" not in data


def test_head_keeps_length_of_the_get():
    data, _ = render(200, {}, "abcdef", True, head=True)
    first, lines, body = split(data)
    assert "Content-Length: 6" in lines and body == b""
    # A HEAD handler that returns no content but states the length keeps it.
    data, _ = render(200, {"content-length": "1234"}, None, True, head=True)
    assert b"Content-Length: 1234\r\n" in data and b"Content-Length: 0" not in data


@pytest.mark.parametrize("status", [100, 204, 304])
def test_no_body_statuses(status):
    data, _ = render(status, {}, "body!", True)
    assert not data.endswith(b"body!")
    assert b"Content-Type" not in data
    # The handler's Content-Type does not go out on a 304 either (RFC 9110 section 15.4.5).
    data, _ = render(status, {"content-type": "text/html", "ETag": '"1"'}, None, True)
    assert (b"content-type" in data.lower()) == (status != 304)
    assert b'ETag: "1"\r\n' in data
    if status != 304:
        assert b"Content-Length" not in data


def test_set_cookie_list_and_own_date_server():
    data, _ = render(200, {"set-cookie": ["a=1", "b=2"], "server": "mine"}, b"", True)
    assert data.count(b"set-cookie: ") == 2
    assert b"server: mine\r\n" in data and b"Server: lilush_http" not in data
    assert b"Date: " in data


@pytest.mark.parametrize("headers", [
    {"x": "a\r\nb"}, {"x": "a\nb"}, {"x": "a\x00b"}, {"x": ["ok", "bad\r\n"]},
    {"bad name": "v"}, {"bad:name": "v"}, {"": "v"}, {"x": 1.5}, {"x": None},
])
def test_unsafe_headers_refused(headers):
    with pytest.raises(ResponseError):
        render(200, headers, "x", True)


@pytest.mark.parametrize("status", ["200", 99, 600, True, None, 200.0])
def test_invalid_status_refused(status):
    with pytest.raises(ResponseError):
        render(status, {}, "x", True)


def test_error_response_closes():
    data = error_response(400, "Missing Host header")
    first, lines, body = split(data)
    assert first == "HTTP/1.1 400 Bad Request"
    assert "Connection: close" in lines
    assert body == b"400 Bad Request: Missing Host header\n"
    assert error_response(400, "x", head=True).endswith(b"\r\n\r\n")


def test_reused_header_block_gives_the_same_bytes():
    from lilush_http.compression import Policy
    from lilush_http.config import DEFAULTS
    policy = Policy(DEFAULTS["compression"])
    first, _ = render(200, {"content-type": "text/plain", "x-a": "1"}, b"hello", True, False, False, None, policy)
    again, _ = render(200, {"content-type": "text/plain", "x-a": "1"}, b"hello!", True, False, False, None, policy)
    assert first.replace(b"Content-Length: 5", b"Content-Length: 6") + b"!" == again
    # The same headers with a coding to apply do not take the reused block.
    big = b"x" * 10000
    packed, _ = render(200, {"content-type": "text/plain", "x-a": "1"}, big, True, False, False, "gzip", policy)
    assert b"Content-Encoding: gzip\r\n" in packed and len(packed) < 1000
    # Equal-looking values of other types are still checked.
    with pytest.raises(ResponseError):
        render(200.0, {"content-type": "text/plain", "x-a": "1"}, b"hello", True, False, False, None, policy)
    with pytest.raises(ResponseError):
        render(200, {"content-type": "text/plain", "x-a": True}, b"hello", True, False, False, None, policy)
    closed, keep = render(200, {"content-type": "text/plain", "x-a": "1"}, b"hello", False, False, False, None, policy)
    assert keep is False and closed.endswith(b"Connection: close\r\n\r\nhello")
    head, _ = render(200, {"content-type": "text/plain", "x-a": "1"}, b"hello", True, False, True, None, policy)
    assert head.endswith(b"Content-Length: 5\r\n\r\n")


def _h1_fields(data):
    head = data.partition(b"\r\n\r\n")[0].decode().split("\r\n")[1:]
    return [(n.lower(), v) for n, _, v in (line.partition(": ") for line in head)
            if n.lower() not in ("connection", "transfer-encoding", "keep-alive")]


NEUTRAL_CASES = [
    (200, {}, "hi", False, None),
    (200, {"Content-Type": "text/plain", "ETag": '"v1"', "Connection": "close"}, "x" * 5000, False, "gzip"),
    (200, {"content-type": "image/png", "keep-alive": "timeout=5"}, b"\x89PNG", False, "gzip"),
    (204, {"x-a": "1"}, None, False, None),
    (304, {"content-type": "text/html", "etag": '"e"'}, None, False, "gzip"),
    (200, {"content-type": "text/html"}, "y" * 6000, True, "gzip"),
    (404, {"set-cookie": ["a=1", "b=2"]}, "nope", False, None),
]


@pytest.mark.parametrize("status, headers, content, head, accept_encoding", NEUTRAL_CASES)
def test_neutral_response_makes_the_decisions_render_makes(status, headers, content, head, accept_encoding):
    """HTTP/2 gets the same fields HTTP/1.1 sends, minus HTTP/1.1 framing."""
    from lilush_http.compression import Policy
    from lilush_http.config import defaults
    from lilush_http.response import neutral_response
    policy = Policy(defaults()["compression"])
    data, _ = render(status, headers, content, True, False, head, accept_encoding, policy)
    got_status, fields, body = neutral_response(status, headers, content, head, accept_encoding, policy)
    assert got_status == status
    assert fields == _h1_fields(data)
    assert body == data.partition(b"\r\n\r\n")[2]
    assert not {"connection", "keep-alive", "transfer-encoding"} & {name for name, _ in fields}


def test_neutral_stream_head_leaves_framing_out():
    from lilush_http.compression import Policy
    from lilush_http.config import defaults
    from lilush_http.response import neutral_stream_head, render_stream_head
    policy = Policy(defaults()["compression"])
    head, _, chunked, coding, length = render_stream_head(200, {"content-type": "text/plain"}, True, False, False,
                                                          "gzip", policy, None)
    fields, coding2, length2 = neutral_stream_head(200, {"content-type": "text/plain"}, False, "gzip", policy, None)
    assert chunked and (coding, length) == (coding2, length2) == ("gzip", None)
    assert fields == _h1_fields(head)
    fields, coding, length = neutral_stream_head(206, {"content-length": "10", "content-type": "text/plain"},
                                                 False, "gzip", policy, 100)
    assert coding is None and length == 10 and ("content-length", "10") in fields
