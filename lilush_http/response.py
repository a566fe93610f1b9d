"""Response writing, sans-I/O: a handler's (content, status, headers) in, wire bytes out.

Status line with its reason phrase, CRLF everywhere, Date and Server, an exact
Content-Length, no body where HTTP forbids one. What the handler returns is
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
_date = [0, ""]


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
    now = int(time.time())
    if now != _date[0]:
        _date[0] = now
        _date[1] = "Date: %s\r\nServer: %s\r\n" % (formatdate(now, usegmt=True), SERVER_NAME)
    return _date[1]


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


def header_lines(headers):
    """Render the handler's headers; returns (text, names) with names lower-cased.

    A list value gives one line per item (set-cookie). A name that is not a
    token, or a CR, LF or NUL in a value, raises ResponseError: no response
    splitting reaches the wire.
    """
    if not headers:
        return "", ()
    if not isinstance(headers, dict):
        raise ResponseError("handler returned headers of type %s; expected a dict" % type(headers).__name__)
    out = []
    for name, value in headers.items():
        if not isinstance(name, str) or not name or name.strip(TOKEN_CHARS):
            raise ResponseError("invalid response header name %r" % (name,))
        for item in (value if isinstance(value, (list, tuple)) else (value,)):
            if not isinstance(item, str):
                if type(item) is int:
                    item = str(item)
                else:
                    raise ResponseError("response header %r has a value of type %s; expected str"
                                        % (name, type(item).__name__))
            if not item.isprintable() and ("\r" in item or "\n" in item or "\x00" in item):
                raise ResponseError("response header %r contains CR, LF or NUL" % name)
            out.append("%s: %s\r\n" % (name, item))
    return "".join(out), {name.lower() for name in headers}


def render(status, headers, content, keep_alive, http10=False, head=False):
    """The complete response as bytes, and whether the connection stays open.

    ``keep_alive`` is the request's wish; a handler header ``connection: close``
    overrides it. ``head`` sends the headers a GET would get, without the body.
    """
    status = check_status(status)
    body = to_bytes(content)
    text, names = header_lines(headers)
    if names:
        if "connection" in names or "content-length" in names:
            text, keep_alive, kept_length = _owned_headers(text, keep_alive, body, status, head)
            names = names - {"connection"} if kept_length else names - {"connection", "content-length"}
        if "date" in names or "server" in names:
            if "date" not in names:
                text = "Date: %s\r\n" % formatdate(usegmt=True) + text
            if "server" not in names:
                text = "Server: %s\r\n" % SERVER_NAME + text
        else:
            text = date_header() + text
    else:
        text = date_header()
    if body_allowed(status):
        if "content-type" not in names:
            text += "Content-Type: text/html\r\n"
        if "content-length" not in names:
            text += "Content-Length: %d\r\n" % len(body)
    else:
        body = b""
    if not keep_alive:
        text += "Connection: close\r\n\r\n"
    elif http10:
        text += "Connection: keep-alive\r\n\r\n"
    else:
        text += "\r\n"
    head_bytes = status_line(status) + text.encode("utf-8")
    if head or not body:
        return head_bytes, keep_alive
    return head_bytes + body, keep_alive


def _owned_headers(text, keep_alive, body, status, head):
    """Drop the handler's Connection header (honouring its ``close``) and its
    Content-Length, unless that describes a body not sent here (HEAD, 304).

    Returns (text, keep_alive, whether the handler's Content-Length was kept).
    """
    kept = []
    kept_length = False
    for line in text.split("\r\n")[:-1]:
        name, _, value = line.partition(": ")
        lname = name.lower()
        if lname == "connection":
            if "close" in value.lower():
                keep_alive = False
            continue
        if lname == "content-length":
            if body or not (head or status == 304) or not value.isdigit() or kept_length:
                continue
            kept_length = True
        kept.append(line + "\r\n")
    return "".join(kept), keep_alive, kept_length


def error_response(status, message, head=False):
    """A short plain-text response for a refused request; it always closes the connection."""
    body = ("%d %s: %s\n" % (status, reason(status), message)).encode("utf-8")
    text = "%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
        date_header(), len(body))
    data = status_line(status) + text.encode("ascii")
    return data if head else data + body
