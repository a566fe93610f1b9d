"""Property tests (hypothesis) of the sans-I/O request parser: no sockets.

``Wire`` below models what ``connection.py`` does with the bytes of one
connection: a buffer that grows read by read, ``find_head_end(buf, searched)``
and ``check_partial_head`` with the carried ``(start, lines)`` while a head is
incomplete, ``parse_head`` on the head, then the body by Content-Length or
``ChunkedDecoder.feed`` with ``buf = buf[pos:] + data``. Whatever it is fed,
the parser may only answer requests or raise HTTPError, and how the bytes are
cut into reads must not change what it answers.
"""

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lilush_http.connection import skip_blank_lines
from lilush_http.request import (
    TOKEN_CHARS,
    ChunkedDecoder,
    HTTPError,
    Limits,
    check_partial_head,
    find_head_end,
    parse_head,
)

LIMITS = Limits()
SMALL = Limits(line=64, headers=6, body=200)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class EndOfInput(Exception):
    """The model's recv() found no more pieces: the client closed."""


class Wire:
    """One connection's reads, replayed through the parser as connection.py does."""

    def __init__(self, pieces, limits):
        self.pieces = iter(pieces)
        self.limits = limits
        self.buf = b""

    def recv(self):
        try:
            piece = next(self.pieces)
        except StopIteration:
            raise EndOfInput from None
        assert piece, "recv() never returns b'' before the end"
        return piece

    def read_head(self):
        buf = skip_blank_lines(self.buf)
        while not buf or buf == b"\r":  # Connection._wait_for_request
            buf = skip_blank_lines(buf + self.recv())
        end = find_head_end(buf)
        if end < 0:  # Connection._read_rest_of_head
            start = lines = 0
            while end < 0:
                start, lines = check_partial_head(buf, self.limits, start, lines)
                searched = max(0, len(buf) - 3)
                buf += self.recv()
                end = find_head_end(buf, searched)
        self.buf = buf[end:]
        return parse_head(buf[:end], self.limits)

    def read_body(self, request):
        if request.content_length is not None:
            size = request.content_length
            buf = self.buf
            while len(buf) < size:
                buf += self.recv()
            self.buf = buf[size:]
            return buf[:size]
        if request.chunked:
            decoder = ChunkedDecoder(self.limits)
            buf = self.buf
            pos = decoder.feed(buf)
            while not decoder.done:
                buf = buf[pos:] + self.recv()
                pos = decoder.feed(buf)
            self.buf = buf[pos:]
            return decoder.body
        return None

    def run(self):
        """([request summaries], outcome): outcome is "eof" or the HTTPError status.
        Anything else raised is a bug and propagates."""
        seen = []
        try:
            while True:
                request = self.read_head()
                body = self.read_body(request)
                seen.append((request.method, request.target, request.query, request.args,
                             request.version, request.headers, body, request.keep_alive))
        except EndOfInput:
            return seen, "eof"
        except HTTPError as exc:
            assert isinstance(exc.status, int) and 400 <= exc.status <= 599, exc.status
            assert isinstance(exc.message, str) and exc.message
            return seen, exc.status


def cut(data, points):
    """``data`` cut at ``points`` into non-empty pieces (recv never returns b"")."""
    points = sorted({p for p in points if 0 < p < len(data)})
    bounds = [0] + points + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def run(data, limits=LIMITS, points=()):
    return Wire(cut(data, points), limits).run()


# -- arbitrary bytes ------------------------------------------------------------

FRAGMENTS = [
    b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\t", b":", b";", b",", b"\xff", b"\x7f",
    b"GET / HTTP/1.1\r\n", b"POST /x?a=1 HTTP/1.1\r\n", b"GET / HTTP/1.0\n", b"HTTP/1.1",
    b"Host: h\r\n", b"Host: h\n", b"Content-Length: 5\r\n", b"Content-Length: ", b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: ", b"chunked", b"Connection: close\r\n", b"Expect: 100-continue\r\n",
    b"5\r\nhello\r\n", b"0\r\n\r\n", b"0\n\n", b"ffffffffffffffff\r\n", b"X-A: b\r\n", b"\r\n\r\n",
]
HEADER_FRAGMENTS = [
    b"Host: h\r\n", b"Content-Length: 5\r\n", b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\n", b"Connection: close\r\n", b"X-A: b\r\n", b"X-A: b\n", b"Expect: 100-continue\r\n",
]
BODY_FRAGMENTS = [b"hello", b"5\r\nhello\r\n", b"5\nhello\n", b"0\r\n\r\n", b"0\n\n", b"0\r\nT: 1\r\n\r\n", b"\r\n"]
loose = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(FRAGMENTS)), max_size=30).map(b"".join)
# Heads that are nearly right, so that some requests get through and the body paths run.
nearly = st.lists(st.tuples(
    st.sampled_from([b"GET / HTTP/1.1\r\n", b"POST /p?q HTTP/1.1\r\n", b"PUT / HTTP/1.0\r\n", b"GET / HTTP/1.1\n"]),
    st.sampled_from([b"Host: h\r\n", b"Host: h\n", b""]),
    st.lists(st.one_of(st.sampled_from(HEADER_FRAGMENTS), st.sampled_from(FRAGMENTS)), max_size=5).map(b"".join),
    st.sampled_from([b"\r\n", b"\n", b""]),
    st.lists(st.one_of(st.sampled_from(BODY_FRAGMENTS), st.binary(max_size=8)), max_size=4).map(b"".join),
).map(b"".join), min_size=1, max_size=3).map(b"".join)
noise = st.one_of(loose, nearly)
cut_points = st.lists(st.integers(min_value=0, max_value=2000), max_size=12)


