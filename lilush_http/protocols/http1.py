"""The HTTP/1.1 driver: the keep-alive loop, request heads, response framing.

``serve`` loops ``turn`` (one ``process_request``) on a connection the accept
step handed over. A turn reads a head, makes the request's body source
(body_reader.py) and an ``Http1Stream``, and runs the exchange; the stream
renders the response with response.py's sans-I/O functions and adds the
HTTP/1.1 framing (Connection, Content-Length or chunked), sending through the
transport, which holds pipelined responses back to leave in one write.
"""

import logging
from time import perf_counter

from .. import exchange
from ..compression import StreamEncoder
from ..request import HTTPError, check_partial_head, find_head_end, parse_head
from ..response import LAST_CHUNK, body_allowed, chunk, error_response, render, render_stream_head
from ..transport.connection import ConnectionEnded, monotonic
from .body_reader import BodyReader, BodyReadError

logger = logging.getLogger("lilush_http")

CRLF = b"\r\n"


class RefusedHead(HTTPError):
    """A request head the parser refused; ``raw`` holds its bytes (the access log shows its line)."""

    def __init__(self, error, raw):
        super().__init__(error.status, error.message)
        self.raw = raw


def serve(conn, host, client_ip):
    """Serve requests on ``conn`` until the connection ends, the client asks it to,
    ``requests_per_connection`` is reached or the server stops."""
    limit = host.settings.cfg["requests_per_connection"]
    stream = Http1Stream(conn, host, client_ip, True)
    count = 0
    while count < limit:
        count += 1
        settings = host.settings
        state, err = turn(stream, settings, count, settings.redis)
        if settings.recorder is not None:
            settings.recorder.count_received(conn.take_received())
        if state != "keep-alive":
            if err and err != "closed":
                logger.debug("connection from %s ended: %s", client_ip, err)
            return
        if host.stopping:
            return


def turn(stream, settings, count, redis):
    """One request on the stream's connection: ``("keep-alive" | "close", None)`` or
    ``(None, err)`` (see Server.process_request)."""
    conn = stream.conn
    client_ip = stream.client_ip
    cfg = settings.cfg
    request = None
    try:
        request = read_head(conn, cfg["keepalive_idle_timeout"], cfg["request_header_timeout"], settings.limits)
        started = perf_counter()
        body = None
        if request.content_length is not None or request.chunked:
            body = BodyReader(conn, request, cfg["request_body_timeout"], settings.limits)
            if not settings.stream_body:
                body = body.read_all()
    except RefusedHead as exc:
        return refuse(conn, settings, client_ip, None, exc.status, exc.message, exc.raw)
    except BodyReadError as exc:
        if exc.status is not None and exc.status != 408:
            return refuse(conn, settings, client_ip, request, exc.status, exc.message)
        if exc.status == 408:
            error_reply(conn, 408, exc.message)
        return None, exc.message
    except ConnectionEnded as exc:
        if exc.phase_started and exc.message.endswith("timeout"):
            error_reply(conn, 408, exc.message)
        return None, exc.message
    # A new request on the stream (its fields are set here: this is the hot path).
    stream.settings = settings
    stream.request = request
    stream.body = body
    stream.count = count
    stream.started = started
    stream.keep_alive = request.keep_alive and count < cfg["requests_per_connection"]
    stream.head_sent = False
    stream.ended = None  # why the connection must end after this request, if it must
    stream._head = b""
    stream._sent = 0
    try:
        exchange.run(stream, settings, redis)
    except ConnectionEnded as exc:
        return None, exc.message
    if conn.taken_over is not None:
        return None, "upgraded"
    if stream.ended is not None:
        return None, stream.ended
    keep_alive = stream.keep_alive
    if type(body) is BodyReader and not body.done:
        keep_alive = keep_alive and body.drain()
        if not keep_alive:
            conn.linger_on_close()  # closing: drain (bounded) so the response is not reset away
    # The wait for the next request holds none of this one's bytes: a 64 KB body kept
    # by each idle connection spreads the next requests over cold memory (measured).
    stream.request = stream.body = None
    return ("keep-alive" if keep_alive else "close"), None


def refuse(conn, settings, client_ip, request, status, message, raw_head=None):
    """Answer a request that cannot be served, log it, end the connection."""
    size = error_reply(conn, status, message, request is not None and request.method == "HEAD")
    exchange.refused(settings, request, client_ip, status, size, raw_head)
    return None, message


def error_reply(conn, status, message, head=False):
    """Every HTTP/1.1 error reply that ends a connection: sent if the client still
    takes it, the client's unread input drained before the close. Returns its size."""
    data = error_response(status, message, head)
    conn.linger_on_close()
    conn.send_quietly(data)
    return len(data)


# -- request heads ----------------------------------------------------------------------


def read_head(conn, idle_timeout, header_timeout, limits):
    """Read and parse the next request head; raises ConnectionEnded or RefusedHead."""
    buf = conn.begin_request()
    if not buf and conn.requests == 1:  # a new connection: its request is mostly there already
        buf = conn.arrived()
    if buf and buf[0] in CRLF:
        buf = skip_blank_lines(buf)
    if not buf or buf == b"\r":
        deadline = monotonic() + idle_timeout
        while not buf or buf == b"\r":  # a CR read may start a CRLF blank line
            data = conn.receive_idle(deadline)
            buf = skip_blank_lines(buf + data) if buf or data[0] in CRLF else data
    end = find_head_end(buf)
    if end < 0:
        buf, end = _read_rest_of_head(conn, buf, header_timeout, limits)
    conn.head_read(buf[end:])  # the body reader sets BODY while it has to wait for one
    try:
        return parse_head(buf[:end], limits)
    except HTTPError as exc:
        raise RefusedHead(exc, buf[:end]) from None


