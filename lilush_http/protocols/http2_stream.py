"""One HTTP/2 request stream: what the exchange reads (the request, its body) and
the response sink it writes to (contract section 3).

The body arrives as DATA frames the connection's reader hands over
(``Http2Body.feed``); each is acknowledged to the peer (a WINDOW_UPDATE) only
once the handler has read it, so a slow handler slows its sender down instead
of filling memory. The response goes out as HEADERS and DATA frames through
the connection (``Http2Connection.send_head`` / ``send_data``), within the
peer's flow-control windows.
"""

import logging
from collections import deque

from gevent.event import Event

from ..body import BodyReadError, BodyReader
from ..compression import StreamEncoder
from ..response import ResponseError, body_allowed, neutral_response, neutral_stream_head
from ..transport import ConnectionEnded, StreamFailed, monotonic
from .. import exchange

logger = logging.getLogger("lilush_http")

FILE_BLOCK = 64 * 1024  # bytes of a file read at a time (no sendfile on HTTP/2)
INFORMATIONAL = "handler returned status %d: on HTTP/2 an informational status cannot end a stream"
RAW_ANSWER = ("handler returned (None, None, None) on HTTP/2, where there is no socket to answer on: "
              "answered 500")


class Http2Body(BodyReader):
    """The request body of one stream, as a file-like source (BodyReader's reads,
    filled from the DATA frames the reader hands over)."""

    def __init__(self, stream, length, timeout, limit):
        self.stream = stream
        self.length = length  # the Content-Length the client stated, or None
        self.timeout = timeout
        self.limit = limit  # max_body_size
        self.pending = bytearray()  # bytes handed to no reader yet
        self.inbox = deque()  # (data, flow-controlled length) received, not yet read
        self.received = 0
        self.done = False  # END_STREAM arrived and the inbox is empty
        self.ended = False  # END_STREAM arrived
        self.error = None
        self.waiter = None  # an Event while a read waits for DATA
        self.deadline = None  # when the whole body must have arrived (read_all), else None: per read

    # -- the reader's side (the connection greenlet) ----------------------------------

    def feed(self, data, flow_length):
        """A DATA frame arrived; False when it breaks max_body_size (the stream is refused)."""
        self.received += len(data)
        if self.received > self.limit:
            self.fail(BodyReadError("Request body too large", 413))
            return False
        self.inbox.append((data, flow_length))
        self._wake()
        return True

    def end(self):
        """END_STREAM: the body is complete."""
        self.ended = True
        self._wake()

    def fail(self, error):
        """The stream was reset, or the body broke a limit: every read raises ``error``."""
        if self.error is None:
            self.error = error
        self._wake()

    def unread(self):
        """The flow-controlled bytes received but never read (to hand back to the connection window)."""
        size = sum(length for _, length in self.inbox)
        self.inbox.clear()
        return size

    def _wake(self):
        if self.waiter is not None:
            self.waiter.set()

    # -- the handler's side -----------------------------------------------------------

    def before_response(self, keep_alive, streamed):
        if self.error is not None:
            raise self.error
        return keep_alive

    def drain(self, limit=0, seconds=0):
        return self.done

    def read_all(self):
        """The whole body as bytes (for a handler that does not stream it), within one
        request_body_timeout for all of it, as on HTTP/1.1: a dribbling client is cut."""
        self.deadline = monotonic() + self.timeout
        return self.read()

    def _fill(self):
        """Move the next received DATA into ``pending`` (acknowledging it); False at the end."""
        if self.error is not None:
            raise self.error
        inbox = self.inbox
        while not inbox:
            if self.ended:
                self.done = True
                return False
            if self.waiter is None:
                self.waiter = Event()
            self.waiter.clear()
            self.stream.connection.waiting_body(self.stream, True)
            try:
                arrived = self.waiter.wait(self.timeout if self.deadline is None
                                           else max(0.0, self.deadline - monotonic()))
            finally:
                self.stream.connection.waiting_body(self.stream, False)
            if self.error is not None:
                raise self.error
            if not arrived and not inbox and not self.ended:
                self.fail(BodyReadError("request body timeout", 408))
                raise self.error
        data, flow_length = inbox.popleft()
        self.pending += data
        self.stream.connection.consumed(self.stream, flow_length)
        return True


