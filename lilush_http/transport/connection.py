"""One accepted socket and its read buffer: the only object that reads or writes
a client connection's bytes (the PROXY header before it: transport/proxy.py).

Every ``recv`` lands in the transport's buffer, and what one request leaves
there (a pipelined next request) is kept for the next. Reads of a phase share
one deadline, so a client trickling a byte at a time is cut when the phase's
timeout runs out, not when a single read stalls. Protocol drivers (protocols/)
frame requests and responses; this module knows no HTTP.

The handler sees this object as ``ctx["client"]``: it behaves like the socket
(``recv`` hands out buffered bytes first) so a proxying handler can take over.
"""

import enum
import os
import socket
import ssl
import struct
import time
from functools import partial

import _socket
import gevent.socket
import gevent.ssl
from gevent import get_hub
from gevent.socket import wait_write

from .alarm import Rang

RECV_SIZE = 65536
# The read of a new request's first bytes: a 64 KB body arrives with its head in one read.
REQUEST_READ_SIZE = 96 * 1024
BLOCK_SIZE = 256 * 1024  # the largest single read of a body or a file, everywhere
# "Nothing to read / no room to write yet": a plain socket's EAGAIN, or TLS wanting I/O.
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets, dropping unsent data
# Pipelined responses held back to leave in one write: at most this many, of at most so many bytes.
BATCH_RESPONSES = 32
BATCH_BYTES = 64 * 1024
# Socket methods through which a handler may write on the connection itself: held responses go first.
SOCKET_WRITES = frozenset(("send", "sendto", "sendmsg", "sendfile", "makefile", "fileno", "detach", "dup",
                           "shutdown"))
# What the socket face forwards: the public attributes of a socket and of a TLS socket.
SOCKET_ATTRIBUTES = sorted({name for kind in (socket.socket, ssl.SSLSocket, gevent.socket.socket, gevent.ssl.SSLSocket)
                            for name in dir(kind) if not name.startswith("_")})

monotonic = time.monotonic


class Phase(enum.Enum):
    """What a connection waits for; the value is the metrics label."""
    IDLE = "idle"  # the first byte of a request
    HEAD = "head"  # the rest of a request head
    BODY = "body"  # a request body
    HANDLER = "handler"  # the server's turn
    SENDING = "sending"  # the client to take the response
    HANDSHAKE = "handshake"  # the client's TLS handshake (admission.Handshake, before a Transport exists)


IDLE, HEAD, BODY, HANDLER, SENDING = Phase.IDLE, Phase.HEAD, Phase.BODY, Phase.HANDLER, Phase.SENDING
HANDSHAKE = Phase.HANDSHAKE


class ConnectionEnded(Exception):
    """The client went away or ran out of time; ``str(exc)`` is the reference's error string."""

    def __init__(self, message, phase_started=False):
        super().__init__(message)
        self.message = message
        # True when part of a request had arrived, so a 408 is worth sending.
        self.phase_started = phase_started


class StreamFailed(Exception):
    """A streamed body could not be produced; ``started`` tells whether the head
    (and perhaps part of the body) already went out."""

    def __init__(self, message, started):
        super().__init__(message)
        self.message = message
        self.started = started


def forwarded(name):
    """A property giving the socket's attribute ``name``; before a write on the
    socket itself (SOCKET_WRITES), the responses held back are sent."""
    if name in SOCKET_WRITES:
        def socket_attribute(self):
            self.flush()
            return getattr(self.sock, name)
    else:
        def socket_attribute(self):
            return getattr(self.sock, name)
    return property(socket_attribute, doc="The socket's %s." % name)


def forwarding(cls):
    """Give ``cls`` a property for each public socket attribute it lacks. Explicit
    properties, not ``__getattr__``: a class with ``__getattr__`` makes every attribute
    lookup on its objects take the slow path (no specialization), on the hot path too."""
    for name in SOCKET_ATTRIBUTES:
        if not hasattr(cls, name):
            setattr(cls, name, forwarded(name))
    return cls


@forwarding
class SocketFace:
    """The socket face handlers see in ``ctx["client"]``: buffered bytes come first,
    and a handler writing on the socket itself sends the held responses first.
    Transport's own methods (``sendall``, ``close``) come before these in its MRO."""

    __slots__ = ()

    def recv(self, size, *flags):
        """Like ``socket.recv``, but bytes already buffered come first."""
        buf = self.buf
        if buf:
            self.buf = buf[size:]
            return buf[:size]
        return self.sock.recv(size, *flags)

    def recv_into(self, buffer, nbytes=0, *flags):
        """Like ``socket.recv_into``, but bytes already buffered come first."""
        buf = self.buf
        if buf:
            size = min(len(buffer), nbytes or len(buffer), len(buf))
            buffer[:size] = buf[:size]
            self.buf = buf[size:]
            return size
        return self.sock.recv_into(buffer, nbytes, *flags)


