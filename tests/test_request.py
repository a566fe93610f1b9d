"""Pure unit tests of the sans-I/O request parser (``lilush_http.request``).

Plain byte strings only: no sockets, no server. Incremental feeding replicates
what ``connection.py`` does: ``buf = buf[pos:] + new_data; pos = feed(buf)``.
"""

import pytest

from lilush_http.request import (
    ChunkedDecoder,
    HTTPError,
    Limits,
    Request,
    check_partial_head,
    find_head_end,
    parse_head,
)

LIMITS = Limits()


def head(*header_lines, line=b"GET / HTTP/1.1", host=True, eol=b"\r\n"):
    """A complete head: request line, Host (unless host=False), header lines, blank line."""
    lines = [line]
    if host:
        lines.append(b"Host: example.com")
    lines.extend(header_lines)
    return eol.join(lines) + eol + eol


def parse(*header_lines, limits=LIMITS, **kw):
    return parse_head(head(*header_lines, **kw), limits)


def refused(data, limits=LIMITS):
    """The HTTPError parse_head raises for ``data``."""
    with pytest.raises(HTTPError) as info:
        parse_head(data, limits)
    return info.value


def refused_status(*header_lines, limits=LIMITS, **kw):
    return refused(head(*header_lines, **kw), limits).status


# ---------------------------------------------------------------------------
# HTTPError, Limits


def test_http_error_carries_status_and_message():
    err = HTTPError(431, "Too many")
    assert isinstance(err, Exception)
    assert err.status == 431
    assert err.message == "Too many"
    assert str(err) == "Too many"


def test_limits_defaults_and_from_config():
    limits = Limits()
    assert (limits.line, limits.headers, limits.body) == (8192, 100, 5 * 1024 * 1024)
    cfg = {"request_line_limit": 10, "max_headers": 3, "max_body_size": 7}
    limits = Limits.from_config(cfg)
    assert (limits.line, limits.headers, limits.body) == (10, 3, 7)


# ---------------------------------------------------------------------------
# find_head_end


@pytest.mark.parametrize(
    "buf, expected",
    [
        # CRLF heads
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27),
        (b"GET / HTTP/1.1\r\n\r\n", 18),
        # bare-LF heads are framed too, so that parse_head can refuse them with a 400
        # instead of waiting for a CRLF blank line that never comes
        (b"GET / HTTP/1.1\nHost: a\n\n", 24),
        (b"GET / HTTP/1.1\n\n", 16),
        # mixed line endings
        (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 26),
        (b"GET / HTTP/1.1\r\nHost: a\n\r\n", 26),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\n", 26),
        # bytes after the head (a body or a pipelined request) are not included
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nhello", 27),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n", 27),
        (b"A\n\nB\r\n\r\n", 3),
        (b"A\r\n\r\nB\n\n", 5),
    ],
)
def test_find_head_end(buf, expected):
    assert find_head_end(buf) == expected
    assert buf[:expected].endswith((b"\n\n", b"\n\r\n"))


@pytest.mark.parametrize(
    "buf",
    [
        b"",
        b"GET / HTTP/1.1",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r",
        b"GET / HTTP/1.1\nHost: a\n",
        b"GET / HTTP/1.1\r\nHost: a\r\r\n",  # CR CR LF is not a blank line
        b"GET / HTTP/1.1\r\nHost: a\n\r",
    ],
)
def test_find_head_end_incomplete(buf):
    assert find_head_end(buf) == -1


def test_find_head_end_start_offset():
    buf = b"A\n\nB\n\nC\r\n\r\n"
    assert find_head_end(buf) == 3
    assert find_head_end(buf, 1) == 3
    assert find_head_end(buf, 2) == 6  # the first blank line is skipped
    assert find_head_end(buf, 5) == 11
    assert find_head_end(buf, 10) == -1


def test_find_head_end_start_as_used_by_connection():
    """The connection searches from len(old) - 3, so a terminator split across reads is found."""
    full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"
    end = find_head_end(full)
    for cut in range(1, end):
        old = full[:cut]
        assert find_head_end(old) == -1
        assert find_head_end(full, max(0, len(old) - 3)) == end


# ---------------------------------------------------------------------------
# parse_head: request line, target split


@pytest.mark.parametrize(
    "line, method, target, version",
    [
        (b"GET / HTTP/1.1", "GET", "/", "HTTP/1.1"),
        (b"POST /submit HTTP/1.0", "POST", "/submit", "HTTP/1.0"),
        (b"OPTIONS * HTTP/1.1", "OPTIONS", "*", "HTTP/1.1"),
        (b"PURGE /x?y=1 HTTP/1.1", "PURGE", "/x?y=1", "HTTP/1.1"),
        (b"M-SEARCH /a HTTP/1.1", "M-SEARCH", "/a", "HTTP/1.1"),
        (b"get / HTTP/1.1", "get", "/", "HTTP/1.1"),  # methods are case-sensitive tokens
        (b"CONNECT example.com:443 HTTP/1.1", "CONNECT", "example.com:443", "HTTP/1.1"),
        (b"GET http://example.com/p?q HTTP/1.1", "GET", "http://example.com/p?q", "HTTP/1.1"),
        (b"GET / HTTP/1.0", "GET", "/", "HTTP/1.0"),
    ],
)
def test_request_line(line, method, target, version):
    request = parse(line=line)
    assert isinstance(request, Request)
    assert request.method == method
    assert request.target == target
    assert request.version == version