@FAST
@given(data=noise, points=cut_points, small=st.booleans())
def test_arbitrary_bytes_only_ever_raise_http_error(data, points, small):
    limits = SMALL if small else LIMITS
    seen, outcome = run(data, limits, points)
    assert outcome == "eof" or isinstance(outcome, int)
    # Cutting the same bytes differently finds the same requests, and ends the same way
    # (end of input or a refusal). The status may differ only for a head refused early
    # for its size (414, 431) before a later problem in it had arrived.
    whole, whole_outcome = run(data, limits)
    assert seen == whole
    assert (outcome == "eof") == (whole_outcome == "eof")
    if outcome != whole_outcome:
        assert {outcome, whole_outcome} & {414, 431}, (outcome, whole_outcome)


@FAST
@given(data=st.binary(max_size=300), points=cut_points)
def test_random_binary_only_ever_raises_http_error(data, points):
    for limits in (LIMITS, SMALL):
        run(data, limits, points)
        run(data, limits, range(len(data)))  # byte by byte


CHUNK_FRAGMENTS = [
    b"5\r\nhello\r\n", b"5\nhello\n", b"3;x=1\r\nabc\r\n", b"10\r\n", b"0\r\n", b"0\r\n\r\n", b"\r\n", b"\n",
    b"\r", b"X-T: 1\r\n", b"X-T\r\n", b"ff\r\n", b"f" * 17, b";", b" ", b"\x00", b"\xff", b"a" * 20,
]
VALID_CHUNKS = [b"5\r\nhello\r\n", b"3;x=1\r\nabc\r\n", b"1\r\nz\r\n", b"2\r\n\r\n\r\n"]
chunk_noise = st.tuples(
    st.lists(st.one_of(st.sampled_from(VALID_CHUNKS), st.sampled_from(VALID_CHUNKS),
                       st.sampled_from(CHUNK_FRAGMENTS), st.binary(max_size=12)), max_size=12).map(b"".join),
    st.sampled_from([b"0\r\n\r\n", b"0\r\nX-T: 1\r\n\r\n", b"0\n\n", b""]),
    st.binary(max_size=8),
).map(b"".join)


@FAST
@given(data=st.one_of(chunk_noise, chunk_noise, noise), points=cut_points)
def test_chunked_decoder_on_arbitrary_bytes(data, points):
    """The decoder alone: HTTPError or a body; never more bytes than it was given."""
    decoder = ChunkedDecoder(SMALL)
    buf = b""
    pos = fed = 0
    try:
        for piece in cut(data, points):
            buf = buf[pos:] + piece
            fed += len(piece)
            pos = decoder.feed(buf)
            assert 0 <= pos <= len(buf)
            if decoder.done:
                break
    except HTTPError as exc:
        assert exc.status in (400, 413, 431)
        with_one_read = ChunkedDecoder(SMALL)
        try:
            with_one_read.feed(data)
        except HTTPError as again:
            assert again.status == exc.status
        else:
            raise AssertionError("refused in pieces, accepted in one read")
        return
    assert len(decoder.body) <= SMALL.body
    whole = ChunkedDecoder(SMALL)
    end = whole.feed(data)
    assert whole.done == decoder.done
    if decoder.done:
        assert end == fed - (len(buf) - pos)
        assert whole.body == decoder.body


# -- valid requests from a grammar ---------------------------------------------------

VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
TARGET_CHARS = VCHAR.replace("#", "")  # a fragment is never sent (RFC 9112 section 3.2)
OBS_TEXT = "\u00e9\u00a0\u2713\U0001f600\udcff\udce9"  # UTF-8, and bytes that are not (surrogateescape)
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "expect"}

tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)
methods = st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]), tokens)
paths = st.text(alphabet=TARGET_CHARS.replace("?", ""), max_size=30)
queries = st.text(alphabet=TARGET_CHARS, max_size=30)
names = tokens.filter(lambda n: n.lower() not in SPECIAL)
values = st.one_of(st.text(alphabet=VCHAR + " \t", max_size=30), st.text(alphabet=VCHAR + " \t" + OBS_TEXT, max_size=30))
eols = st.just(b"\r\n")


def encode(text):
    """The wire bytes of a str from the parser: UTF-8, surrogates back to the bytes they stand for."""
    return text.encode("utf-8", "surrogateescape")


@st.composite
def targets(draw):
    """(target, query, args, authority of an absolute-form target or None)."""
    kind = draw(st.sampled_from(["origin", "origin", "query", "asterisk", "absolute", "absolute-empty-path"]))
    if kind == "asterisk":
        return "*", "*", "", None
    if kind.startswith("absolute"):
        authority = draw(st.sampled_from(["example.com", "127.0.0.1:8080", "[::1]:443", "Example.COM"]))
        path = "" if kind.endswith("empty-path") else "/" + draw(paths)
        args = draw(st.one_of(st.none(), queries))
        target = draw(st.sampled_from(["http://", "https://", "HTTP://"])) + authority + path
        if args is not None:
            target += "?" + args
        return target, path or "/", args or "", authority
    path = "/" + draw(paths)
    if kind == "query":
        args = draw(queries)
        return path + "?" + args, path, args, None
    return path, path, "", None


