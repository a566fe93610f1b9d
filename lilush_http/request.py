"""Request parsing, sans-I/O: bytes in, a :class:`Request` or an :class:`HTTPError` out.

Nothing here touches a socket, so every rule is tested with plain byte strings.
The connection loop (``connection.py``) feeds this module what it received.

Line endings: CRLF only. A bare LF or a bare CR anywhere in the head, or in
chunked framing, is refused with 400: a front end that reads a bare LF as part
of a field value (RFC 9110 section 5.5 lets it) would frame the request
differently, which is how requests are smuggled past it.
"""

# RFC 9110 section 5.6.2: tchar, the characters allowed in a token (method, header name).
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
HEX_DIGITS = b"0123456789abcdefABCDEF"
# What may appear in a chunk-size line (extensions included) or a trailer line:
# visible ASCII, space and tab. ``line.translate(None, CHUNK_LINE_CHARS)`` is what is left.
CHUNK_LINE_CHARS = bytes(range(0x20, 0x7F)) + b"\t"
SUPPORTED_VERSIONS = ("HTTP/1.1", "HTTP/1.0")
# What a field value may hold (RFC 9110 section 5.5): visible ASCII, SP, HTAB, obs-text.
VALUE_BYTES = bytes(range(0x20, 0x7F)) + b"\t" + bytes(range(0x80, 0x100))
# RFC 3986 section 3.2.2: a reg-name or IPv4 address (unreserved, pct-encoded, sub-delims),
# and what may stand between the brackets of an IP-literal.
_REG_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;="
_IP_LITERAL_CHARS = _REG_NAME_CHARS + ":"
COMMON_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
# The Connection header values most requests carry, with their tokens (no set to build).
_COMMON_CONNECTION = {value: frozenset((value.lower(),)) for value in ("close", "Close", "keep-alive", "Keep-Alive")}
_KNOWN_NAMES = {}  # header names already checked -> lower-case form (bounded)


class HTTPError(Exception):
    """A request the server refuses: ``status`` is sent back, ``message`` is the reason."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Limits:
    """The parser's limits, taken from the server config once per configure."""

    __slots__ = ("line", "headers", "body")

    def __init__(self, line=8192, headers=100, body=5 * 1024 * 1024):
        self.line = line
        self.headers = headers
        self.body = body

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["request_line_limit"], cfg["max_headers"], cfg["max_body_size"])


class Request:
    """One parsed request head and how its body is framed."""

    __slots__ = ("method", "target", "query", "args", "version", "headers",
                 "keep_alive", "expect_continue", "content_length", "chunked")

    def __init__(self, method, target, version, headers, path):
        self.method = method
        self.target = target
        # ``path``: the target, or the path and query of an absolute-form one.
        if "?" in path:
            query, _, args = path.partition("?")
            self.query = query or "/"
            self.args = args
        else:
            self.query = path or "/"
            self.args = ""
        self.version = version
        self.headers = headers
        self.keep_alive = False
        self.expect_continue = False
        self.content_length = None  # int when the body is Content-Length framed
        self.chunked = False

    @property
    def has_body(self):
        return self.chunked or self.content_length is not None


def find_head_end(buf, start=0):
    """Index just past the blank line that ends the head in ``buf``, or -1.

    ``start`` skips a prefix already known to hold no blank line.
    """
    crlf = buf.find(b"\n\r\n", start)
    if crlf < 0:
        lf = buf.find(b"\n\n", start)
        return lf + 2 if lf >= 0 else -1
    # A bare-LF blank line can only end the head first if it comes before the CRLF
    # one: search no further (the rest may be a large body).
    lf = buf.find(b"\n\n", start, crlf + 1)
    return lf + 2 if lf >= 0 else crlf + 3


def check_partial_head(buf, limits, start=0, lines=0):
    """Refuse an unfinished head early: an overlong request line (414), an overlong
    header line or too many lines (431).

    ``start`` and ``lines`` say where the previous check stopped (the start of
    the last incomplete line) and how many lines it had seen; they are returned
    for the next call, so a head that trickles in is scanned once in all.
    """
    line_limit = limits.line + 1  # the CR of a CRLF is part of the line here
    while True:
        nl = buf.find(b"\n", start)
        if nl < 0:
            break
        if nl - start > line_limit:
            raise _line_too_long(lines)
        start = nl + 1
        lines += 1
        if lines > limits.headers + 1:
            raise HTTPError(431, "Too many header lines")
    if len(buf) - start > line_limit:
        raise _line_too_long(lines)
    return start, lines


