"""Streamed request bodies: the body read from the connection as the handler reads it.

A handler opts in with ``@streamed_body`` (the WSGI bridge always does); its
``body`` is then a ``BodyReader`` (``read(n)``, ``readline()``, iteration)
instead of bytes. ``100 Continue`` goes out at the first read, a chunked body
is decoded incrementally, and ``max_body_size`` is enforced as the bytes
arrive. What the handler leaves unread is drained by the server afterwards
(bounded) or the connection is closed.
"""

import time

from .connection import ConnectionEnded
from .request import ChunkedDecoder, HTTPError
from .response import CONTINUE

READ_SIZE = 64 * 1024  # most bytes taken from the socket for one read()
DRAIN_BYTES = 1024 * 1024  # what the server reads and drops after the handler, at most
DRAIN_SECONDS = 2.0


def streamed_body(handle):
    """Decorator: ``handle`` gets its request body as a ``BodyReader`` rather than bytes."""
    handle.stream_body = True
    return handle


class BodyReadError(OSError):
    """Reading the request body failed: too large (``status`` 413), malformed
    (400), or the client went away or was too slow (``status`` None)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        self.status = status


class BodyReader:
    """A file-like view of one request's body, read from the connection on demand.

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
            self.started = True
            self.conn.sendall(CONTINUE, self.timeout)
        if not streamed and self.remaining is not None and self.remaining - len(self.conn.buf) > DRAIN_BYTES:
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

    # -- internals -------------------------------------------------------------

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
            if not self.started:
                self.started = True
                if self.expect_continue and not conn.buf:
                    conn.sendall(CONTINUE, self.timeout)
            if self.decoder is None:
                return self._fill_exact(conn)
            return self._fill_chunked(conn)
        except HTTPError as exc:
            self.error = BodyReadError(exc.message, exc.status)
            conn.linger = True  # the client may still be sending: drain before closing, so it sees the answer
        except ConnectionEnded as exc:
            timed_out = exc.message.endswith("timeout")
            self.error = BodyReadError(exc.message, 408 if timed_out else None)
        raise self.error

    def _fill_exact(self, conn):
        buf = conn.buf
        if buf:
            data = buf[:self.remaining]
            conn.buf = buf[len(data):]
        else:
            data = conn.read_some(min(self.remaining, READ_SIZE), self.timeout)
        self.pending += data
        self.remaining -= len(data)
        self.done = not self.remaining
        return True

    def _fill_chunked(self, conn):
        decoder = self.decoder
        buf = conn.buf
        while True:
            pos = decoder.feed(buf)
            buf = buf[pos:]
            added = len(decoder.data)
            if added:
                self.pending += decoder.data
                del decoder.data[:]
            if decoder.done:
                conn.buf = buf
                self.done = True
                return bool(added)
            if added:
                conn.buf = buf
                return True
            conn.buf = b""
            buf = buf + conn.read_some(READ_SIZE, self.timeout)
