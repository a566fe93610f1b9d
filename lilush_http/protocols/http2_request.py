"""An HTTP/2 request head, sans-I/O: h2's decoded header list in, a request.Request out.

h2 has checked the pseudo-headers and connection-specific fields (RFC 9113
section 8.2-8.3). Here the server's own limits apply as on HTTP/1.1:
``max_headers`` and ``request_line_limit`` per field (431), ``max_body_size``
against a stated Content-Length (413), and a target HTTP/1.1 would accept.
"""

from ..request import HTTPError, Request

VERSION = "HTTP/2"


def build_request(fields, limits):
    """``(Request, None)``, or ``(Request, HTTPError)`` with the status to answer."""
    method = path = authority = None
    headers = {}
    count = 0
    line_limit = limits.line
    error = None
    for name, value in fields:
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
        if old is None:
            headers[name] = value
        else:  # RFC 9113 section 8.2.3: cookie crumbs join with "; "
            headers[name] = old + ("; " if name == "cookie" else ", ") + value
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
