"""Response writing, sans-I/O: a handler's (content, status, headers) in, wire bytes out.

Status line with its reason phrase, CRLF everywhere, Date and Server, an exact
Content-Length (or chunked framing for streamed bodies), compression when
negotiated, no body where HTTP forbids one. What the handler returns is
checked here; anything that cannot be sent safely raises ResponseError, which
the server turns into a 500.
"""

import time
from email.utils import formatdate
from http import HTTPStatus

from .request import TOKEN_CHARS

SERVER_NAME = "lilush_http"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_REASONS = {s.value: s.phrase for s in HTTPStatus}
# RFC 9110 renamed these; older Pythons still carry the RFC 7231 phrases.
_REASONS.update({413: "Content Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable",
                 422: "Unprocessable Content"})
_STATUS_LINES = {}
_date = [0, "", b""]
_time = time.time


class ResponseError(Exception):
    """The handler returned something that is not a valid response."""


def reason(status):
    """The reason phrase for a status code ("Unknown" for unregistered codes)."""
    return _REASONS.get(status, "Unknown")


def status_line(status):
    """``HTTP/1.1 <code> <reason>\\r\\n`` as bytes, built once per code."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = ("HTTP/1.1 %d %s\r\n" % (status, reason(status))).encode("ascii")
    return line


def date_header():
    """The ``Date`` and ``Server`` lines, formatted at most once a second."""
    now = int(_time())
    if now != _date[0]:
        _date[0] = now
        _date[1] = "Date: %s\r\nServer: %s\r\n" % (formatdate(now, usegmt=True), SERVER_NAME)
        _date[2] = _date[1].encode("ascii")
    return _date[1]


def date_lines():
    """``date_header()`` as bytes."""
    if int(_time()) != _date[0]:
        date_header()
    return _date[2]


def body_allowed(status):
    """1xx, 204 and 304 responses never carry a body (RFC 9110 section 6.4.1)."""
    return status >= 200 and status != 204 and status != 304


def to_bytes(content):
    """The body as bytes: str is sent as UTF-8, None as nothing."""
    if content is None:
        return b""
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode("utf-8")
    if isinstance(content, (bytearray, memoryview)):
        return bytes(content)
    raise ResponseError("handler returned content of type %s; expected str, bytes or None"
                        % type(content).__name__)


def check_status(status):
    if type(status) is not int or not 100 <= status <= 599:
        raise ResponseError("handler returned invalid status %r; expected an int from 100 to 599" % (status,))
    return status


_KNOWN_NAMES = {}  # header name -> its lower-case form, for names already checked


def header_lines(headers):
    """Render the handler's headers; returns (text, names) with names lower-cased.

    A list value gives one line per item (set-cookie). A name that is not a
    token, or a CR, LF or NUL in a value, raises ResponseError: no response
    splitting reaches the wire.
    """
    if not headers:
        return "", ()
    if type(headers) is not dict and not isinstance(headers, dict):
        raise ResponseError("handler returned headers of type %s; expected a dict" % type(headers).__name__)
    text = ""
    names = set()
    known = _KNOWN_NAMES
    for name, value in headers.items():
        lname = known.get(name)
        if lname is None:
            if not isinstance(name, str) or not name or name.strip(TOKEN_CHARS):
                raise ResponseError("invalid response header name %r" % (name,))
            lname = name.lower()
            if len(known) < 4096:
                known[name] = lname
        names.add(lname)
        if type(value) is str and value.isprintable():
            text += name + ": " + value + "\r\n"  # the common case, checked
            continue
        for item in (value if isinstance(value, (list, tuple)) else (value,)):
            if not isinstance(item, str):
                if type(item) is int:
                    item = str(item)
                else:
                    raise ResponseError("response header %r has a value of type %s; expected str"
                                        % (name, type(item).__name__))
            if not item.isprintable() and ("\r" in item or "\n" in item or "\x00" in item):
                raise ResponseError("response header %r contains CR, LF or NUL" % name)
            text += name + ": " + item + "\r\n"
    return text, names


OWNED = frozenset(("connection", "content-length", "transfer-encoding"))
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data):
    """One chunk of a chunked body (``data`` must not be empty: that ends the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


_BLOCKS = {}  # (status, handler header items, policy) -> (status line, header block bytes, content type
#   when compression could apply to it, else None)
_BLOCKS_MAX = 512
_CONNECTION_LINES = {(False, False): b"Connection: close\r\n\r\n", (False, True): b"Connection: close\r\n\r\n",
                     (True, False): b"\r\n", (True, True): b"Connection: keep-alive\r\n\r\n"}
_UNCACHEABLE = OWNED | {"date", "server", "content-encoding"}


def render(status, headers, content, keep_alive, http10=False, head=False,
           accept_encoding=None, compression=None):
    """The complete response as bytes, and whether the connection stays open.

    ``keep_alive`` is the request's wish; a handler header ``connection: close``
    overrides it. ``head`` sends the headers a GET would get, without the body.
    ``compression`` (a compression.Policy) and the request's ``accept_encoding``
    decide whether the body is compressed.

    The encoded header block of a (status, handler headers) pair seen before
    is reused when no coding applies: only Date, Content-Length and
    Connection are added per response.
    """
    if type(status) is not int or not 100 <= status <= 599:
        check_status(status)
    try:
        block = _BLOCKS.get((status, tuple(headers.items()) if headers else None, compression))
    except (TypeError, AttributeError):  # list values are not hashable; not a dict: checked below
        block = None
    body = content if type(content) is bytes else to_bytes(content)
    if block is not None:
        line, block_bytes, ctype = block
        if ctype is None or compression.coding_for(accept_encoding, len(body)) is None:
            return b"".join((line, date_lines(), block_bytes, b"Content-Length: %d\r\n" % len(body),
                             _CONNECTION_LINES[keep_alive, http10], b"" if head else body)), keep_alive
    if headers:
        text, names, keep_alive, stated_length = _handler_headers(headers, keep_alive)
    else:
        text, names, stated_length = "", (), None
    if status >= 200 and status != 204 and status != 304:
        ctype = coding = None
        if compression is not None and "content-encoding" not in names:
            ctype = (headers.get("content-type") or _value(headers, "content-type")
                     if "content-type" in names else "text/html")
            coding, vary = compression.choose(accept_encoding, ctype, len(body))
            if coding is not None:
                body = compression.compress(body, coding)
                text += "Content-Encoding: %s\r\n" % coding
                if "etag" in names:
                    text = _weaken_etag(text)
            if vary:
                text += _vary_line(headers, names)
            else:
                ctype = None  # not eligible: the block holds for any Accept-Encoding
        if "content-type" not in names:
            text += "Content-Type: text/html\r\n"
        if coding is None and _UNCACHEABLE.isdisjoint(names) and (
                not headers or all(type(v) is str for v in headers.values())):
            _remember((status, tuple(headers.items()) if headers else None, compression),
                      (_STATUS_LINES.get(status) or status_line(status), text.encode("utf-8"), ctype))
        if body or stated_length is None or not head:
            stated_length = len(body)
        text += "Content-Length: %d\r\n" % stated_length
    else:
        body = b""
        if status == 304:
            text = _not_modified(text, headers, names, compression, accept_encoding)
            if stated_length is not None:
                text += "Content-Length: %d\r\n" % stated_length
    head_bytes = (_STATUS_LINES.get(status) or status_line(status)) + _finish(text, names, keep_alive, http10)
    if head or not body:
        return head_bytes, keep_alive
    return head_bytes + body, keep_alive


def _remember(key, block):
    if len(_BLOCKS) >= _BLOCKS_MAX:
        _BLOCKS.clear()
    _BLOCKS[key] = block


def render_stream_head(status, headers, keep_alive, http10=False, head=False,
                       accept_encoding=None, compression=None, size=None):
    """The head of a streamed response: (bytes, keep_alive, chunked, coding, length).

    The body is framed by the handler's ``content-length`` (or ``size``, a
    file's length) when known and not compressed; otherwise by chunked
    encoding (HTTP/1.1) or by closing the connection (HTTP/1.0).
    """
    text, names, keep_alive, coding, length = _stream_head_text(status, headers, keep_alive, accept_encoding,
                                                                 compression, size)
    chunked = False
    if length is None and body_allowed(status):
        if http10:
            keep_alive = False  # the end of the body is the end of the connection
        else:
            chunked = True
            text += "Transfer-Encoding: chunked\r\n"
    head = status_line(status) + _finish(text, names, keep_alive, http10)
    return head, keep_alive, chunked, coding, length


def _stream_head_text(status, headers, keep_alive, accept_encoding, compression, size):
    """The decisions about a streamed response's head that do not depend on the
    protocol: (header lines, names, keep_alive, coding, length or None)."""
    status = check_status(status)
    text, names, keep_alive, stated_length = _handler_headers(headers, keep_alive)
    coding = length = None
    if body_allowed(status):
        length = stated_length if stated_length is not None else size
        if compression is not None and "content-encoding" not in names:
            ctype = _value(headers, "content-type") if "content-type" in names else "text/html"
            coding, vary = compression.choose(accept_encoding, ctype, size)
            if stated_length is not None:
                coding = None  # a stated length (a byte range, say) is sent as it is
            if coding is not None:
                length = None
                text += "Content-Encoding: %s\r\n" % coding
                if "etag" in names:
                    text = _weaken_etag(text)
            if vary:
                text += _vary_line(headers, names)
        if "content-type" not in names:
            text += "Content-Type: text/html\r\n"
        if length is not None:
            text += "Content-Length: %d\r\n" % length
    elif status == 304:
        text = _not_modified(text, headers, names, compression, accept_encoding)
    return text, names, keep_alive, coding, length


# -- the same decisions as header fields, for protocols without HTTP/1.1 framing (HTTP/2) --

CONNECTION_SPECIFIC = frozenset(("keep-alive", "upgrade", "proxy-connection", "te"))


def neutral_stream_head(status, headers, head=False, accept_encoding=None, compression=None, size=None):
    """A streamed response's head as (fields, coding, length): ``fields`` a list of
    (lower-case name, value) with Date, Server, Content-Type, Content-Encoding,
    Vary and Content-Length when known, without connection-specific fields.
    Compress the body with compression.StreamEncoder(coding, level) when
    ``coding``; ``head`` (a HEAD request) changes nothing here: send no body."""
    text, names, _, coding, length = _stream_head_text(status, headers, True, accept_encoding, compression, size)
    return _fields(text, names), coding, length


def neutral_response(status, headers, content, head=False, accept_encoding=None, compression=None):
    """A complete response as (status, fields, body): the decisions ``render`` makes,
    without HTTP/1.1 framing; ``body`` is compressed when a coding applies, and
    empty for HEAD and for statuses without a body."""
    status = check_status(status)
    body = to_bytes(content)
    fields, coding, length = neutral_stream_head(status, headers, head, accept_encoding, compression, len(body))
    if coding is not None:
        body = compression.compress(body, coding)
    if body_allowed(status):
        fields = [f for f in fields if f[0] != "content-length"]
        fields.append(("content-length", str(len(body) if body or length is None or not head else length)))
    else:
        body = b""
    return status, fields, b"" if head else body


def _fields(text, names):
    """Header lines as (lower-case name, value) pairs, Date and Server first."""
    fields = []
    if "date" not in names:
        fields.append(("date", date_header()[6:35]))
    if "server" not in names:
        fields.append(("server", SERVER_NAME))
    for line in text.split("\r\n"):
        name, sep, value = line.partition(": ")
        lname = name.lower()
        if sep and lname not in CONNECTION_SPECIFIC:
            fields.append((lname, value))
    return fields


def _handler_headers(headers, keep_alive):
    """The handler's header lines without the ones the server owns (Connection,
    Content-Length, Transfer-Encoding), plus what those said:
    (text, names, keep_alive, stated content length or None)."""
    text, names = header_lines(headers)
    stated_length = None
    if names and not OWNED.isdisjoint(names):
        kept = []
        for line in text.split("\r\n")[:-1]:
            name, _, value = line.partition(": ")
            lname = name.lower()
            if lname == "connection":
                if "close" in value.lower():
                    keep_alive = False
            elif lname == "content-length":
                if value.isdigit() and stated_length is None:
                    stated_length = int(value)
            elif lname != "transfer-encoding":
                kept.append(line + "\r\n")
        text = "".join(kept)
        names = names - OWNED
    return text, names, keep_alive, stated_length


def _vary_line(headers, names):
    """``Vary: Accept-Encoding`` unless the handler's own Vary names it already."""
    if "vary" in names and "accept-encoding" in _value(headers, "vary").lower():
        return ""
    return "Vary: Accept-Encoding\r\n"


def _not_modified(text, headers, names, compression, accept_encoding):
    """A 304's header lines with the Vary (and weak ETag) a 200 of this content type
    would carry when compressed, and without the Content-Type the handler gave to
    decide that: RFC 9110 section 15.4.5 does not list it among a 304's fields."""
    if "content-type" in names:
        text = "".join(line + "\r\n" for line in text.split("\r\n")[:-1]
                       if not line[:13].lower() == "content-type:")
    if (compression is None or not compression.enabled or "content-type" not in names
            or "content-encoding" in names or not compression.eligible(_value(headers, "content-type"))):
        return text
    if "etag" in names and compression.coding_for(accept_encoding, None) is not None:
        text = _weaken_etag(text)
    return text + _vary_line(headers, names)


def _weaken_etag(text):
    """The header lines with a strong ETag made weak: a body compressed on the fly
    is not the bytes the handler's (strong) tag names (nginx does the same)."""
    lines = text.split("\r\n")
    for i, line in enumerate(lines):
        name, sep, value = line.partition(": ")
        if sep and name.lower() == "etag" and value.startswith('"'):
            lines[i] = name + ": W/" + value
    return "\r\n".join(lines)


def _value(headers, name):
    """A handler header's value by lower-case name, whatever case the handler used."""
    value = headers.get(name)
    if value is None:
        value = next(v for k, v in headers.items() if k.lower() == name)
    return value if isinstance(value, str) else str(value)


def _finish(text, names, keep_alive, http10):
    """Date/Server (unless the handler set them), Connection, the blank line; encoded."""
    if "date" in names or "server" in names:
        if "date" not in names:
            text = "Date: %s\r\n" % formatdate(usegmt=True) + text
        if "server" not in names:
            text = "Server: %s\r\n" % SERVER_NAME + text
    else:
        text = date_header() + text
    if not keep_alive:
        text += "Connection: close\r\n\r\n"
    elif http10:
        text += "Connection: keep-alive\r\n\r\n"
    else:
        text += "\r\n"
    return text.encode("utf-8")


def error_response(status, message, head=False):
    """A short plain-text response for a refused request; it always closes the connection."""
    body = ("%d %s: %s\n" % (status, reason(status), message)).encode("utf-8")
    text = "%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
        date_header(), len(body))
    data = status_line(status) + text.encode("ascii")
    return data if head else data + body


if __name__ == "lilush_http.response":  # the pure module, not its compiled twin
    from .accelerator import use_compiled

    use_compiled(__name__, __file__)
