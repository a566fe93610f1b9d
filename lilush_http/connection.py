"""One accepted socket and its read buffer: the only place that reads or writes bytes.

Every ``recv`` lands in the connection's buffer, and what one request leaves
there (a pipelined next request) is kept for the next. Reads of a phase share
one deadline, so a client trickling a byte at a time is cut when the phase's
timeout runs out, not when a single read stalls.

The handler sees this object as ``ctx["client"]``: it behaves like the socket
(``recv`` hands out buffered bytes first) so a proxying handler can take over.
"""

import os
import socket
import ssl
import struct
import time

import _socket
from gevent import get_hub
from gevent.socket import wait_write

from .request import ChunkedDecoder, HTTPError, check_partial_head, find_head_end, parse_head
from .response import CONTINUE, LAST_CHUNK, chunk, to_bytes, ResponseError

RECV_SIZE = 65536
BODY_READ = 256 * 1024  # largest single read of a Content-Length body
# "Nothing to read / no room to write yet": a plain socket's EAGAIN, or TLS wanting I/O.
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
CRLF = b"\r\n"
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets, dropping unsent data
# Pipelined responses held back to leave in one write: at most this many, of at most so many bytes.
BATCH_RESPONSES = 32
BATCH_BYTES = 64 * 1024
# Socket methods through which a handler may write on the connection itself: held responses go first.
SOCKET_WRITES = frozenset(("send", "sendto", "sendmsg", "sendfile", "makefile", "fileno", "detach", "dup",
                           "shutdown"))

monotonic = time.monotonic


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