class Sending:
    """The writing half of a Transport: whole sends, batched pipelined responses, sendfile."""

    __slots__ = ()

    def send_batched(self, data, timeout):
        """Hold a complete response (the driver saw the next request waiting complete
        in the buffer) to leave in one write with the responses that follow; sent
        now when the batch is full.

        Held responses go out, in order, with the next ``sendall``, before this
        connection waits to read, when the handler touches the socket, or, from
        a hub callback, as soon as this greenlet blocks (a slow handler in the
        middle of the batch does not delay the responses before it).
        """
        if len(self.pending) < BATCH_RESPONSES and self.pending_bytes + len(data) <= BATCH_BYTES:
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.flush_soon is None:
                self.flush_soon = get_hub().loop.run_callback(self._send_pending_now)
            return
        self.sendall(data, timeout)

    def flush(self, timeout=None):
        """Send the responses held back by send_batched, if any."""
        if self.pending:
            self.sendall(b"", timeout)

    def _send_pending_now(self):
        """The hub callback: this greenlet blocked with responses held, so send what
        the socket takes now without waiting; the rest goes with the next sendall."""
        self.flush_soon = None
        if not self.pending or self.try_send is None or self.closed:
            return
        data = b"".join(self.pending)
        try:
            sent = self.try_send(data)
        except (WOULD_BLOCK + (OSError,)):  # the greenlet's next send finds out
            sent = 0
        self.pending = [data[sent:]] if sent < len(data) else []
        self.pending_bytes = len(data) - sent

    def sendall(self, data, timeout=None):
        """Send all of ``data`` within ``timeout`` seconds (None: no limit), after
        the responses held back (send_batched); raises ConnectionEnded."""
        if self.pending:
            self.pending.append(data)
            data = b"".join(self.pending)
            self.pending = []  # taken before any wait, so the hub callback cannot send them twice
            self.pending_bytes = 0
        try_send = self.try_send
        if try_send is not None:
            try:
                sent = try_send(data)
            except WOULD_BLOCK:
                sent = 0
            except OSError:
                raise ConnectionEnded("closed") from None
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        phase = self.phase
        self.phase = SENDING
        try:
            if timeout is None:
                try:
                    self.sock.sendall(data)
                except OSError:
                    raise ConnectionEnded("closed") from None
            else:
                self._blocking(self.sock.sendall, data, monotonic() + timeout, "response send timeout", False,
                               socket.SHUT_RDWR)
        finally:
            self.phase = phase

    def send_now(self, data):
        """What the socket takes of ``data`` without waiting (0 when it would block);
        raises ConnectionEnded (HTTP/2's writer sends from a hub callback)."""
        try_send = self.try_send
        if try_send is None:
            return 0
        try:
            return try_send(data)
        except WOULD_BLOCK:
            return 0
        except OSError:
            raise ConnectionEnded("closed") from None

    def send_quietly(self, data, timeout=1.0):
        """Send an error reply if the client still takes it; a gone client is no error."""
        try:
            self.sendall(data, timeout)
        except ConnectionEnded:
            pass

    def send_file(self, head, file, size, timeout):
        """Send ``head`` and ``size`` bytes of ``file`` from its current position with
        ``os.sendfile`` (zero-copy; plain sockets only). Returns the bytes sent."""
        sock = self.sock
        out_fd = sock.fileno()
        in_fd = file.fileno()
        offset = file.tell()
        deadline = monotonic() + timeout
        remaining = size
        try:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # head and data share packets
            except OSError:
                pass  # not TCP (a unix socket passed to process_request)
            self.sendall(head, timeout)
            while remaining > 0:
                try:
                    done = os.sendfile(out_fd, in_fd, offset, min(remaining, 1 << 24))
                except BlockingIOError:
                    self._wait_writable(out_fd, deadline)
                    continue
                except OSError:
                    raise ConnectionEnded("closed") from None
                if done == 0:
                    raise StreamFailed("file ended %d bytes before its size" % remaining, True)
                offset += done
                remaining -= done
        finally:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            except OSError:
                pass
        return len(head) + size

    def _wait_writable(self, fd, deadline):
        left = deadline - monotonic()
        if left <= 0 or self.expired:
            raise ConnectionEnded("response send timeout")
        phase = self.phase
        self.phase = SENDING
        try:
            wait_write(fd, timeout=left)
        except socket.timeout:
            raise ConnectionEnded("response send timeout") from None
        finally:
            self.phase = phase