class Http2Stream:
    """A request stream: its request, body source, and response sink."""

    __slots__ = ("connection", "id", "request", "body", "client", "client_ip", "tls", "sni", "count",
                 "started", "head_sent", "ended", "reset", "encoder", "sent", "window", "settings")

    def __init__(self, connection, stream_id, request, settings, count, started):
        self.connection = connection
        self.id = stream_id
        self.request = request
        self.settings = settings
        self.body = None  # None, bytes, or the Http2Body (set by the connection)
        self.client = None  # no socket of its own to hand a handler
        conn = connection.conn
        self.client_ip = connection.client_ip
        self.tls = conn.tls
        self.sni = conn.sni
        self.count = count
        self.started = started
        self.head_sent = False
        self.ended = False  # the response ended (END_STREAM sent)
        self.reset = None  # why the stream was reset (by either side), or None
        self.encoder = None  # the StreamEncoder of a compressed streamed response
        self.sent = 0  # body bytes sent
        self.window = None  # an Event while a send waits for flow-control window

    # -- the sink ------------------------------------------------------------------------

    def respond(self, status, headers, content):
        """A complete response; returns the body bytes sent."""
        cfg = self.settings
        request = self.request
        status, fields, body = neutral_response(status, headers, content, request.method == "HEAD",
                                                request.headers.get("accept-encoding"), cfg.compression)
        if status < 200:
            raise ResponseError(INFORMATIONAL % status)
        send = self.connection
        send.send_head(self, status, fields, not body)
        if body:
            send.send_data(self, body, True)
        self.ended = True
        return len(body)

    def start(self, status, headers, size):
        """Begin a streamed response: (plan, promised length) as the exchange expects."""
        request = self.request
        cfg = self.settings
        head = request.method == "HEAD"
        fields, coding, length = neutral_stream_head(status, headers, head, request.headers.get("accept-encoding"),
                                                     cfg.compression, size)
        if status < 200:
            raise ResponseError(INFORMATIONAL % status)
        no_body = head or not body_allowed(status)
        self.connection.send_head(self, status, fields, no_body)
        if no_body:
            self.ended = True
            return exchange.NO_BODY, None
        if coding is not None:
            self.encoder = StreamEncoder(coding, cfg.compression.level)
            return exchange.CHUNKS, None
        if size is not None and length == size:
            return exchange.FILE, length
        return exchange.CHUNKS, length

    def write(self, data):
        """One piece of the body (compressed when the head chose a coding)."""
        if self.encoder is not None:
            data = self.encoder.compress(data)
            if not data:
                return
        self.sent += len(data)
        self.connection.send_data(self, data, False)

    def write_file(self, file, count):
        """``count`` bytes of ``file`` from its position, read in bounded blocks."""
        while count > 0:
            block = file.read(min(FILE_BLOCK, count))
            if not block:
                raise StreamFailed("file ended %d bytes before its size" % count, True)
            count -= len(block)
            self.sent += len(block)
            self.connection.send_data(self, block, False)

    def end(self):
        """Finish the body (END_STREAM); returns the body bytes sent."""
        if not self.ended:
            tail = self.encoder.finish() if self.encoder is not None else b""
            self.sent += len(tail)
            self.connection.send_data(self, tail, True)
            self.ended = True
        return self.sent

    def abort(self, message):
        """The response cannot be completed: RST_STREAM INTERNAL_ERROR."""
        self.connection.reset_stream(self, "internal")
        return self.sent

    def refuse(self, status, message):
        """An error answer that ends the request (a body over the limit, a timeout)."""
        if status is None or self.head_sent or self.reset is not None:
            self.connection.reset_stream(self, "cancel")
            return 0
        return self.respond(status, {"content-type": "text/plain; charset=utf-8"},
                            "%d %s\n" % (status, message))

    def raw_answer(self):
        """HTTP/2 has no socket a handler could answer on: a logged error and a 500."""
        logger.error("%s %s: %s", self.request.method, self.request.query, RAW_ANSWER)
        return 500, self.respond(500, {"content-type": "text/plain; charset=utf-8"},
                                 "500 Internal Server Error\n")

    def upgraded(self):
        return None

    # -- the connection's side -------------------------------------------------------------

    def check(self):
        """Raise ConnectionEnded when the stream can no longer be written."""
        if self.reset is not None:
            raise ConnectionEnded(self.reset)