class Connection:
    """A client socket with the buffer that makes pipelining and proxying safe."""

    __slots__ = ("sock", "try_recv", "try_send", "readable_event", "tls_pending", "tls", "sni",
                 "buf", "phase", "idle_since", "requests", "close_requested", "client_ip", "linger", "closed",
                 "deadline", "expiry_how", "expired", "upgraded", "sessions", "refused_head",
                 "pending", "pending_bytes", "flush_soon")

    def __init__(self, sock, sni=None, tls=False):
        self.sock = sock
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
        self.readable_event = (getattr(sock, "_read_event", None)
                               if self.try_recv is not None and hasattr(sock, "_wait") else None)
        self.tls_pending = getattr(under, "pending", None) if tls else None
        self.tls = tls
        self.buf = b""
        # What the connection waits for: "idle" (the first byte of a request), "head",
        # "body", "handler" (the server's turn) or "sending" (the client to take the response).
        self.phase = "idle"
        self.pending = []  # responses held for one write with the pipelined ones that follow
        self.pending_bytes = 0
        self.flush_soon = None  # the hub callback that sends them if this greenlet blocks first
        self.idle_since = 0.0
        self.requests = 0  # request heads read so far
        self.close_requested = False  # the next response says Connection: close (admission.py)
        self.client_ip = None
        self.linger = False  # drain unread input before closing (after an error response)
        self.closed = False
        self.sni = sni
        self.upgraded = None  # once the connection speaks another protocol: its session (websocket.py)
        self.sessions = None  # the server's websocket.Sessions, for connections it accepted
        self.refused_head = b""  # the bytes of a head the parser refused, for the access log

    # -- reading a request -------------------------------------------------

    @property
    def idle(self):
        """Waiting for the first byte of a request."""
        return self.phase == "idle"

    def read_head(self, idle_timeout, header_timeout, limits):
        """Read and parse the next request head; raises ConnectionEnded or HTTPError."""
        self.phase = "head"
        self.requests += 1
        buf = self.buf
        if buf and buf[0] in CRLF:
            buf = skip_blank_lines(buf)
        if not buf or buf == b"\r":
            buf = self._wait_for_request(idle_timeout, buf)
        end = find_head_end(buf)
        if end < 0:
            buf, end = self._read_rest_of_head(buf, header_timeout, limits)
        self.buf = buf[end:]
        self.phase = "handler"  # read_body sets "body" while it has to wait for one
        try:
            return parse_head(buf[:end], limits)
        except HTTPError:
            self.refused_head = buf[:end]
            raise

    def _wait_for_request(self, timeout, pending=b""):
        """The first bytes of the next request (``pending``: a CR already read that
        may start a CRLF blank line)."""
        self.phase = "idle"
        self.idle_since = now = monotonic()
        deadline = now + timeout
        # Wait until readable, then read once: the client has rarely sent its next
        # request the instant the last response left (nor its first the instant
        # it connected: measured), so a read first, which gevent's recv tries,
        # would mostly fail.
        # A new connection is the exception: on a busy server its request has mostly
        # arrived by the time its greenlet runs, and one read now saves it a turn of
        # the hub behind every busy connection (issue 21); one failed read otherwise.
        receive = self._recv_when_readable if self.readable_event is not None else self.sock.recv
        try:
            data = self._read_now() if self.requests == 1 and not pending else None
            while True:
                if data is None:
                    data = self._blocking(receive, RECV_SIZE, deadline, "keepalive timeout", False)
                if not data:
                    raise ConnectionEnded("keepalive timeout" if self.expired else "closed")
                if pending or data[0] in CRLF:
                    data = skip_blank_lines(pending + data)
                if data and data != b"\r":
                    return data
                pending, data = data, None
        finally:
            self.phase = "head"

    def _read_rest_of_head(self, buf, timeout, limits):
        deadline = monotonic() + timeout
        start = lines = 0
        end = -1
        while end < 0:
            try:
                start, lines = check_partial_head(buf, limits, start, lines)
            except HTTPError:
                self.refused_head = buf
                raise
            searched = max(0, len(buf) - 3)
            buf += self._recv(deadline, "request header timeout", True)
            end = find_head_end(buf, searched)
        return buf, end

    def read_body(self, request, timeout, limits):
        """The request body as bytes (None when the request has none).

        Sends ``100 Continue`` first when the client asked for it and the body
        is not already here.
        """
        self.phase = "body"
        if request.content_length is not None:
            return self._read_exact(request.content_length, request.expect_continue, timeout)
        if request.chunked:
            return self._read_chunked(request.expect_continue, timeout, limits)
        return None

    def _read_exact(self, size, expect_continue, timeout):
        buf = self.buf
        if len(buf) >= size:
            self.buf = buf[size:]
            return buf[:size]
        if expect_continue:
            self.sendall(CONTINUE, timeout)
        deadline = monotonic() + timeout
        parts = [buf]
        got = len(buf)
        self.buf = b""
        self.phase = "body"
        while got < size:
            # Never more than the body: what follows belongs to the next request.
            data = self._recv(deadline, "request body timeout", True, min(size - got, BODY_READ))
            parts.append(data)
            got += len(data)
        self.phase = "handler"
        return b"".join(parts)

    def _read_chunked(self, expect_continue, timeout, limits):
        decoder = ChunkedDecoder(limits)
        buf = self.buf
        pos = decoder.feed(buf)
        if not decoder.done:
            if expect_continue:
                self.sendall(CONTINUE, timeout)
            deadline = monotonic() + timeout
            self.phase = "body"
            while not decoder.done:
                buf = buf[pos:] + self._recv(deadline, "request body timeout", True)
                pos = decoder.feed(buf)
            self.phase = "handler"
        self.buf = buf[pos:]
        return decoder.body

    def read_some(self, size, timeout):
        """Up to ``size`` bytes of a streamed body straight from the socket (the
        caller consumed the buffer first), waiting at most ``timeout`` seconds."""
        return self._recv(monotonic() + timeout, "request body timeout", True, size)

    def _recv(self, deadline, timeout_message, phase_started, size=RECV_SIZE):
        if monotonic() >= deadline:  # a phase fed a byte at a time still ends on time
            raise ConnectionEnded(timeout_message, phase_started)
        data = self._read_now(size)
        if data is not None:
            return data
        if self.pending:  # the client may wait for them before it sends the rest
            self.flush(deadline - monotonic())
        receive = self._recv_when_readable if self.readable_event is not None else self.sock.recv
        data = self._blocking(receive, size, deadline, timeout_message, phase_started)
        if not data:
            raise ConnectionEnded(timeout_message if self.expired else "closed", phase_started)
        return data

    def _recv_when_readable(self, size):
        """Wait until the socket is readable, then read: one read call, where
        gevent's recv would try one that fails first. OpenSSL reads one record at
        a time, so with nothing decrypted pending the descriptor tells the truth."""
        sock = self.sock
        event = self.readable_event
        try_recv = self.try_recv
        pending = self.tls_pending
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

    def expire(self):
        """The deadline passed: wake the waiting operation by shutting the socket down."""
        self.expired = True
        self.deadline = 0.0
        shutdown(self.sock, self.expiry_how)

    # -- writing -------------------------------------------------------------

    def send_response(self, data, timeout, batch):
        """Send a complete response; with ``batch`` (keep-alive, served by this
        server's loop), when the next request already waits complete in the
        buffer, hold it to leave in one write with the responses that follow.

        Held responses go out, in order, with the next ``sendall`` (the last of
        the batch, an error, a streamed or sendfile response), before this
        connection waits to read, when the handler touches the socket, or, from
        a hub callback, as soon as this greenlet blocks (a slow handler in the
        middle of the batch does not delay the responses before it).
        """
        if (batch and self.buf and len(self.pending) < BATCH_RESPONSES
                and self.pending_bytes + len(data) <= BATCH_BYTES and find_head_end(self.buf) >= 0):
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.flush_soon is None:
                self.flush_soon = get_hub().loop.run_callback(self._send_pending_now)
            return
        self.sendall(data, timeout)

    def flush(self, timeout=None):
        """Send the responses held back by send_response, if any. Code that writes on
        ``sock`` itself (not through this object) calls it first, to keep the order."""
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
        the responses held back (send_response); raises ConnectionEnded."""
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
        self.phase = "sending"
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

    def send_stream(self, head, chunks, chunked, length, encoder, timeout):
        """Send ``head``, then each piece of the iterator ``chunks`` as soon as it is
        produced (the head leaves with the first piece). Returns the bytes sent.

        ``chunked`` frames each piece; ``length`` (when not chunked) is the
        promised Content-Length, held to exactly; ``encoder`` compresses.
        Raises StreamFailed when the iterator raises or breaks its promise
        (the terminating chunk is then never sent), ConnectionEnded when the
        client goes away.
        """
        self.flush(timeout)  # held responses go before a stream that may take its time
        pending = head
        sent = 0
        body_bytes = 0
        while True:
            try:
                piece = next(chunks)
            except StopIteration:
                break
            except Exception as exc:
                raise StreamFailed("response stream raised %s: %s" % (type(exc).__name__, exc),
                                   not pending) from exc
            try:
                data = to_bytes(piece)
            except ResponseError as exc:
                raise StreamFailed("response stream: %s" % exc, not pending) from None
            if encoder is not None:
                data = encoder.compress(data)
            if not data:
                continue
            body_bytes += len(data)
            if length is not None and body_bytes > length:
                raise StreamFailed("response stream produced more than its content-length %d" % length,
                                   not pending)
            if chunked:
                data = chunk(data)
            self.sendall(pending + data if pending else data, timeout)
            sent += len(pending) + len(data)
            pending = b""
        if length is not None and body_bytes < length:
            raise StreamFailed("response stream produced %d of its content-length %d" % (body_bytes, length),
                               not pending)
        tail = encoder.finish() if encoder is not None else b""
        if chunked:
            tail = (chunk(tail) if tail else b"") + LAST_CHUNK
        self.sendall(pending + tail, timeout)
        return sent + len(pending) + len(tail)

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
                    left = deadline - monotonic()
                    if left <= 0 or self.expired:
                        raise ConnectionEnded("response send timeout") from None
                    self.phase = "sending"
                    try:
                        wait_write(out_fd, timeout=left)
                    except socket.timeout:
                        raise ConnectionEnded("response send timeout") from None
                    finally:
                        self.phase = "handler"
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

    # -- the socket face handlers see ------------------------------------------

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

    def __getattr__(self, name):
        if name in Connection.__slots__:  # a slot not set yet (never the socket's)
            raise AttributeError(name)
        if name in SOCKET_WRITES:
            self.flush()  # a handler taking the socket over: the responses held go first
        return getattr(self.sock, name)

    # -- ending ----------------------------------------------------------------

    def evict(self):
        """Wake an idle reader with end-of-file so its connection ends and frees its slot."""
        shutdown(self.sock, socket.SHUT_RD)

    def cut(self):
        """End a slow client's current phase now, as if its deadline had passed: a
        request read in part still gets its 408, a response being sent is abandoned."""
        self.expired = True
        self.deadline = 0.0
        if self.phase == "sending":
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
        sock = self.sock
        if self.linger:
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
        try:
            sock.close()
        except OSError:
            pass


def skip_blank_lines(data):
    """``data`` without the empty CRLF lines before a request, which RFC 9112 section
    2.2 says to ignore; a bare LF or bare CR stays, and the parser refuses it."""
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    return data[start:] if start else data


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
