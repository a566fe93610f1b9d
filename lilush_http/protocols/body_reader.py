"""HTTP/1.1 request bodies (Content-Length or chunked), read from the transport.

The one reader of request bodies: ``read_all`` takes a whole body before the
handler runs; a handler that opted in with ``@streamed_body`` (the WSGI bridge
always does) gets this object itself (``read(n)``, ``readline()``, iteration)
and the body is read as it reads. ``100 Continue`` goes out from one place
(``_ask_for_body``), a chunked body is decoded incrementally, and
``max_body_size`` is enforced as the bytes arrive. What a handler leaves
unread is drained by the driver afterwards (bounded) or the connection is closed.
"""

import time

from ..request import ChunkedDecoder, HTTPError
from ..response import CONTINUE
from ..transport.connection import BLOCK_SIZE, BODY, HANDLER, ConnectionEnded, monotonic

READ_SIZE = 64 * 1024  # most bytes taken from the socket for one read()
DRAIN_BYTES = 1024 * 1024  # what the server reads and drops after the handler, at most
DRAIN_SECONDS = 2.0


class BodyReadError(OSError):
    """Reading the request body failed: too large (``status`` 413), malformed
    (400), or the client went away or was too slow (``status`` None)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        self.status = status


class BodyReader:
    """A file-like view of one request's body, read from the transport on demand.

    ``timeout`` bounds each wait for the client's bytes. After a failure every
    read raises the same BodyReadError, and ``error`` holds it for the server.
    """

    def __init__(self, conn, request, timeout, limits):
        self.conn = conn
        self.timeout = timeout
        self.length = request.content_length  # None for a chunked body
        self.remaining = request.content_length
        self.decoder = ChunkedDecoder(limits) if request.chunked else None
        self.expect_continue = request.expect_continue
        self.pending = bytearray()  # decoded bytes not yet handed out
        self.done = request.content_length == 0
        self.error = None
        self.started = False  # a read was attempted (100 Continue is due then)

    def read(self, size=-1):
        """``size`` bytes, fewer only at the end of the body (all that is left when
        ``size`` is negative or None), as a file's read does; b"" at the end."""
        if size is None or size < 0:
            parts = [self._take(len(self.pending))] if self.pending else []
            while self._fill():
                parts.append(self._take(len(self.pending)))
            return b"".join(parts)
        while len(self.pending) < size and self._fill():
            pass
        return self._take(min(size, len(self.pending)))

    def read1(self, size=-1):
        """What is at hand (at most ``size`` bytes), waiting only when nothing is."""
        if not self.pending:
            self._fill()
        return self._take(len(self.pending) if size is None or size < 0 else min(size, len(self.pending)))

    def readline(self, size=-1):
        """Bytes up to and including the next LF (at most ``size`` when it is not negative)."""
        limit = size if size is not None and size >= 0 else None
        scanned = 0
        while True:
            nl = self.pending.find(b"\n", scanned)
            if nl >= 0:
                end = nl + 1
                break
            if limit is not None and len(self.pending) >= limit:
                end = limit
                break
            scanned = len(self.pending)
            if not self._fill():
                end = len(self.pending)
                break
        return self._take(end if limit is None else min(end, limit))

    def readlines(self, hint=-1):
        return list(self)

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def close(self):
        pass

    def before_response(self, keep_alive, streamed):
        """Called as the response is about to go out: whether the connection can stay
        open. Raises the body's error, if reading it failed."""
        if self.error is not None:
            raise self.error
        if self.done:
            return keep_alive
        if not self.started and self.expect_continue:
            if not streamed:
                return False  # the client holds the body back: close rather than ask for it
            # A streamed response may still read the body: 100 Continue must precede its head.
            self._ask_for_body()
        if not streamed and self.remaining is not None and self.remaining - self.conn.buffered() > DRAIN_BYTES:
            return False
        return keep_alive

    def drain(self, limit=DRAIN_BYTES, seconds=DRAIN_SECONDS):
        """Read and drop the rest of the body; whether it ended within the bounds
        (else the connection cannot be reused)."""
        if self.error is not None:
            return False
        if self.done:
            return True
        if not self.started and self.expect_continue:
            return False  # the client waits for 100 Continue before sending: nothing to drain
        self.timeout = min(self.timeout, seconds)
        deadline = time.monotonic() + seconds
        dropped = 0
        try:
            while dropped <= limit and time.monotonic() < deadline:
                dropped += len(self.pending)
                del self.pending[:]
                if not self._fill():
                    return True
        except BodyReadError:
            pass
        return False

    def read_all(self):
        """The whole body as bytes, before the handler runs; raises BodyReadError."""
        try:
            if self.decoder is None:
                data = self._read_exact()
            else:
                data = self._read_chunked()
        except (HTTPError, ConnectionEnded) as exc:
            raise self._failed(exc) from None
        self.done = True
        return data

    def _read_exact(self):
        conn = self.conn
        size = self.remaining
        if conn.buffered() >= size:
            return conn.take(size)
        self._ask_for_body()
        conn.set_phase(BODY)
        deadline = monotonic() + self.timeout
        parts = [conn.take()]
        got = len(parts[0])
        while got < size:
            # Never more than the body: what follows belongs to the next request.
            data = conn.receive(deadline, "request body timeout", True, min(size - got, BLOCK_SIZE))
            parts.append(data)
            got += len(data)
        conn.set_phase(HANDLER)
        return b"".join(parts)

    def _read_chunked(self):
        conn = self.conn
        decoder = self.decoder
        buf = conn.take()
        pos = decoder.feed(buf)
        if not decoder.done:
            self._ask_for_body()
            conn.set_phase(BODY)
            deadline = monotonic() + self.timeout
            while not decoder.done:
                buf = buf[pos:] + conn.receive(deadline, "request body timeout", True)
                pos = decoder.feed(buf)
            conn.set_phase(HANDLER)
        conn.put_back(buf[pos:])
        return decoder.body

    def _ask_for_body(self):
        """Send ``100 Continue`` if the client asked for it and has not had it: the
        one place it is sent."""
        if not self.started:
            self.started = True
            if self.expect_continue:
                self.conn.sendall(CONTINUE, self.timeout)

    def _failed(self, exc):
        """The BodyReadError for what went wrong; every later read raises it too."""
        if isinstance(exc, HTTPError):
            self.error = BodyReadError(exc.message, exc.status)
            self.conn.linger_on_close()  # the client may still be sending: drain before closing
        else:
            timed_out = exc.message.endswith("timeout")
            self.error = BodyReadError(exc.message, 408 if timed_out else None)
        return self.error

    # -- streamed reads --------------------------------------------------------

    def _take(self, count):
        data = bytes(self.pending[:count])
        del self.pending[:count]
        return data

    def _fill(self):
        """Add the next bytes of the body to ``pending``; False at its end."""
        if self.error is not None:
            raise self.error
        if self.done:
            return False
        conn = self.conn
        try:
            if not self.started and conn.buffered():
                self.started = True  # the body is on its way: no 100 Continue
            self._ask_for_body()
            if self.decoder is None:
                return self._fill_exact(conn)
            return self._fill_chunked(conn)
        except (HTTPError, ConnectionEnded) as exc:
            raise self._failed(exc) from None

    def _fill_exact(self, conn):
        data = conn.take(self.remaining)
        if not data:
            data = conn.read_some(min(self.remaining, READ_SIZE), self.timeout)
        self.pending += data
        self.remaining -= len(data)
        self.done = not self.remaining
        return True

    def _fill_chunked(self, conn):
        decoder = self.decoder
        buf = conn.take()
        while True:
            pos = decoder.feed(buf)
            buf = buf[pos:]
            added = len(decoder.data)
            if added:
                self.pending += decoder.data
                del decoder.data[:]
            if decoder.done:
                conn.put_back(buf)
                self.done = True
                return bool(added)
            if added:
                conn.put_back(buf)
                return True
            buf = buf + conn.read_some(READ_SIZE, self.timeout)
