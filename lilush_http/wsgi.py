"""Serve a WSGI (PEP 3333) application through a Lilush-style handler.

``handle = wsgi.to_handle(app)`` gives ``handle(method, query, args, headers,
body, ctx)``. A list result is sent as one body; any other iterable is streamed
(chunked) as the application produces it. ``close()`` of the result is always
called.
"""

import io
import sys
from urllib.parse import unquote_to_bytes

from . import websocket
from .body import streamed_body

# Headers the server sets itself; WSGI sees the client's view of the request.
_SKIP = frozenset(("content-type", "content-length"))


class _Response:
    """What ``start_response`` was told."""

    __slots__ = ("status", "headers", "written", "started")

    def __init__(self):
        self.status = None
        self.headers = None
        self.written = []  # data passed to the legacy write() callable
        self.started = False  # the status and headers have left (the first body chunk was produced)

    def start_response(self, status, response_headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.started:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        code, _, _reason = status.partition(" ")
        if len(code) != 3 or not code.isdigit():
            raise ValueError("invalid WSGI status %r" % (status,))
        headers = {}
        for name, value in response_headers:
            name = name.lower()
            if name in headers:
                existing = headers[name]
                headers[name] = (existing if isinstance(existing, list) else [existing]) + [value]
            else:
                headers[name] = value
        self.status = int(code)
        self.headers = headers
        return self.written.append


def environ_for(method, query, args, headers, body, ctx):
    """The PEP 3333 environ of one request."""
    client = ctx["client"]
    try:
        server_name, server_port = client.getsockname()[:2]
    except (OSError, AttributeError, TypeError, ValueError):
        server_name, server_port = ctx["cfg"]["ip"], ctx["cfg"]["port"]
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(query).decode("latin-1"),
        "QUERY_STRING": args,
        "SERVER_NAME": str(server_name),
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": ctx.get("version", "HTTP/1.1"),
        "REMOTE_ADDR": ctx["client_ip"],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": ctx.get("scheme") or ("https" if getattr(client, "tls", False) else "http"),
        "wsgi.input": io.BytesIO(body or b"") if body is None or isinstance(body, bytes) else body,
        "wsgi.input_terminated": True,  # reading to b"" is safe: the input ends where the body does
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if "content-type" in headers:
        environ["CONTENT_TYPE"] = _latin1(headers["content-type"])
    if body is not None:
        length = len(body) if isinstance(body, bytes) else body.length
        if length is not None:  # a chunked body has none
            environ["CONTENT_LENGTH"] = str(length)
    for name, value in headers.items():
        # A name with "_" would share its key with the one spelled with "-" (and could
        # overwrite a proxy's X-Forwarded-For): dropped, as gunicorn and nginx do.
        # Without "_" in names, "-" -> "_" maps distinct names to distinct keys.
        if name not in _SKIP and "_" not in name:
            environ["HTTP_" + name.upper().replace("-", "_")] = value if value.isascii() else _latin1(value)
    return environ


def _latin1(value):
    """PEP 3333's native string for a header value: its bytes as latin-1 (the parser
    decoded them as UTF-8 with surrogateescape)."""
    return value.encode("utf-8", "surrogateescape").decode("latin-1")


def to_handle(app):
    """A Lilush-style handler running the WSGI application ``app``."""

    def handle(method, query, args, headers, body, ctx):
        response = _Response()
        environ = environ_for(method, query, args, headers, body, ctx)
        if "upgrade" in headers:
            _offer_websocket(environ, method, headers, ctx)
        result = app(environ, response.start_response)
        if getattr(ctx["client"], "taken_over", None) is not None:  # the connection speaks WebSocket now
            _close(result)
            return None, None, None
        if isinstance(result, list):
            try:
                if response.status is None:
                    raise AssertionError("WSGI application returned without calling start_response")
                return b"".join(response.written + result), response.status, response.headers
            finally:
                _close(result)
        return _stream(result, response)

    return streamed_body(handle)  # wsgi.input reads from the connection as the app reads


def _offer_websocket(environ, method, headers, ctx):
    """For a WebSocket opening handshake: ``wsgi.websocket`` (gevent-websocket's
    interface; answered on first use) and ``werkzeug.socket`` (where
    simple-websocket, thus Flask-Sock, finds the socket to answer it itself)."""
    if websocket.check(method, headers, ctx.get("version", "HTTP/1.1"))[0] is None:
        environ["wsgi.websocket"] = websocket.WSGIWebSocket(environ, method, headers, ctx)
        environ["wsgi.websocket_version"] = "13"
        environ["werkzeug.socket"] = websocket.RawSocket(ctx["client"])


def _close(result):
    """Call the WSGI result's close(), as PEP 3333 asks, when it has one."""
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _stream(result, response):
    """Pull chunks until the first non-empty one (the app may call start_response
    lazily), then hand the rest to the server's streaming path."""
    iterator = iter(result)
    first = b""
    try:
        for chunk in iterator:
            if chunk:
                first = chunk
                break
        if response.status is None:
            raise AssertionError("WSGI application produced a body without calling start_response")
    except BaseException:
        _close(result)
        raise
    response.started = True
    return _Body(response.written + [first], iterator, result), response.status, response.headers


class _Body:
    """The streamed body: what came first, then the rest of the app's iterator;
    ``close`` closes the app's result (the server calls it in every case)."""

    __slots__ = ("_head", "_rest", "_result")

    def __init__(self, head, rest, result):
        self._head = head
        self._rest = rest
        self._result = result

    def __iter__(self):
        for chunk in self._head:
            if chunk:
                yield chunk
        for chunk in self._rest:
            yield chunk

    def close(self):
        _close(self._result)