@pytest.mark.parametrize(
    "target, query, args",
    [
        ("/", "/", ""),
        ("/path", "/path", ""),
        ("/path?a=1&b=2", "/path", "a=1&b=2"),
        ("/p?", "/p", ""),
        ("/p?a=1?b=2", "/p", "a=1?b=2"),  # split at the first '?' only
        ("/p??", "/p", "?"),
        ("/a%20b?x=%3F", "/a%20b", "x=%3F"),  # no decoding
        ("/a/../b//c", "/a/../b//c", ""),  # nor normalising
    ],
)
def test_query_and_args(target, query, args):
    request = parse(line=b"GET " + target.encode() + b" HTTP/1.1")
    assert request.target == target
    assert request.query == query
    assert request.args == args


@pytest.mark.parametrize(
    "data",
    [
        head(b"Accept: */*", eol=b"\n"),  # bare LF everywhere
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",  # after the request line
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",  # after a header line
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",  # as the blank line
        b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # before the request line
        # the desync of issue 10: a front end reading the LF as part of the Dummy
        # value sees one request without a body, this parser would have seen two
        b"GET / HTTP/1.1\r\nHost: localhost\r\nDummy: x\nContent-Length: 23\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: localhost\r\nx:x\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX\n: 1\r\n\r\n",  # inside a name
        b"GET /\n HTTP/1.1\r\nHost: a\r\n\r\n",  # inside the target
        b"GET / HTTP/1.1\n\r\nHost: a\r\n\r\n",
    ],
)
def test_bare_lf_in_head_is_400(data):
    """RFC 9112 section 2.2 lets a recipient accept a bare LF; it is refused here,
    as llhttp does by default, because RFC 9110 section 5.5 lets a front end
    read it as part of a field value and frame the request differently."""
    assert find_head_end(data) > 0  # framed, so refused at once rather than left waiting
    err = refused(data[:find_head_end(data)])
    assert err.status == 400
    assert err.message == "Bare LF in request head"


@pytest.mark.parametrize(
    "target, query, args, host",
    [
        ("http://example.com/foo?q=1", "/foo", "q=1", "example.com"),
        ("https://example.com/foo?q=1", "/foo", "q=1", "example.com"),
        ("http://[::1]:8080/a/b", "/a/b", "", "[::1]:8080"),
        ("https://[::1]:8080?x", "/", "x", "[::1]:8080"),
        ("http://example.com", "/", "", "example.com"),  # empty path: '/'
        ("HTTP://Example.COM:80/p", "/p", "", "Example.COM:80"),  # the scheme is case-insensitive
        ("http://127.0.0.1:8080/p?a=1?b", "/p", "a=1?b", "127.0.0.1:8080"),
        ("http://xn--caf-dma.example/", "/", "", "xn--caf-dma.example"),
    ],
)
def test_absolute_form_target(target, query, args, host):
    """RFC 9112 section 3.2.2: a server accepts absolute-form; query and args come
    from its path, and its authority replaces the Host header."""
    request = parse(line=b"GET " + target.encode() + b" HTTP/1.1")
    assert (request.target, request.query, request.args) == (target, query, args)
    assert request.headers["host"] == host
    request = parse(host=False, line=b"GET " + target.encode() + b" HTTP/1.0")
    assert request.headers["host"] == host


@pytest.mark.parametrize(
    "target",
    [
        b"http://user:pass@example.com/",  # userinfo
        b"http://user@example.com/",
        b"http://@example.com/",
        b"http:///path",  # no host
        b"http://:80/",
        b"http://exa mple.com/",
        b"http://example.com:8x/",  # port not a number
        b"http://[::1/",  # unclosed IP-literal
        b"http://[::1]x/",
        b"http://[]/",
        b"ftp://example.com/",  # only http and https
        b"s://]ufd/:",
        b"http:/example.com/",
        b"http:example.com",
    ],
)
def test_bad_absolute_form_is_400(target):
    err = refused(head(line=b"PUT " + target + b" HTTP/1.1"))
    assert err.status == 400


@pytest.mark.parametrize(
    "line, query",
    [
        (b"OPTIONS * HTTP/1.1", "*"),  # asterisk-form, only with OPTIONS
        (b"CONNECT example.com:443 HTTP/1.1", "example.com:443"),  # authority-form, only with CONNECT
        (b"CONNECT [::1]:8443 HTTP/1.1", "[::1]:8443"),
        (b"CONNECT 10.0.0.1:80 HTTP/1.1", "10.0.0.1:80"),
        (b"GET //example.com/ HTTP/1.1", "//example.com/"),  # origin-form: starts with '/'
    ],
)
def test_request_target_forms(line, query):
    request = parse(line=line)
    assert request.query == query and request.headers["host"] == "example.com"


@pytest.mark.parametrize(
    "line",
    [
        b"GET * HTTP/1.1",  # asterisk-form without OPTIONS
        b"POST * HTTP/1.1",
        b"OPTIONS *x HTTP/1.1",
        b"GET example.com:443 HTTP/1.1",  # authority-form without CONNECT
        b"GET foo/bar HTTP/1.1",  # neither origin-form nor absolute
        b"GET ?a=1 HTTP/1.1",
        b"GET a HTTP/1.1",
        b"PUT s://]ufd/: HTTP/1.1",
        b"CONNECT / HTTP/1.1",  # CONNECT needs authority-form
        b"CONNECT example.com HTTP/1.1",  # with a port
        b"CONNECT example.com: HTTP/1.1",
        b"CONNECT http://example.com:443/ HTTP/1.1",
        b"CONNECT user@example.com:443 HTTP/1.1",
        b"CONNECT * HTTP/1.1",
        b"GET /a#b HTTP/1.1",  # a fragment is never sent
        b"GET /# HTTP/1.1",
        b"GET http://example.com/#top HTTP/1.1",
        b"OPTIONS *# HTTP/1.1",
    ],
)
def test_bad_request_target_form_is_400(line):
    assert refused(head(line=line)).status == 400


# ---------------------------------------------------------------------------
# parse_head: headers