class Receiving:
    """The reading half of a Transport: every read waits under the phase's deadline,
    and counts its bytes for the metrics."""

    __slots__ = ()

    def receive_idle(self, deadline):
        """Bytes of the next request, waiting (phase IDLE) until ``deadline``."""
        self.phase = IDLE
        self.idle_since = monotonic()
        if self.pending:
            self.flush(deadline - self.idle_since)
        try:
            data = self._blocking(self._receive, REQUEST_READ_SIZE, deadline, "keepalive timeout", False)
        finally:
            self.phase = HEAD
        if not data:
            raise ConnectionEnded("keepalive timeout" if self.expired else "closed")
        self.received += len(data)
        return data

    def arrived(self):
        """The bytes of a request already there, read without waiting (b"" when none).
        A new connection looks first: on a busy server its request has mostly arrived
        by the time its greenlet runs, and that saves it a turn of the hub behind every
        busy connection (issue 21), and the idle wait's set-up; one failed read otherwise."""
        return self._read_now(REQUEST_READ_SIZE) or b""

    def receive(self, deadline, timeout_message, phase_started, size=RECV_SIZE):
        """Up to ``size`` bytes from the socket before ``deadline`` (ConnectionEnded
        with ``timeout_message`` after it)."""
        if monotonic() >= deadline:  # a phase fed a byte at a time still ends on time
            raise ConnectionEnded(timeout_message, phase_started)
        data = self._read_now(size)
        if data is not None:
            return data
        if self.pending:  # the client may wait for them before it sends the rest
            self.flush(deadline - monotonic())
        data = self._blocking(self._receive, size, deadline, timeout_message, phase_started)
        if not data:
            raise ConnectionEnded(timeout_message if self.expired else "closed", phase_started)
        self.received += len(data)
        return data

    def starts_with(self, prefix, timeout):
        """Whether the first bytes the client sends are ``prefix`` (waiting up to
        ``timeout`` for enough of them); they stay in the buffer for the driver."""
        if not self.buf:
            self.buf = self.arrived()
        if len(self.buf) < len(prefix) and prefix.startswith(self.buf):
            deadline = monotonic() + timeout
            while len(self.buf) < len(prefix) and prefix.startswith(self.buf):
                self.buf += self.receive_idle(deadline)
        return self.buf.startswith(prefix)

    def read_some(self, size, timeout):
        """Up to ``size`` bytes of a body straight from the socket (the caller took
        the buffer first), waiting at most ``timeout`` seconds."""
        return self.receive(monotonic() + timeout, "request body timeout", True, size)

    def read_available(self, deadline, alarm):
        """For a session (WebSocket): bytes; b"" when the peer is gone; None when
        ``deadline`` passed without any (``alarm``, the session's, wakes the wait)."""
        if self.closed:  # the handler closed ctx["client"]
            return b""
        data = None
        try:
            if self.read_filled and self.try_recv is not None:
                try:  # the last read filled its buffer: the rest is most likely there already
                    data = self.try_recv(RECV_SIZE)
                except WOULD_BLOCK:
                    pass
            if data is None:
                data = alarm.wait(self._receive, RECV_SIZE, deadline)
        except Rang:
            return None
        except (OSError, ValueError):
            return b""
        self.read_filled = len(data) == RECV_SIZE
        return data

    def _read_now(self, size=RECV_SIZE):
        """What a non-blocking read finds: bytes, or None when it would have to wait.
        Raises ConnectionEnded when the client has gone."""
        try_recv = self.try_recv
        if try_recv is None:
            return None
        try:
            data = try_recv(size)
        except WOULD_BLOCK:
            return None
        except OSError:
            raise ConnectionEnded("closed") from None
        if not data:
            raise ConnectionEnded("closed")
        self.received += len(data)
        return data

    def _blocking(self, operation, argument, deadline, timeout_message, phase_started,
                  how=socket.SHUT_RD):
        """Run a socket operation that may wait, under ``deadline``. The server's
        Deadlines watcher calls ``expire`` when it passes, which shuts the socket
        down (``how``) so the operation returns or fails at once."""
        if monotonic() >= deadline:
            raise ConnectionEnded(timeout_message, phase_started)
        self.deadline = deadline
        self.expiry_how = how
        try:
            return operation(argument)
        except OSError:
            raise ConnectionEnded(timeout_message if self.expired else "closed", phase_started) from None
        finally:
            self.deadline = 0.0