def _line_too_long(index):
    """The error for line ``index`` of the head (0: the request line) over the limit."""
    if index == 0:
        return HTTPError(414, "Request line too long")
    return HTTPError(431, "Header line too long")


def parse_head(head, limits):
    """Parse a complete head (request line, header lines, blank line) into a Request.

    Raises HTTPError with the status to answer for anything malformed.
    """
    line_limit = limits.line
    if head.isascii():
        obs_text = False
        text = head.decode("ascii")
        long_lines = len(text) > line_limit  # only then can a single line be over the limit
    else:
        # Bytes >= 0x80 may only be obs-text in field values: the method, target and
        # names are checked to be ASCII below. Values are UTF-8, and what is not
        # valid UTF-8 is kept byte for byte as surrogates (PEP 383).
        obs_text = True
        _check_line_lengths(head, line_limit)
        text = head.decode("utf-8", "surrogateescape")
        long_lines = False
    # Lines end with CRLF only. A bare LF, bare CR or NUL left inside a line fails
    # the checks of the part it is in (method, target, version, name, value), and
    # _refusal then names it: no separate scan of the head on the way.
    lines = text.split("\r\n")
    # The head ends with a blank line, so the split leaves two empty strings.
    if len(lines) < 3 or lines.pop() or lines.pop():
        raise _refusal(text, "Incomplete request head")
    if len(lines) - 1 > limits.headers:
        raise HTTPError(431, "Too many header lines")

    request_line = lines[0]
    if long_lines and len(request_line) > line_limit:
        raise HTTPError(414, "Request line too long")
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise _refusal(request_line, "Unsupported protocol")
    method, target, version = parts
    if version not in SUPPORTED_VERSIONS:
        raise _refusal(version, "Unsupported protocol")
    if method not in COMMON_METHODS and (not method or method.strip(TOKEN_CHARS)):
        raise _refusal(method, "Invalid method")
    if not target or not target.isprintable() or "#" in target or (obs_text and not target.isascii()):
        raise _refusal(target, "Invalid request target")

    headers = {}
    known = _KNOWN_NAMES
    for line in lines[1:]:
        if long_lines and len(line) > line_limit:
            raise HTTPError(431, "Header line too long")
        name, colon, value = line.partition(":")
        if not colon:
            raise _refusal(line, "Malformed header line")
        lname = known.get(name)
        if lname is None:
            if not name:
                raise HTTPError(400, "Malformed header line")
            if name.strip(TOKEN_CHARS):
                # Also catches obs-fold continuation lines, whitespace before the
                # colon and bytes >= 0x80 in a name.
                raise _refusal(name, "Invalid header name")
            lname = name.lower()
            if len(known) < 2048:
                known[name] = lname
        value = value.strip(" \t")
        if (not value.isprintable() and not value.replace("\t", " ").isprintable()
                and (not obs_text or value.encode("utf-8", "surrogateescape").translate(None, VALUE_BYTES))):
            raise _refusal(value, "Control character in header value")
        if lname in headers:
            if lname == "host":
                raise HTTPError(400, "Duplicate Host header")
            headers[lname] = headers[lname] + ", " + value
        else:
            headers[lname] = value

    if "host" not in headers and version == "HTTP/1.1":
        raise HTTPError(400, "Missing Host header")  # also with an absolute-form target
    if target[0] == "/":
        path = target
        if method == "CONNECT":
            raise HTTPError(400, "CONNECT needs an authority-form target")
    else:
        path = _other_target_form(method, target, headers)
    request = Request(method, target, version, headers, path)
    if "transfer-encoding" in headers or "content-length" in headers:
        _frame_body(request, limits)
    if "connection" in headers or "expect" in headers:
        _connection_options(request)
    else:
        request.keep_alive = version == "HTTP/1.1"
    return request


def _refusal(part, message):
    """The 400 for a malformed ``part`` of the head, naming a bare LF, bare CR or NUL
    in it (the usual culprits) before the generic ``message``."""
    if "\n" in part:
        return HTTPError(400, "Bare LF in request head")
    if "\r" in part:
        return HTTPError(400, "Bare CR in request head")
    if "\x00" in part:
        return HTTPError(400, "NUL byte in request head")
    return HTTPError(400, message)


def _check_line_lengths(head, line_limit):
    """The line-length limits counted in bytes (a head with obs-text decodes to fewer characters)."""
    if len(head) > line_limit:
        for index, line in enumerate(head.split(b"\r\n")):
            if len(line) > line_limit:
                raise _line_too_long(index)