@st.composite
def chunked_body(draw, body):
    """``body`` in random chunks, with extensions and trailers (CRLF: the only line
    end inside chunked framing)."""
    out = []
    rest = body
    while rest:
        size = draw(st.integers(min_value=1, max_value=len(rest)))
        piece, rest = rest[:size], rest[size:]
        digits = draw(st.sampled_from(["%x", "%X", "%04x"])) % size
        ext = draw(st.sampled_from([b"", b";a=b", b";x", b" ;q=\"v\""]))
        out.append(digits.encode() + ext + b"\r\n" + piece + b"\r\n")
    out.append(b"0" + draw(st.sampled_from([b"", b";end"])) + b"\r\n")
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        out.append(draw(names).encode() + b": " + encode(draw(values).strip(" \t")) + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


@st.composite
def requests(draw):
    """(wire bytes, expected summary as Wire.run reports it)."""
    method = draw(methods)
    target, query, args, authority = draw(targets())
    if target == "*":
        method = "OPTIONS"  # asterisk-form is only for OPTIONS
    elif method == "CONNECT":
        method = "GET"  # CONNECT takes only authority-form
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    fields = [(draw(names), draw(values)) for _ in range(draw(st.integers(min_value=0, max_value=20)))]
    repeat = draw(st.integers(min_value=0, max_value=3))
    if fields and repeat:  # some names repeated, in another case
        for _ in range(repeat):
            name, _ = draw(st.sampled_from(fields))
            fields.append((draw(st.sampled_from([name, name.upper(), name.lower()])), draw(values)))
        fields = draw(st.permutations(fields))
    if version == "HTTP/1.1" or draw(st.booleans()):  # HTTP/1.0 may leave Host out
        fields.insert(draw(st.integers(min_value=0, max_value=len(fields))), ("Host", draw(values)))
    kind = draw(st.sampled_from(["none", "length", "chunked"] if version == "HTTP/1.1" else ["none", "length"]))
    body = None
    wire_body = b""
    if kind != "none":
        body = draw(st.binary(max_size=300))
        if kind == "length":
            fields.append((draw(st.sampled_from(["Content-Length", "content-length"])), str(len(body))))
            wire_body = body
        else:
            fields.append((draw(st.sampled_from(["Transfer-Encoding", "transfer-encoding"])), "chunked"))
            wire_body = draw(chunked_body(body))
    lines = [("%s %s %s" % (method, target, version)).encode() + draw(eols)]
    for name, value in fields:
        sep = draw(st.sampled_from([": ", ":", ":\t", ":  "]))
        lines.append(encode(name + sep + value) + draw(eols))
    wire = b"".join(lines) + draw(eols) + wire_body
    headers = {}
    for name, value in fields:
        name, value = name.lower(), value.strip(" \t")
        headers[name] = headers[name] + ", " + value if name in headers else value
    if authority is not None:
        headers["host"] = authority  # the target's authority replaces Host
    expected = (method, target, query, args, version, headers, body, version == "HTTP/1.1")
    return wire, expected


@st.composite
def pipelines(draw):
    """1 to 3 requests back to back (blank lines allowed between them), the expected
    summaries, and cut points over the whole."""
    built = draw(st.lists(requests(), min_size=1, max_size=3))
    wire = b""
    for i, (data, _) in enumerate(built):
        if i:
            wire += draw(st.sampled_from([b"", b"", b"\r\n", b"\r\n\r\n"]))
        wire += data
    points = draw(st.lists(st.integers(min_value=0, max_value=max(0, len(wire))), max_size=15))
    return wire, [expected for _, expected in built], points


@FAST
@given(pipelines())
def test_valid_requests_parse_back_to_what_was_built(case):
    wire, expected, _ = case
    seen, outcome = run(wire)
    assert outcome == "eof"
    assert seen == expected


@FAST
@given(pipelines())
def test_any_cut_into_reads_gives_the_same_requests(case):
    wire, expected, points = case
    assert run(wire, points=points) == (expected, "eof")


@QUICK
@given(requests())
def test_byte_by_byte_gives_the_same_request(case):
    wire, expected = case
    assume(len(wire) < 1500)
    assert run(wire, points=range(len(wire))) == ([expected], "eof")


@QUICK
@given(requests(), st.integers(min_value=0, max_value=10 ** 6), st.integers(min_value=0, max_value=255),
       st.sampled_from(["flip", "insert", "delete"]), cut_points)
def test_mutated_valid_request_is_served_or_refused(case, where, byte, how, points):
    """One byte changed in a valid request: served as some request(s), refused with
    HTTPError or left waiting for more; the same however it is cut."""
    wire, _ = case
    i = where % len(wire)
    if how == "flip":
        wire = wire[:i] + bytes([byte]) + wire[i + 1:]
    elif how == "insert":
        wire = wire[:i] + bytes([byte]) + wire[i:]
    else:
        wire = wire[:i] + wire[i + 1:]
    seen, outcome = run(wire, points=points)
    whole, whole_outcome = run(wire)
    assert seen == whole
    assert (outcome == "eof") == (whole_outcome == "eof")
    if outcome != whole_outcome:
        assert {outcome, whole_outcome} & {414, 431}


@QUICK
@given(requests(), st.integers(min_value=1, max_value=10 ** 6))
def test_truncated_request_waits_for_more(case, where):
    """A proper prefix of a valid request is never a request and never an error."""
    wire, _ = case
    prefix = wire[:where % len(wire)]
    assert run(prefix) == ([], "eof")


# -- limits at their exact boundary ------------------------------------------------------

@st.composite
def bounded_heads(draw):
    """A head under small random limits: every line at most ``line`` long and at most
    ``headers`` header lines, or one line one byte over, or one header line too many.
    (wire bytes, limits, expected outcome: the number of header lines, 414 or 431)."""
    line = draw(st.integers(min_value=20, max_value=60))
    headers = draw(st.integers(min_value=1, max_value=6))
    limits = Limits(line=line, headers=headers, body=100)
    fill = lambda prefix, longest: prefix + "v" * draw(st.integers(min_value=0, max_value=longest - len(prefix)))
    request_line = "GET /" + "a" * draw(st.integers(min_value=0, max_value=line - 14)) + " HTTP/1.1"
    fields = ["Host: h"] + [fill("X-%d: " % i, line) for i in range(draw(st.integers(0, headers - 1)))]
    lines = [request_line] + fields
    over = draw(st.sampled_from(["none", "none", "line", "count"]))
    expected = len(fields)
    if over == "line":
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        lines[i] = lines[i][:5] + "v" * (line + 1 - len(lines[i])) + lines[i][5:]  # exactly one too long
        expected = 414 if i == 0 else 431
    elif over == "count":
        lines += ["Y-%d: 1" % i for i in range(headers + 1 - len(fields))]
        expected = 431
    wire = b"".join(text.encode() + draw(eols) for text in lines) + draw(eols)
    return wire, limits, expected


@FAST
@given(bounded_heads(), cut_points)
def test_limits_hold_exactly_however_the_head_is_cut(case, points):
    wire, limits, expected = case
    for pieces in (points, range(len(wire))):
        seen, outcome = run(wire, limits, pieces)
        if expected in (414, 431):
            assert (seen, outcome) == ([], expected)
        else:
            assert outcome == "eof" and len(seen) == 1 and len(seen[0][5]) == expected