def _read_rest_of_head(conn, buf, timeout, limits):
    deadline = monotonic() + timeout
    start = lines = 0
    end = -1
    while end < 0:
        try:
            start, lines = check_partial_head(buf, limits, start, lines)
        except HTTPError as exc:
            raise RefusedHead(exc, buf) from None
        searched = max(0, len(buf) - 3)
        buf += conn.receive(deadline, "request header timeout", True)
        end = find_head_end(buf, searched)
    return buf, end


def skip_blank_lines(data):
    """``data`` without the empty CRLF lines before a request, which RFC 9112 section
    2.2 says to ignore; a bare LF or bare CR stays, and the parser refuses it."""
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    return data[start:] if start else data


# -- responses -----------------------------------------------------------------------------


class Http1Stream:
    """The stream of the request in progress on one connection (see exchange.py):
    the request, its body source, and the response sink that frames HTTP/1.1 and
    sends through the transport. One per connection; ``turn`` sets the request's fields.
    ``served``: the server's own loop, whose responses may be batched."""

    __slots__ = ("conn", "host", "settings", "request", "body", "client", "client_ip", "tls", "sni",
                 "count", "started", "served", "keep_alive", "head_sent", "ended",
                 "_head", "_chunked", "_encoder", "_sent")

    def __init__(self, conn, host, client_ip, served):
        self.conn = self.client = conn
        self.host = host
        self.client_ip = client_ip
        self.tls = conn.tls
        self.sni = conn.sni
        self.served = served

    def _final_keep_alive(self, status, streamed):
        """Whether the connection can stay open after a response with ``status``."""
        keep_alive = self.keep_alive and not (self.host.stopping or self.conn.close_requested)
        if type(status) is int and 100 <= status < 200:
            keep_alive = False  # after an informational final answer, HTTP cannot go on
        if type(self.body) is BodyReader:
            keep_alive = self.body.before_response(keep_alive, streamed)
        return keep_alive

    def respond(self, status, headers, content):
        """A complete response: rendered, then sent (or held for a pipelined batch)."""
        request = self.request
        conn = self.conn
        keep_alive = self.keep_alive and not (self.host.stopping or conn.close_requested)
        if self.body is not None or type(status) is not int or status < 200:
            keep_alive = self._final_keep_alive(status, False)
        data, keep_alive = render(status, headers, content, keep_alive,
                                  request.version == "HTTP/1.0", request.method == "HEAD",
                                  request.headers.get("accept-encoding"), self.settings.compression)
        self.keep_alive = keep_alive
        # The next request waits complete in the buffer: this response may wait to leave with its own.
        if keep_alive and self.served and conn.buf and find_head_end(conn.buf) >= 0:
            conn.send_batched(data, self.settings.cfg["response_send_timeout"])
        else:
            conn.sendall(data, self.settings.cfg["response_send_timeout"])
        self.head_sent = True
        return len(data)

    def start(self, status, headers, size):
        """The head of a streamed response; it leaves with the first piece of the body."""
        request = self.request
        head_only = request.method == "HEAD"
        compression = self.settings.compression
        head, self.keep_alive, self._chunked, coding, length = render_stream_head(
            status, headers, self._final_keep_alive(status, True), request.version == "HTTP/1.0", head_only,
            request.headers.get("accept-encoding"), compression, size)
        self.conn.flush(self.settings.cfg["response_send_timeout"])  # held responses go first
        self._head = head
        self._encoder = None
        if head_only or not body_allowed(status):
            self._chunked = False
            return exchange.NO_BODY, None
        if size is not None and length == size and coding is None and not self.conn.tls:
            return exchange.FILE, length
        if coding is not None:
            self._encoder = StreamEncoder(coding, compression.level)
        return exchange.CHUNKS, length

    def write(self, data):
        if self._encoder is not None:
            data = self._encoder.compress(data)
            if not data:
                return
        if self._chunked:
            data = chunk(data)
        self._send(self._head + data if self._head else data)

    def write_file(self, file, count):
        head, self._head = self._head, b""
        self.head_sent = True
        self._sent += self.conn.send_file(head, file, count, self.settings.cfg["response_send_timeout"])

    def end(self):
        tail = self._encoder.finish() if self._encoder is not None else b""
        if self._chunked:
            tail = (chunk(tail) if tail else b"") + LAST_CHUNK
        if self._head or tail:
            self._send(self._head + tail)
        return self._sent

    def _send(self, data):
        self._head = b""
        self.head_sent = True
        self.conn.sendall(data, self.settings.cfg["response_send_timeout"])
        self._sent += len(data)

    def abort(self, message):
        """Too late for an error response: the connection ends after this request."""
        self.keep_alive = False
        self.ended = message
        return self._sent

    def refuse(self, status, message):
        """The request's body failed (``status`` 400/408/413, None: the client left)."""
        self.keep_alive = False
        self.ended = message
        if status is None:
            return 0
        return error_reply(self.conn, status, message, self.request.method == "HEAD")

    def raw_answer(self):
        conn = self.conn
        if conn.socket_closed:  # the handler closed the socket
            self.ended = "closed"
        else:
            self.keep_alive = True
        return conn.take_answer()

    def upgraded(self):
        return self.conn.taken_over