def _other_target_form(method, target, headers):
    """The path (and query) of a target that is not origin-form (RFC 9112 section 3.2):
    ``*`` only for OPTIONS, authority-form only for CONNECT, else an http(s)
    absolute-form URI, whose authority then replaces the Host header."""
    if target == "*":
        if method != "OPTIONS":
            raise HTTPError(400, "Asterisk-form target is only for OPTIONS")
        return target
    if method == "CONNECT":
        _check_authority(target, True)
        return target
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise HTTPError(400, "Invalid request target")
    end = len(rest)
    for mark in "/?":
        found = rest.find(mark)
        if 0 <= found < end:
            end = found
    authority, path = rest[:end], rest[end:]
    _check_authority(authority, False)
    headers["host"] = authority
    return path if path[:1] == "/" else "/" + path


def _check_authority(authority, port_required):
    """``host[:port]`` (RFC 3986 section 3.2, without userinfo), else HTTPError 400."""
    if "@" in authority:
        raise HTTPError(400, "Userinfo in request target")
    if authority[:1] == "[":
        close = authority.find("]")
        host, rest = authority[1:close], authority[close + 1:]
        valid = close > 0 and host and not host.strip(_IP_LITERAL_CHARS) and rest[:1] in ("", ":")
        port = rest[1:]
    else:
        host, _, port = authority.partition(":")
        valid = host and not host.strip(_REG_NAME_CHARS)
    if not valid or (port and not (port.isascii() and port.isdigit())) or (port_required and not port):
        raise HTTPError(400, "Invalid authority in request target")


def _frame_body(request, limits):
    """Decide how the body is delimited; refuse anything that could be smuggled."""
    headers = request.headers
    te = headers.get("transfer-encoding")
    cl = headers.get("content-length")
    if te is not None:
        if cl is not None:
            raise HTTPError(400, "Both Content-Length and Transfer-Encoding")
        if request.version != "HTTP/1.1":
            raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if te != "chunked":
            raise HTTPError(501, "Unsupported Transfer-Encoding")
        request.chunked = True
        return
    if cl is None:
        return
    values = {v.strip(" \t") for v in cl.split(",")}
    if len(values) != 1:
        raise HTTPError(400, "Conflicting Content-Length values")
    value = values.pop()
    if "," in cl:
        headers["content-length"] = value  # RFC 9110 section 8.6: one value, as if sent once
    if not (value.isascii() and value.isdigit()):  # "\u0665".isdigit() too
        raise HTTPError(400, "Invalid Content-Length")
    if len(value) > 18 or int(value) > limits.body:
        raise HTTPError(413, "Request body too large")
    request.content_length = int(value)


def _connection_options(request):
    """Keep-alive per RFC 9112 section 9.3, and the Expect header."""
    headers = request.headers
    tokens = headers.get("connection")
    if tokens:
        common = _COMMON_CONNECTION.get(tokens)
        # Only ASCII tokens count: "\u212a".lower() is "k".
        tokens = common if common is not None else {t.strip(" \t").lower() for t in tokens.split(",")
                                                     if t.isascii()}
    else:
        tokens = ()
    if request.version == "HTTP/1.1":
        request.keep_alive = "close" not in tokens
    else:
        request.keep_alive = "keep-alive" in tokens
    expect = headers.get("expect")
    if expect is not None:
        if expect.lower() != "100-continue":
            raise HTTPError(417, "Unsupported expectation")
        request.expect_continue = request.version == "HTTP/1.1" and request.has_body