def test_header_names_lower_cased_values_stripped():
    request = parse(
        b"Content-TYPE: text/plain",
        b"X-Spaces:    padded value   ",
        b"X-Tabs:\t\ttabbed\t",
        b"X-Mixed: \t a \t b \t ",
        b"X-Empty:",
        b"X-Empty-Spaces:   ",
        b"X-Colon: a:b:c",
        line=b"GET / HTTP/1.1",
    )
    assert request.headers == {
        "host": "example.com",
        "content-type": "text/plain",
        "x-spaces": "padded value",
        "x-tabs": "tabbed",
        "x-mixed": "a \t b",
        "x-empty": "",
        "x-empty-spaces": "",
        "x-colon": "a:b:c",
    }


def test_header_name_with_every_token_char():
    name = b"!#$%&'*+-.^_`|~09azAZ"
    request = parse(name + b": v")
    assert request.headers[name.decode().lower()] == "v"


def test_repeated_headers_joined():
    request = parse(b"Accept: text/html", b"accept: application/json", b"ACCEPT:  */* ")
    assert request.headers["accept"] == "text/html, application/json, */*"


def test_repeated_headers_not_adjacent():
    request = parse(b"X-A: 1", b"X-B: 2", b"X-A: 3")
    assert request.headers["x-a"] == "1, 3"
    assert request.headers["x-b"] == "2"


def test_tab_inside_value_is_fine():
    request = parse(b"X-Tab: a\tb")
    assert request.headers["x-tab"] == "a\tb"


def test_host_value_kept():
    request = parse(host=False, *[b"HOST: Example.COM:8080"])
    assert request.headers["host"] == "Example.COM:8080"


@pytest.mark.parametrize(
    "data, message_part",
    [
        (head(b"Host: other.com"), "Host"),
        (head(b"host: example.com"), "Host"),  # identical values are still refused
        (head(host=False), "Host"),
        (head(b"X-Host: example.com", host=False), "Host"),
    ],
)
def test_host_rules(data, message_part):
    err = refused(data)
    assert err.status == 400
    assert message_part in err.message


def test_http10_without_host_is_accepted():
    """RFC 9112 section 3.2 requires Host only of HTTP/1.1 (HAProxy's default health
    check is an HTTP/1.0 request without one): the handler sees no ``host``."""
    request = parse(host=False, line=b"GET /health HTTP/1.0")
    assert request.headers == {}
    assert (request.query, request.version, request.keep_alive) == ("/health", "HTTP/1.0", False)
    request = parse(b"Connection: keep-alive", host=False, line=b"OPTIONS * HTTP/1.0")
    assert "host" not in request.headers and request.keep_alive
    assert refused(head(host=False)).message == "Missing Host header"  # still required in 1.1
    # RFC 9112 section 3.2: an HTTP/1.1 request without Host is a 400, also when its
    # absolute-form target names a host
    assert refused(head(host=False, line=b"GET http://example.com/ HTTP/1.1")).message == "Missing Host header"


@pytest.mark.parametrize(
    "data",
    [
        head(b"X-\xe9: v"),  # in a name
        head(b"\xc3\xa9: v"),
        head(line=b"GET /caf\xc3\xa9 HTTP/1.1"),  # in the target
        head(line=b"GET /\xff HTTP/1.1"),
        head(line=b"G\x80T / HTTP/1.1"),  # in the method
        head(line=b"GET / HTTP/1.1\x80"),  # in the version
        b"GET / HTTP/1.1\r\nHost: a\r\n\x80\r\n\r\n",  # a line that is only obs-text
        b"GET / HTTP/1.1\r\nHost: a\r\n\x80X: 1\r\n\r\n",
    ],
)
def test_non_ascii_outside_field_values_is_400(data):
    assert refused(data).status == 400


@pytest.mark.parametrize(
    "raw, value",
    [
        (b"greeting=caf\xc3\xa9", "greeting=caf\u00e9"),  # document.cookie = "greeting=caf\u00e9"
        (b"\xe2\x9c\x93 done", "\u2713 done"),
        (b"caf\xe9", "caf\udce9"),  # latin-1, not UTF-8: kept as a surrogate
        (b"\xff\xfe", "\udcff\udcfe"),
        (b"\xed\xa0\x80", "\udced\udca0\udc80"),  # an encoded surrogate is not valid UTF-8
        (b"a\xc2\xa0b", "a\u00a0b"),  # NBSP is obs-text, not whitespace to strip
        (b"\xc2\x85", "\u0085"),  # U+0085 (NEL) is only bytes >= 0x80 on the wire
        (b" \t\xc3\xa9\t ", "\u00e9"),
    ],
)
def test_obs_text_in_value_is_utf8_with_surrogateescape(raw, value):
    """RFC 9110 section 5.5: bytes >= 0x80 (obs-text) may appear in field values.
    They reach a Lilush-style handler as str decoded from UTF-8, invalid bytes kept
    losslessly as surrogates, so ``value.encode("utf-8", "surrogateescape")`` gives
    back exactly what the client sent."""
    request = parse(b"Cookie: " + raw, b"X-Next: 1")
    assert request.headers["cookie"] == value
    assert request.headers["x-next"] == "1"
    assert value.encode("utf-8", "surrogateescape") == raw.strip(b" \t")


def test_obs_text_head_keeps_every_other_rule():
    assert refused_status(b"X-A: caf\xc3\xa9\x01") == 400  # a control byte beside obs-text
    assert refused_status(b"X-A: \xff\x7f") == 400
    assert refused_status(b"X-A: \xff", b"X-B: a\x00b") == 400
    assert refused(head(b"X-A: \xff", b"Host: again")).message == "Duplicate Host header"
    assert refused(head(b"X-A: \xff", eol=b"\n")).message == "Bare LF in request head"
    assert refused(head(b"X-A: \xff\rb")).message == "Bare CR in request head"