class Transport(Receiving, Sending, SocketFace):
    """A client socket with the buffer that makes pipelining and proxying safe.

    ``client_ip`` (after the PROXY header), ``sessions`` (the server's
    websocket.Sessions) and ``alpn`` (the protocol TLS negotiated) are given at
    construction; other modules change its state through its methods only.
    """

    __slots__ = ("sock", "try_recv", "try_send", "tls", "sni", "alpn",
                 "buf", "phase", "idle_since", "requests", "close_requested", "client_ip", "linger", "closed",
                 "deadline", "expiry_how", "expired", "taken_over", "sessions", "answer", "received",
                 "pending", "pending_bytes", "flush_soon", "_receive", "read_filled")

    def __init__(self, sock, sni=None, tls=False, client_ip=None, sessions=None, alpn=None):
        self.sock = sock
        if getattr(sock, "timeout", None) is not None:  # accepted sockets come without one
            sock.settimeout(None)  # waits are bounded by deadlines (deadlines.py), not socket timers
        self.deadline = 0.0  # monotonic time by which the current wait must end; 0: none
        self.expiry_how = socket.SHUT_RD
        self.expired = False
        # Reads and writes first try the non-blocking object under gevent's socket
        # (the OS socket ``_sock``, or the TLS object ``_sslobj``) and go through
        # gevent, which waits, only when that would block.
        under = getattr(sock, "_sslobj" if tls else "_sock", None)
        self.try_recv = getattr(under, "read" if tls else "recv", None)
        self.try_send = getattr(under, "write" if tls else "send", None)
        # gevent's read watcher, to wait on the descriptor without a failed read first;
        # a TLS connection also asks OpenSSL whether it holds decrypted bytes already.
        readable_event = (getattr(sock, "_read_event", None)
                          if self.try_recv is not None and hasattr(sock, "_wait") else None)
        # Wait until readable, then read once: a client has rarely sent its next bytes
        # the instant we look (measured), so a read first, as gevent's recv tries, mostly fails.
        self._receive = (sock.recv if readable_event is None else
                         partial(recv_when_readable, sock, readable_event, self.try_recv,
                                 getattr(under, "pending", None) if tls else None))
        self.tls = tls
        self.sni = sni
        self.alpn = alpn
        self.client_ip = client_ip
        self.sessions = sessions
        self.buf = b""
        self.phase = IDLE
        self.pending = []  # responses held for one write with the pipelined ones that follow
        self.pending_bytes = 0
        self.flush_soon = None  # the hub callback that sends them if this greenlet blocks first
        self.idle_since = 0.0
        self.requests = 0  # requests begun so far
        self.close_requested = False  # the next response says Connection: close (admission.py)
        self.linger = False  # drain unread input before closing (after an error response)
        self.closed = False
        self.taken_over = None  # once the connection speaks another protocol: its session
        self.answer = None  # (status, size) a handler answering on the socket itself reported
        self.received = 0  # bytes read and not yet counted by metrics
        self.read_filled = False  # a session's last read filled RECV_SIZE (read_available)

    # -- state changes other modules ask for -------------------------------------

    @property
    def idle(self):
        """Waiting for the first byte of a request."""
        return self.phase is IDLE

    @property
    def socket_closed(self):
        """The socket is closed (by this object, or by a handler through the socket face)."""
        return self.closed or self.sock.fileno() < 0

    def set_phase(self, phase):
        """What the connection waits for now; becoming IDLE starts its idle time (stop,
        drain and admission close the idle longest first)."""
        if phase is IDLE and self.phase is not IDLE:
            self.idle_since = monotonic()
        self.phase = phase

    def begin_request(self):
        """A request (or stream) starts: counted, and its head is awaited. Returns the
        bytes already buffered, taken from the buffer (``head_read`` puts back the rest)."""
        self.requests += 1
        self.phase = HEAD
        buf, self.buf = self.buf, b""
        return buf

    def head_read(self, rest):
        """The head is in: ``rest`` (bytes after it) comes first next; the server's turn."""
        self.buf = rest
        self.phase = HANDLER

    def request_close(self):
        """Admission frees a slot: the current response is the connection's last."""
        self.close_requested = True

    def linger_on_close(self):
        """Before closing (after an error reply, or a WebSocket close): drain what the client still sends."""
        self.linger = True

    def hand_over(self, session, take_trailing=True):
        """An upgrade: ``session`` owns the connection from now on (its driver stops
        reading); returns the bytes already read after the request (h11's trailing
        data), which leave the buffer unless ``take_trailing`` is false."""
        self.taken_over = session
        if not take_trailing:
            return b""
        trailing, self.buf = self.buf, b""
        return trailing

    def report_answer(self, status, size):
        """A handler that answered on the socket itself says what it sent (access log)."""
        self.answer = (status, size)

    def take_answer(self):
        answer, self.answer = self.answer, None
        return answer

    def take_received(self):
        """Bytes read since the last call (metrics)."""
        received, self.received = self.received, 0
        return received

    # -- the buffer ------------------------------------------------------------------

    def take(self, size=None):
        """Up to ``size`` buffered bytes (all when None), removed from the buffer."""
        buf = self.buf
        if size is None or size >= len(buf):
            self.buf = b""
            return buf
        self.buf = buf[size:]
        return buf[:size]

    def put_back(self, data):
        """Bytes read but not consumed (a pipelined request's start): they come first next."""
        self.buf = data

    def buffered(self):
        return len(self.buf)

    def move_deadline(self, deadline):
        """Change the deadline of the wait in progress, if one is (HTTP/2: the reader
        waits while its streams change what the connection waits for)."""
        if self.deadline:
            self.deadline = deadline

    def expire(self):
        """The deadline passed: wake the waiting operation by shutting the socket down."""
        self.expired = True
        self.deadline = 0.0
        shutdown(self.sock, self.expiry_how)

    # -- ending ----------------------------------------------------------------

    def hang_up(self):
        """Shut both directions: a reader wakes with end of stream, writes fail."""
        shutdown(self.sock, socket.SHUT_RDWR)

    def evict(self):
        """Wake an idle reader with end-of-file so its connection ends and frees its slot."""
        shutdown(self.sock, socket.SHUT_RD)

    def cut(self):
        """End a slow client's current phase now, as if its deadline had passed: a
        request read in part still gets its 408, a response being sent is abandoned."""
        self.expired = True
        self.deadline = 0.0
        if self.phase is SENDING:
            try:  # what the kernel still holds for it is dropped with a reset at close
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            except OSError:
                pass
            shutdown(self.sock, socket.SHUT_RDWR)
        else:
            shutdown(self.sock, socket.SHUT_RD)

    def close(self):
        """Close the socket; after an error response, first drain what the client still
        sends (bounded), so the response is not destroyed by a TCP reset."""
        if self.closed:
            return
        if self.pending:
            self._send_pending_now()
        self.closed = True
        if self.linger:
            self._drain_before_close()
        try:
            self.sock.close()
        except OSError:
            pass

    def _drain_before_close(self):
        sock = self.sock
        try:
            shutdown(sock, socket.SHUT_WR)
            deadline = monotonic() + LINGER_SECONDS
            drained = 0
            while drained < LINGER_BYTES:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                data = sock.recv(RECV_SIZE)
                if not data:
                    break
                drained += len(data)
        except (OSError, ValueError):
            pass


Connection = Transport  # the name tests and older code use


def recv_when_readable(sock, event, try_recv, pending, size):
    """Wait until the socket is readable, then read: one read call, where gevent's
    recv would try one that fails first. OpenSSL reads one record at a time, so with
    nothing decrypted ``pending`` the descriptor tells the truth. (A function, bound
    with partial: a bound method kept on the Transport would make it a reference
    cycle, left to the garbage collector, with its socket, at every close.)"""
    while True:
        if pending is None or not pending():
            sock._wait(event)
        try:
            return try_recv(size)
        except BlockingIOError:
            continue
        except ssl.SSLWantReadError:
            continue
        except ssl.SSLWantWriteError:
            sock._wait(sock._write_event)


def shutdown(sock, how):
    """shutdown() through a duplicate descriptor: it acts on the connection itself,
    works for TLS sockets too (whose own shutdown() would drop the TLS state),
    and wakes a greenlet blocked on the socket. ``sock`` may be a descriptor."""
    try:
        dup = _socket.socket(fileno=os.dup(sock if isinstance(sock, int) else sock.fileno()))
    except (OSError, ValueError):
        return
    try:
        dup.shutdown(how)
    except OSError:
        pass
    finally:
        dup.close()