class ChunkedDecoder:
    """Decodes a chunked body incrementally from a growing buffer.

    ``feed(buf, pos)`` consumes what it can from ``buf[pos:]`` and returns the
    new position; ``done`` turns true after the last chunk and its trailers,
    which are checked to be field lines and dropped. Chunk extensions are
    ignored. Every line of the framing must end with CRLF.

    The data goes into one bytearray, not a list of pieces: a body of tiny
    chunks would otherwise cost a Python object per chunk (2-byte chunks made a
    5 MB body hold about 130 MB).
    """

    __slots__ = ("limits", "data", "size", "remaining", "state", "trailers")

    SIZE, DATA, DATA_END, TRAILER, DONE = range(5)

    def __init__(self, limits):
        self.limits = limits
        self.data = bytearray()
        self.size = 0
        self.remaining = 0
        self.state = self.SIZE
        self.trailers = 0

    @property
    def done(self):
        return self.state == self.DONE

    @property
    def body(self):
        return bytes(self.data)

    def feed(self, buf, pos=0):
        end = len(buf)
        while pos < end:
            state = self.state
            if state == self.DATA:
                take = min(self.remaining, end - pos)
                if take > 4096:
                    with memoryview(buf) as view:
                        self.data += view[pos:pos + take]
                else:
                    self.data += buf[pos:pos + take]
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = self.DATA_END
            elif state == self.DATA_END:
                if end - pos < 2:
                    break
                elif buf[pos:pos + 2] == b"\r\n":
                    pos += 2
                else:
                    raise HTTPError(400, "Missing CRLF after chunk data")
                self.state = self.SIZE
            elif state == self.DONE:
                break
            else:
                if state == self.SIZE:
                    # Fast path: a bare hex size (no extension) whose data and CRLF are
                    # all here is consumed at once; anything else takes the general path.
                    nl = buf.find(b"\n", pos, pos + 18)
                    if nl > pos and buf[nl - 1] == 13:
                        digits = buf[pos:nl - 1]
                        if (digits and len(digits) <= 16 and len(digits) <= self.limits.line
                                and not digits.strip(HEX_DIGITS)):
                            size = int(digits, 16)
                            if not size or self.size + size > self.limits.body:
                                pass  # the last chunk, or too large: the general path says so
                            else:
                                start = nl + 1
                                stop = start + size
                                if stop + 2 <= end and buf[stop:stop + 2] == b"\r\n":
                                    self.size += size
                                    if size > 4096:
                                        with memoryview(buf) as view:
                                            self.data += view[start:stop]
                                    else:
                                        self.data += buf[start:stop]
                                    pos = stop + 2
                                    continue
                # A trailer is a field line: obs-text allowed in its value, as in the head.
                line, pos = self._line(buf, pos, CHUNK_LINE_CHARS if state == self.SIZE else VALUE_BYTES)
                if line is None:
                    break
                if state == self.SIZE:
                    self._size_line(line)
                elif not line:
                    self.state = self.DONE
                else:
                    self.trailers += 1
                    if self.trailers > self.limits.headers:
                        raise HTTPError(431, "Too many trailer lines")
                    _check_trailer(line)
        return pos

    def _line(self, buf, pos, allowed):
        nl = buf.find(b"\n", pos)
        if nl < 0:
            # + 1: the unfinished line may end with the CR of its CRLF.
            if len(buf) - pos > self.limits.line + 1:
                raise HTTPError(400, "Chunk size or trailer line too long")
            return None, pos
        if nl == pos or buf[nl - 1] != 13:
            # RFC 9112 allows a bare LF only in the head: inside a chunked body a
            # parser in front of this one may read it differently (funky chunks).
            raise HTTPError(400, "Bare LF in chunked framing")
        line = buf[pos:nl - 1]
        if len(line) > self.limits.line:
            raise HTTPError(400, "Chunk size or trailer line too long")
        if line.translate(None, allowed):
            # CR, NUL, other controls or DEL, as in the head; bytes >= 0x80 but in a trailer.
            raise HTTPError(400, "Control character in chunked framing")
        return line, nl + 1

    def _size_line(self, line):
        digits, semicolon, _extension = line.partition(b";")
        if semicolon:
            digits = digits.rstrip(b" \t")  # RFC 9112 section 7.1.1: BWS only before an extension
        if not digits or len(digits) > 16 or digits.strip(HEX_DIGITS):
            raise HTTPError(400, "Invalid chunk size")
        size = int(digits, 16)
        if self.size + size > self.limits.body:
            raise HTTPError(413, "Request body too large")
        self.size += size
        if size:
            self.remaining = size
            self.state = self.DATA
        else:
            self.state = self.TRAILER


def _check_trailer(line):
    """A trailer line must be a field line (``name: value``) like a header line:
    anything else (a request line, an obs-fold, a bare word) is refused rather
    than silently dropped, so no other parser can read it differently."""
    name, colon, _value = line.partition(b":")
    if not colon or not name or name.strip(_TOKEN_BYTES):
        raise HTTPError(400, "Malformed trailer line")


_TOKEN_BYTES = TOKEN_CHARS.encode("ascii")


if __name__ == "lilush_http.request":  # the pure module, not its compiled twin
    from .accelerator import use_compiled

    use_compiled(__name__, __file__)