def test_obs_text_line_limits_count_bytes():
    """Three bytes of UTF-8 are one character, but the limit is on bytes."""
    limits = Limits(line=30, headers=10, body=100)
    line = b"X-Long: " + b"\xe2\x9c\x93" * 7 + b"v"  # 30 bytes, 16 characters
    assert parse(line, limits=limits).headers["x-long"] == "\u2713" * 7 + "v"
    assert refused(head(line + b"v"), limits).status == 431
    assert refused(head(line=b"GET /" + b"a" * 30 + b" HTTP/1.1", *[b"X: \xff"]), limits).status == 414


@pytest.mark.parametrize(
    "data",
    [
        head(b"X-A: a\x00b"),
        head(b"X-A\x00: v"),
        head(line=b"GET /\x00 HTTP/1.1"),
        head(line=b"GET\x00/ HTTP/1.1"),
    ],
)
def test_nul_is_400(data):
    assert refused(data).status == 400


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\rHost: a\r\n\r\n",  # CR as a line ending
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",  # CR inside a value
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: ab\r\r\n\r\n",  # CR CR LF
        b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\nX-A: a\rb\n\n",
    ],
)
def test_bare_cr_is_400(data):
    assert find_head_end(data) == len(data)
    assert refused(data).status == 400


@pytest.mark.parametrize(
    "line",
    [
        b"GET / HTTP/2.0",
        b"GET / HTTP/1.2",
        b"GET / HTTP/0.9",
        b"GET / http/1.1",
        b"GET / HTTP/1.1 ",  # trailing space
        b"GET / HTTP/1",
        b"GET / HTTP/11",
        b"GET /",  # missing version (HTTP/0.9 style)
        b"GET",
        b"",
        b"GET  / HTTP/1.1",  # extra spaces
        b" GET / HTTP/1.1",
        b"GET /  HTTP/1.1",
        b"GET / a HTTP/1.1",  # space in target
        b"GET\t/\tHTTP/1.1",  # tabs are not SP
        b"GET / FOO/1.1",
    ],
)
def test_unsupported_protocol(line):
    err = refused(head(line=line))
    assert err.status == 400
    assert err.message == "Unsupported protocol"


@pytest.mark.parametrize(
    "line",
    [
        b"G(T / HTTP/1.1",
        b"GE\"T / HTTP/1.1",
        b"GET: / HTTP/1.1",
        b"G,ET / HTTP/1.1",
        b"{GET} / HTTP/1.1",
        b"GET\x01 / HTTP/1.1",
        b"GET@ / HTTP/1.1",
        b"/ / HTTP/1.1",
        b" / HTTP/1.1",  # empty method
    ],
)
def test_invalid_method_is_400(line):
    err = refused(head(line=line))
    assert err.status == 400


@pytest.mark.parametrize(
    "line",
    [
        b"GET /a\x7fb HTTP/1.1",  # DEL in the target
        b"GET /a\x01 HTTP/1.1",
        b"GET  HTTP/1.1",  # empty target: three parts, middle one empty
    ],
)
def test_invalid_target_is_400(line):
    assert refused(head(line=line)).status == 400


@pytest.mark.parametrize(
    "header_line",
    [
        b"NoColonHere",
        b"X-A value",
        b": value",  # empty name
        b":",
        b"X-A : v",  # space before the colon
        b"X-A\t: v",
        b" X-A: v",  # obs-fold-like
        b" continuation",  # obs-fold continuation line
        b"\tcontinuation",
        b"\tX-A: v",
        b"X A: v",  # space in the name
        b"X(A): v",  # invalid token chars
        b"X-A\": v",
        b"X/A: v",
        b"X@A: v",
        b"X[A]: v",
        b"X,A: v",
        b"X=A: v",
        b"X{A}: v",
        b"X\x7fA: v",
        b"X\x01A: v",
    ],
)
def test_malformed_header_line_is_400(header_line):
    assert refused_status(b"X-Ok: 1", header_line) == 400


def test_obs_fold_after_valid_header_is_400():
    data = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n"
    assert refused(data).status == 400


@pytest.mark.parametrize(
    "value",
    [b"a\x01b", b"a\x1fb", b"a\x7fb", b"a\x0bb", b"a\x0cb", b"\x1b[31m", b"a\x08"],
)
def test_control_char_in_value_is_400(value):
    assert refused_status(b"X-A: " + value) == 400


# ---------------------------------------------------------------------------
# parse_head: limits


