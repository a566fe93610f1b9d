"""An HTTP/2 request head, sans-I/O: h2's decoded header list in, a request.Request out.

h2 has checked the pseudo-headers and connection-specific fields (RFC 9113
section 8.2-8.3). Here the server's own limits apply as on HTTP/1.1:
``max_headers`` and ``request_line_limit`` per field (431), ``max_body_size``
against a stated Content-Length (413), and a target HTTP/1.1 would accept.
"""

import re

from ..request import HTTPError, Request

VERSION = "HTTP/2"
PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path", b":status", b":protocol"))
CONNECTION_SPECIFIC = frozenset((b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"))
BAD_NAME = re.compile(rb"[\x00-\x20A-Z\x7f-\xff]|(?<=.):")  # RFC 9113 section 8.2.1 (a colon only first)
WHITESPACE = (32, 9)  # a value must not begin or end with SP or HTAB
GOOD_NAMES = set()  # field names found well-formed (a name is checked once, not once per request)
GOOD_NAMES_MAX = 1024


def field_error(fields, trailers=False):
    """Why a received header block is malformed (RFC 9113 sections 8.2-8.3), or None: the
    checks h2's ``validate_inbound_headers`` makes, in one pass (a malformed block ends the
    connection with PROTOCOL_ERROR, as h2 would)."""
    seen = set()
    regular = False
    method = authority = host = None
    for name, value in fields:
        if name not in GOOD_NAMES:
            if not name:
                return "empty header name"
            if BAD_NAME.search(name) is not None:
                return "illegal character in header name %r" % name
            if len(GOOD_NAMES) < GOOD_NAMES_MAX:
                GOOD_NAMES.add(name)
        if value and (b"\r" in value or b"\n" in value or b"\0" in value or value[0] in WHITESPACE
                      or value[-1] in WHITESPACE):
            return "illegal character or surrounding whitespace in the value of %r" % name
        if name[0] == 58:  # b":"
            if name in seen or regular or name not in PSEUDO or trailers:
                return "pseudo-header field %r duplicated, out of sequence, unknown or in trailers" % name
            seen.add(name)
            if name == b":method":
                method = value
            elif name == b":authority":
                authority = value
            elif name == b":path" and not value:
                return "empty :path"
            continue
        regular = True
        if name in CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
            return "connection-specific header field %r" % name
        if name == b"host" and not trailers:
            if host is not None:
                return "more than one Host header"
            host = value
    if trailers:
        return None
    return _pseudo_error(seen, method, authority, host)


def _pseudo_error(seen, method, authority, host):
    """The request's pseudo-header set checked as a whole (h2's rules, RFC 8441's :protocol included)."""
    if b":method" not in seen:
        return "no :method"
    connect = method == b"CONNECT"
    if connect and b":protocol" not in seen:
        if b":scheme" in seen or b":path" in seen:
            return "CONNECT with :scheme or :path"
    elif b":scheme" not in seen or b":path" not in seen:
        return "no :scheme or no :path"
    if b":status" in seen or (not connect and b":protocol" in seen):
        return ":status in a request, or :protocol outside CONNECT"
    if authority is None and host is None:
        return "neither :authority nor Host"
    if authority is not None and host is not None and authority != host:
        return ":authority and Host differ"
    return None


def build_request(fields, limits):
    """``(Request, None)``, or ``(Request, HTTPError)`` with the status to answer. Cookie
    crumbs are joined with "; " into one field, last (RFC 9113 section 8.2.3)."""
    method = path = authority = None
    headers = {}
    count = 0
    line_limit = limits.line
    error = None
    cookies = None
    for name, value in fields:
        if name == b"cookie":
            if cookies is None:
                cookies = [value]
            else:
                cookies.append(value)
            continue
        if len(name) + len(value) > line_limit and error is None:
            error = HTTPError(431, "Header line too long")
        if name[0] == 58:  # b":"
            if name == b":method":
                method = value.decode("ascii", "replace")
            elif name == b":path":
                path = value.decode("utf-8", "surrogateescape")
            elif name == b":authority":
                authority = value.decode("utf-8", "surrogateescape")
            continue
        count += 1
        name = name.decode("ascii", "replace")
        value = value.decode("utf-8", "surrogateescape")
        old = headers.get(name)
        headers[name] = value if old is None else old + ", " + value
    if cookies is not None:
        value = cookies[0] if len(cookies) == 1 else b"; ".join(cookies)
        if len(value) + 6 > line_limit and error is None:
            error = HTTPError(431, "Header line too long")
        count += 1
        headers["cookie"] = value.decode("utf-8", "surrogateescape")
    if authority is not None:
        headers["host"] = authority
    method = method or "GET"
    target = path or "/"
    request = Request(method, target, VERSION, headers, target if target[0] == "/" else "/")
    if error is None:
        error = _check(request, count, limits, path)
    return request, error


def _check(request, count, limits, path):
    headers = request.headers
    if count > limits.headers:
        return HTTPError(431, "Too many header lines")
    if request.method == "CONNECT":
        return HTTPError(501, "CONNECT is not supported")
    if not path or not path.isprintable() or "#" in path or (path[0] != "/" and path != "*"):
        return HTTPError(400, "Invalid request target")
    if path == "*" and request.method != "OPTIONS":
        return HTTPError(400, "Asterisk-form target is only for OPTIONS")
    if "host" not in headers:
        return HTTPError(400, "Missing :authority and Host")
    length = headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            return HTTPError(400, "Invalid Content-Length")
        if len(length) > 18 or int(length) > limits.body:
            return HTTPError(413, "Request body too large")
        request.content_length = int(length)
    return None
