"""The one writer of an HTTP/2 connection: what h2 has to send leaves in one write per hub turn.

Every stream greenlet (and the reader) calls ``flush()`` after talking to h2;
the bytes are collected and sent from a hub callback once the greenlets that
are ready have run, so ten responses finished together leave in one send. When
the socket does not take everything, a writer greenlet waits for it; while more
than ``HIGH_WATER`` bytes wait, ``wait_room`` holds back the streams and the
reader (a peer that does not read gets no more work done for it).
"""

import gevent
from gevent import get_hub
from gevent.event import Event

from ..transport import ConnectionEnded, monotonic

HIGH_WATER = 256 * 1024  # bytes waiting for the socket above which writers and the reader wait
LOW_WATER = 64 * 1024  # ... until no more than this many wait
SEND_PIECE = 64 * 1024  # the writer greenlet's largest single send, so progress is seen often


class Output:
    """Bytes waiting for one connection's socket, and the writer that sends them."""

    __slots__ = ("conn", "h2", "parts", "size", "scheduled", "writer", "room", "failed", "progress",
                 "on_change")

    def __init__(self, conn, h2, on_change):
        self.conn = conn
        self.h2 = h2
        self.parts = []
        self.size = 0  # bytes not yet taken by the socket
        self.scheduled = None  # the hub callback that will send
        self.writer = None  # the greenlet waiting for the socket to take the rest
        self.room = Event()
        self.room.set()
        self.failed = False  # the socket broke: nothing more can be sent
        self.progress = 0.0  # when the socket last took bytes while the writer waited
        self.on_change = on_change  # called when the writer starts or stops waiting (deadline, phase)

    @property
    def blocked(self):
        """The socket does not take what waits: a writer greenlet waits for it."""
        return self.writer is not None

    def flush(self):
        """Take what h2 has to send; it leaves when the running greenlets have yielded."""
        data = self.h2.data_to_send()
        if data:
            self._queue(data)

    def add(self, data):
        """Bytes built outside h2 (a graceful GOAWAY), after what h2 has queued."""
        self.flush()
        self._queue(data)

    def _queue(self, data):
        if self.failed:
            return
        self.parts.append(data)
        self.size += len(data)
        if self.size > HIGH_WATER:
            self.room.clear()
        if self.scheduled is None and self.writer is None:
            self.scheduled = get_hub().loop.run_callback(self._send_now)

    def drain(self, timeout):
        """Let what waits leave, for at most ``timeout`` seconds (the connection is ending)."""
        if self.scheduled is not None and self.writer is None:
            self.scheduled.stop()
            self._send_now()
        writer = self.writer
        if writer is not None:
            writer.join(timeout)

    def _send_now(self):
        """The hub callback: send what the socket takes now; a writer greenlet waits for the rest."""
        self.scheduled = None
        if self.writer is not None or self.failed or not self.parts:
            return
        parts = self.parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.parts = []
        try:
            sent = self.conn.send_now(data)
        except (ConnectionEnded, OSError, ValueError):  # in a hub callback: nothing may escape
            self._fail()
            return
        if sent == len(data):
            self.size = 0
            self.room.set()
            return
        self.parts.append(data[sent:])
        self.size = len(data) - sent + sum(len(p) for p in self.parts[1:])
        self.progress = monotonic()
        self.writer = gevent.spawn(self._drain)
        self.on_change()

    def _drain(self):
        """The writer greenlet: send what waits, a piece at a time, until nothing does."""
        try:
            while self.parts:
                parts = self.parts
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                self.parts = [data[SEND_PIECE:]] if len(data) > SEND_PIECE else []
                piece = data[:SEND_PIECE] if len(data) > SEND_PIECE else data
                self.conn.sendall(piece, None)
                self.size -= len(piece)
                self.progress = monotonic()
                self.on_change()  # the connection's deadline moves with the progress
                if self.size <= LOW_WATER:
                    self.room.set()
        except (ConnectionEnded, OSError, ValueError):
            self._fail()
        finally:
            self.writer = None
            self.on_change()

    def _fail(self):
        self.failed = True
        self.parts = []
        self.size = 0
        self.room.set()  # the waiters find ``failed``

    def wait_room(self, timeout):
        """Wait until the socket has taken enough (at most ``timeout`` seconds); raises
        ConnectionEnded when it broke or did not drain in time."""
        if self.size > HIGH_WATER and not self.failed:
            if not self.room.wait(timeout):
                raise ConnectionEnded("response send timeout")
        if self.failed:
            raise ConnectionEnded("closed")

    def close(self):
        """Stop writing: the connection ends."""
        self.failed = True
        if self.writer is not None:
            self.writer.kill(block=False)
        self.room.set()