def test_request_line_at_limit_ok_over_limit_414():
    limits = Limits(line=30, headers=10, body=100)
    line = b"GET /" + b"a" * (30 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 30
    assert parse(line=line, limits=limits).target.startswith("/aaa")
    longer = line.replace(b"/a", b"/aa")
    assert len(longer) == 31
    err = refused(head(line=longer), limits)
    assert (err.status, err.message) == (414, "Request line too long")


def test_header_line_at_limit_ok_over_limit_431():
    limits = Limits(line=30, headers=10, body=100)
    line = b"X-Long: " + b"v" * 22
    assert len(line) == 30  # the limit counts the line without its CRLF
    assert parse(line, limits=limits).headers["x-long"] == "v" * 22
    err = refused(head(line + b"v"), limits)
    assert (err.status, err.message) == (431, "Header line too long")


def test_header_count_at_limit_ok_over_limit_431():
    limits = Limits(line=100, headers=5, body=100)
    extra = [b"X-%d: v" % i for i in range(4)]  # plus Host: 5 header lines
    request = parse(*extra, limits=limits)
    assert len(request.headers) == 5
    err = refused(head(*extra, b"X-9: v"), limits)
    assert err.status == 431


def test_repeated_headers_count_towards_the_limit():
    limits = Limits(line=100, headers=3, body=100)
    assert parse(b"Accept: a", b"Accept: b", limits=limits).headers["accept"] == "a, b"
    assert refused(head(b"Accept: a", b"Accept: b", b"Accept: c"), limits).status == 431


# ---------------------------------------------------------------------------
# parse_head: body framing


def test_no_body():
    request = parse()
    assert request.content_length is None
    assert request.chunked is False
    assert request.has_body is False


@pytest.mark.parametrize(
    "header_lines, length",
    [
        ([b"Content-Length: 5"], 5),
        ([b"Content-Length: 0"], 0),
        ([b"content-length:  42 "], 42),
        ([b"Content-Length: 00005"], 5),
        ([b"Content-Length: 100"], 100),  # exactly the body limit
        ([b"Content-Length: 5", b"Content-Length: 5"], 5),  # identical repeats
        ([b"Content-Length: 5, 5"], 5),
        ([b"Content-Length: 5,5"], 5),
    ],
)
def test_content_length(header_lines, length):
    request = parse(*header_lines, line=b"POST / HTTP/1.1", limits=Limits(body=100))
    assert request.content_length == length
    # RFC 9110 section 8.6: a repeated identical value is one value for the handler too
    assert "," not in request.headers["content-length"]
    assert int(request.headers["content-length"]) == length
    assert request.chunked is False
    assert request.has_body is True


@pytest.mark.parametrize(
    "value",
    [b"101", b"1000000", b"9" * 18, b"1" * 19, b"9" * 30],
)
def test_content_length_over_limit_is_413(value):
    err = refused(head(b"Content-Length: " + value, line=b"POST / HTTP/1.1"), Limits(body=100))
    assert err.status == 413


@pytest.mark.parametrize(
    "value",
    [b"+5", b"-1", b"0x10", b"", b"5 5", b"5.0", b"1e3", b"five", b"5;", b"\t", b"5,", b",5"],
)
def test_content_length_not_a_number_is_400(value):
    assert refused_status(b"Content-Length: " + value, line=b"POST / HTTP/1.1") == 400


@pytest.mark.parametrize(
    "header_lines",
    [
        [b"Content-Length: 5", b"Content-Length: 6"],
        [b"Content-Length: 5, 6"],
        [b"Content-Length: 5", b"Content-Length: 5, 6"],
        [b"Content-Length: 0", b"Content-Length: 00"],  # same number, different text
    ],
)
def test_conflicting_content_length_is_400(header_lines):
    assert refused_status(*header_lines, line=b"POST / HTTP/1.1") == 400


@pytest.mark.parametrize(
    "header_lines",
    [
        [b"Content-Length: 5", b"Transfer-Encoding: chunked"],
        [b"Transfer-Encoding: chunked", b"Content-Length: 5"],
        [b"Transfer-Encoding: chunked", b"Content-Length: 0"],
        [b"Transfer-Encoding: gzip", b"Content-Length: 5"],
    ],
)
def test_content_length_and_transfer_encoding_is_400(header_lines):
    assert refused_status(*header_lines, line=b"POST / HTTP/1.1") == 400


@pytest.mark.parametrize("value", [b"chunked", b" chunked ", b"chunked\t"])
def test_transfer_encoding_chunked(value):
    request = parse(b"Transfer-Encoding: " + value, line=b"POST / HTTP/1.1")
    assert request.chunked is True
    assert request.content_length is None
    assert request.has_body is True


@pytest.mark.parametrize(
    "header_lines",
    [
        [b"Transfer-Encoding: gzip"],
        [b"Transfer-Encoding: chunked, identity"],
        [b"Transfer-Encoding: identity, chunked"],
        [b"Transfer-Encoding: gzip, chunked"],
        [b"Transfer-Encoding: xchunked"],
        [b"Transfer-Encoding: chunkedx"],
        [b"Transfer-Encoding: Chunked"],
        [b"Transfer-Encoding: CHUNKED"],
        [b"Transfer-Encoding: identity"],
        [b"Transfer-Encoding:"],
        [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
        [b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"],
    ],
)
def test_other_transfer_encoding_is_501(header_lines):
    assert refused_status(*header_lines, line=b"POST / HTTP/1.1") == 501


@pytest.mark.parametrize("value", [b"chunked", b"gzip"])
def test_transfer_encoding_in_http10_is_400(value):
    assert refused_status(b"Transfer-Encoding: " + value, line=b"POST / HTTP/1.0") == 400


def test_http10_content_length_ok():
    request = parse(b"Content-Length: 3", line=b"POST / HTTP/1.0")
    assert request.content_length == 3
    assert request.chunked is False


# ---------------------------------------------------------------------------
# parse_head: keep-alive


@pytest.mark.parametrize(
    "version, header_lines, keep_alive",
    [
        (b"HTTP/1.1", [], True),
        (b"HTTP/1.1", [b"Connection: close"], False),
        (b"HTTP/1.1", [b"Connection: Close"], False),
        (b"HTTP/1.1", [b"Connection: foo, Close"], False),
        (b"HTTP/1.1", [b"Connection: close ,foo"], False),
        (b"HTTP/1.1", [b"Connection: foo", b"Connection: close"], False),
        (b"HTTP/1.1", [b"Connection: keep-alive"], True),
        (b"HTTP/1.1", [b"Connection: upgrade"], True),
        (b"HTTP/1.1", [b"Connection: closed"], True),  # a token, not a substring
        (b"HTTP/1.1", [b"Connection:"], True),
        (b"HTTP/1.0", [], False),
        (b"HTTP/1.0", [b"Connection: keep-alive"], True),
        (b"HTTP/1.0", [b"Connection: Keep-Alive"], True),
        (b"HTTP/1.0", [b"Connection: foo, keep-alive"], True),
        (b"HTTP/1.0", [b"Connection: close"], False),
        (b"HTTP/1.0", [b"Connection: keep-alived"], False),
    ],
)
def test_keep_alive(version, header_lines, keep_alive):
    request = parse(*header_lines, line=b"GET / " + version)
    assert request.keep_alive is keep_alive


# ---------------------------------------------------------------------------
# parse_head: Expect


@pytest.mark.parametrize(
    "version, header_lines, expect_continue",
    [
        (b"HTTP/1.1", [b"Expect: 100-continue", b"Content-Length: 5"], True),
        (b"HTTP/1.1", [b"Expect: 100-Continue", b"Content-Length: 5"], True),
        (b"HTTP/1.1", [b"Expect: 100-continue", b"Transfer-Encoding: chunked"], True),
        (b"HTTP/1.1", [b"Expect: 100-continue"], False),  # no body
        (b"HTTP/1.1", [b"Content-Length: 5"], False),  # no Expect
        (b"HTTP/1.0", [b"Expect: 100-continue", b"Content-Length: 5"], False),
        (b"HTTP/1.0", [b"Expect: 100-continue"], False),
    ],
)
def test_expect_continue(version, header_lines, expect_continue):
    request = parse(*header_lines, line=b"POST / " + version)
    assert request.expect_continue is expect_continue


@pytest.mark.parametrize(
    "value",
    [b"200-ok", b"100-continue-x", b"", b"100-continue, foo", b"continue"],
)
def test_other_expectation_is_417(value):
    assert refused_status(b"Expect: " + value, b"Content-Length: 5", line=b"POST / HTTP/1.1") == 417


def test_repeated_expect_100_continue_is_417():
    data = head(b"Expect: 100-continue", b"Expect: 100-continue", b"Content-Length: 1")
    assert refused(data).status == 417


# ---------------------------------------------------------------------------
# check_partial_head

SMALL = Limits(line=20, headers=3, body=100)


def partial_verdict(buf, limits=SMALL, start=0, lines=0):
    """(start, lines) on success, or the HTTPError status."""
    try:
        return check_partial_head(buf, limits, start, lines)
    except HTTPError as err:
        return err.status


def incremental_verdict(pieces, limits=SMALL):
    """Call check_partial_head on a growing buffer, as the connection does."""
    buf = b""
    start = lines = 0
    for piece in pieces:
        buf += piece
        try:
            start, lines = check_partial_head(buf, limits, start, lines)
        except HTTPError as err:
            return err.status
    return start, lines


def test_partial_head_ok():
    assert check_partial_head(b"", SMALL) == (0, 0)
    assert check_partial_head(b"GET / HTTP/1.1", SMALL) == (0, 0)
    assert check_partial_head(b"GET / HTTP/1.1\r\n", SMALL) == (16, 1)
    assert check_partial_head(b"GET / HTTP/1.1\r\nHost: a\r\nX-", SMALL) == (25, 2)


def test_partial_head_trailing_line_over_limit_is_refused_early():
    # no newline yet: the line is refused as soon as it is longer than the limit
    # (plus one byte for the CR of a CRLF): 414 for the request line, 431 after it
    assert partial_verdict(b"G" * 21) == (0, 0)
    assert partial_verdict(b"G" * 22) == 414
    assert partial_verdict(b"G" * 10000) == 414
    prefix = b"GET / HTTP/1.1\r\n"
    assert partial_verdict(prefix + b"X" * 21) == (16, 1)
    assert partial_verdict(prefix + b"X" * 22) == 431


def test_partial_head_complete_line_over_limit():
    assert partial_verdict(b"X" * 20 + b"\r\n") == (22, 1)
    assert partial_verdict(b"X" * 21 + b"\r\n") == 414
    assert partial_verdict(b"GET / HTTP/1.1\r\n" + b"X" * 25 + b"\r\nY") == 431


def test_partial_head_too_many_lines_is_431():
    # the request line plus `headers` header lines is fine
    ok = b"GET / HTTP/1.1\r\n" + b"A: 1\r\n" * 3
    assert partial_verdict(ok) == (len(ok), 4)
    assert partial_verdict(ok + b"A: 1") == (len(ok), 4)
    assert partial_verdict(ok + b"A: 1\r\n") == 431


def test_partial_head_resumes_from_start_and_lines():
    buf = b"GET / HTTP/1.1\r\nA: 1\r\n"
    start, lines = check_partial_head(buf, SMALL)
    assert (start, lines) == (len(buf), 2)
    buf += b"B: 2\r\nC: 3\r\n"
    start, lines = check_partial_head(buf, SMALL, start, lines)
    assert (start, lines) == (len(buf), 4)
    with pytest.raises(HTTPError) as info:
        check_partial_head(buf + b"D: 4\r\n", SMALL, start, lines)
    assert info.value.status == 431


PARTIAL_SAMPLES = [
    b"GET / HTTP/1.1\r\nHost: a\r\nX-B: 2\r\nX-C",  # fine
    b"GET / HTTP/1.1\r\nHost: a\r\nX-B: 2\r\nX-C: 3\r\n",  # fine, at the line count limit
    b"GET / HTTP/1.1\r\nHost: a\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\nX",  # 431
    b"GET / HTTP/1.1\r\nX-Long: 0123456789abcdef\r\n",  # 431, complete line
    b"GET / HTTP/1.1\r\nX-Long: 0123456789abcdef",  # 431, trailing line
    b"GET /0123456789abcdefghij HTTP/1.1\r\n",  # 414, request line
    b"GET /0123456789abcdefghij",  # 414, unfinished request line
    b"GET / HTTP/1.1\r\nX-A: 01234567890123\r\n",  # exactly limit + CR: fine
    b"GET / HTTP/1.1\r\nX-A: 01234567890123\r",
]


@pytest.mark.parametrize("buf", PARTIAL_SAMPLES)
def test_partial_head_incremental_same_verdict(buf):
    whole = partial_verdict(buf)
    assert incremental_verdict([buf[i:i + 1] for i in range(len(buf))]) == whole
    for cut in range(len(buf) + 1):
        assert incremental_verdict([buf[:cut], buf[cut:]]) == whole, cut


def test_partial_head_samples_cover_each_verdict():
    verdicts = [partial_verdict(buf) for buf in PARTIAL_SAMPLES]
    assert 414 in verdicts and 431 in verdicts and 413 not in verdicts
    assert any(isinstance(v, tuple) for v in verdicts)


# ---------------------------------------------------------------------------
# ChunkedDecoder

CHUNK_LIMITS = Limits(line=40, headers=3, body=100)


def decode(data, limits=CHUNK_LIMITS, pos=0):
    decoder = ChunkedDecoder(limits)
    pos = decoder.feed(data, pos)
    return decoder, pos


def decode_pieces(pieces, limits=CHUNK_LIMITS):
    """Feed pieces exactly as the connection does; (decoder, consumed, leftover).

    ``consumed`` is the number of bytes of the whole stream the decoder used;
    ``leftover`` is what stays in the connection buffer (the next request).
    """
    decoder = ChunkedDecoder(limits)
    pieces = list(pieces)
    buf = b""
    pos = 0
    consumed = 0
    while pieces and not decoder.done:
        consumed += pos
        buf = buf[pos:] + pieces.pop(0)
        pos = decoder.feed(buf)
        assert 0 <= pos <= len(buf)
    consumed += pos
    return decoder, consumed, buf[pos:] + b"".join(pieces)


def chunk_error(data, limits=CHUNK_LIMITS):
    with pytest.raises(HTTPError) as info:
        decode(data, limits)
    return info.value.status


def pieces_error(pieces, limits=CHUNK_LIMITS):
    with pytest.raises(HTTPError) as info:
        decode_pieces(pieces, limits)
    return info.value.status


NEXT = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"

CHUNKED_OK = [
    # (encoded stream, decoded body)
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"0\r\n\r\n", b""),
    (b"1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n", b"abcdef"),
    (b"a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n", b"0123456789abcdefghij"),
    (b"1f\r\n" + b"x" * 31 + b"\r\n1F\r\n" + b"y" * 31 + b"\r\n0\r\n\r\n", b"x" * 31 + b"y" * 31),
    (b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),  # leading zeros
    (b"5;name=value\r\nhello\r\n0;last\r\n\r\n", b"hello"),  # extensions ignored
    (b"5;a=1;b=\"x;y\"\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5 ;ext\r\nhello\r\n0\t;ext\r\n\r\n", b"hello"),  # BWS before ';'
    (b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n", b"hello"),  # trailers dropped
    (b"3\r\n\r\n\n\r\n0\r\n\r\n", b"\r\n\n"),  # CR/LF inside chunk data are data
    (b"2\r\n0\r\r\n0\r\n\r\n", b"0\r"),
    (b"64\r\n" + b"z" * 100 + b"\r\n0\r\n\r\n", b"z" * 100),  # exactly the body limit
    (b"32\r\n" + b"z" * 50 + b"\r\n32\r\n" + b"w" * 50 + b"\r\n0\r\n\r\n", b"z" * 50 + b"w" * 50),
    (b"5;" + b"e" * 38 + b"\r\nhello\r\n0\r\n\r\n", b"hello"),  # size line exactly the limit
    (b"5\r\nhello\r\n0\r\nX-T: " + b"t" * 35 + b"\r\n\r\n", b"hello"),  # trailer at the limit
    (b"5\r\nhello\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", b"hello"),  # trailer count at the limit
    (b"5\r\nhello\r\n0\r\nX-T: caf\xc3\xa9 \xff\r\n\r\n", b"hello"),  # obs-text in a trailer value
]


@pytest.mark.parametrize("data, body", CHUNKED_OK)
def test_chunked_ok(data, body):
    decoder, pos = decode(data)
    assert decoder.done
    assert decoder.body == body
    assert pos == len(data)


@pytest.mark.parametrize("data, body", CHUNKED_OK)
def test_chunked_leaves_pipelined_bytes(data, body):
    decoder, pos = decode(data + NEXT)
    assert decoder.done
    assert decoder.body == body
    assert pos == len(data)
    assert (data + NEXT)[pos:] == NEXT


@pytest.mark.parametrize("data, body", CHUNKED_OK)
def test_chunked_split_in_two_everywhere(data, body):
    stream = data + NEXT
    for cut in range(len(stream) + 1):
        decoder, consumed, leftover = decode_pieces([stream[:cut], stream[cut:]])
        assert decoder.done, cut
        assert decoder.body == body, cut
        assert consumed == len(data), cut
        assert leftover == NEXT, cut


@pytest.mark.parametrize("data, body", CHUNKED_OK)
def test_chunked_byte_by_byte(data, body):
    stream = data + NEXT
    decoder, consumed, leftover = decode_pieces(stream[i:i + 1] for i in range(len(stream)))
    assert decoder.done
    assert decoder.body == body
    assert consumed == len(data)
    assert leftover == NEXT


def test_chunked_not_done_until_terminator():
    data = b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
    for cut in range(len(data)):
        decoder, pos = decode(data[:cut])
        assert not decoder.done, cut
        assert pos <= cut


def test_chunked_feed_from_offset():
    data = b"junk" + b"3\r\nabc\r\n0\r\n\r\n" + b"rest"
    decoder, pos = decode(data, pos=4)
    assert decoder.done
    assert decoder.body == b"abc"
    assert data[pos:] == b"rest"


def test_chunked_feed_after_done_consumes_nothing():
    decoder, pos = decode(b"0\r\n\r\n")
    assert decoder.done
    assert decoder.feed(b"5\r\nhello\r\n0\r\n\r\n") == 0
    assert decoder.body == b""


def test_chunked_body_grows_while_data_arrives():
    decoder = ChunkedDecoder(CHUNK_LIMITS)
    buf = b"a\r\n01234"
    pos = decoder.feed(buf)
    assert decoder.body == b"01234"
    assert not decoder.done
    buf = buf[pos:] + b"56789\r\n0\r\n\r\n"
    pos = decoder.feed(buf)
    assert decoder.done
    assert decoder.body == b"0123456789"
    assert pos == len(buf)


CHUNKED_BAD = [
    # (encoded stream, status)
    (b"\r\nhello\r\n0\r\n\r\n", 400),  # empty size
    (b";ext\r\nhello\r\n0\r\n\r\n", 400),  # empty size before an extension
    (b"zz\r\nhello\r\n0\r\n\r\n", 400),
    (b"+5\r\nhello\r\n0\r\n\r\n", 400),
    (b"-5\r\nhello\r\n0\r\n\r\n", 400),
    (b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    (b"5 junk\r\nhello\r\n0\r\n\r\n", 400),
    (b" 5\r\nhello\r\n0\r\n\r\n", 400),
    (b"5g\r\nhello\r\n0\r\n\r\n", 400),
    (b"1" * 17 + b"\r\nhello\r\n0\r\n\r\n", 400),  # 17 hex digits
    (b"5\r\nhello\r\n0\r\n\r\n".replace(b"0\r\n\r\n", b"\xd9\r\n\r\n"), 400),  # non-ASCII size
    (b"5\r\nhelloXY0\r\n\r\n", 400),  # missing CRLF after data
    (b"5\nhello\r\n0\r\n\r\n", 400),  # bare LF after a size: CRLF only inside chunked framing
    (b"5\r\nhello\n0\r\n\r\n", 400),  # bare LF after data
    (b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n", 400),  # bare LF after a trailer
    (b"5\r\nhello\r\n0\r\n\n", 400),  # bare LF as the last line
    (b"5\r\nhello\rX0\r\n\r\n", 400),  # CR not followed by LF
    (b"5\r\nhello world\r\n0\r\n\r\n", 400),  # more data than the size says
    (b"5\r\r\nhello\r\n0\r\n\r\n", 400),  # bare CR in the size line
    (b"5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;a\x00b\r\nhello\r\n0\r\n\r\n", 400),  # NUL
    (b"5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n", 400),  # bare CR in a trailer
    (b"5\r\nhello\r\n0\r\nX-\xe9: 1\r\n\r\n", 400),  # obs-text in a trailer name
    (b"5;\xe9\r\nhello\r\n0\r\n\r\n", 400),  # or in a chunk extension
    (b"65\r\n" + b"z" * 101 + b"\r\n0\r\n\r\n", 413),  # one chunk over the body limit
    (b"32\r\n" + b"z" * 50 + b"\r\n33\r\n" + b"w" * 51 + b"\r\n0\r\n\r\n", 413),  # total over
    (b"f" * 16 + b"\r\n", 413),  # 16 hex digits is a valid but huge size
    (b"5;" + b"e" * 39 + b"\r\nhello\r\n0\r\n\r\n", 400),  # size line over the limit
    (b"5" + b" " * 50 + b"\r\nhello\r\n0\r\n\r\n", 400),
    # RFC 9112 section 7.1.1: whitespace after the digits only before an extension
    (b"5 \r\nhello\r\n0\r\n\r\n", 400),
    (b"5\t\r\nhello\r\n0\r\n\r\n", 400),
    (b"5\r\nhello\r\n0 \r\n\r\n", 400),
    (b"a \r\n0123456789\r\n0\r\n\r\n", 400),
    (b"5\r\nhello\r\n0\r\nX-T: " + b"t" * 36 + b"\r\n\r\n", 400),  # trailer line over the limit
    (b"5\r\nhello\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431),  # too many trailers
]


@pytest.mark.parametrize("data, status", CHUNKED_BAD)
def test_chunked_errors(data, status):
    assert chunk_error(data) == status


@pytest.mark.parametrize("data, status", CHUNKED_BAD)
def test_chunked_errors_split_everywhere(data, status):
    for cut in range(len(data) + 1):
        assert pieces_error([data[:cut], data[cut:]]) == status, cut
    assert pieces_error([data[i:i + 1] for i in range(len(data))]) == status


def test_chunked_body_limit_small():
    limits = Limits(line=40, headers=3, body=10)
    decoder, pos = decode(b"a\r\n0123456789\r\n0\r\n\r\n", limits)
    assert decoder.done and decoder.body == b"0123456789"
    assert chunk_error(b"b\r\n0123456789a\r\n0\r\n\r\n", limits) == 413
    assert chunk_error(b"5\r\n01234\r\n6\r\n", limits) == 413  # refused at the size line


def test_chunked_too_long_size_line_refused_without_newline():
    # a size line that never ends is refused once it passes the limit
    assert chunk_error(b"5;" + b"e" * 100) == 400
    decoder, pos = decode(b"5;" + b"e" * 38 + b"\r")  # could still be a line at the limit
    assert pos == 0 and not decoder.done


def test_chunked_pipelined_request_after_trailers():
    data = b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
    decoder, pos = decode(data + b"POST / HTTP/1.1\r\n")
    assert decoder.done
    assert pos == len(data)


def test_cached_header_name_does_not_excuse_a_missing_colon():
    # "Host" is a known (cached) name after the first parse; a bare "Host" line is still malformed.
    parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Limits())
    with pytest.raises(HTTPError) as caught:
        parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost\r\n\r\n", Limits())
    assert caught.value.status == 400 and caught.value.message == "Malformed header line"
