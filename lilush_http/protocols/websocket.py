"""WebSocket sessions (RFC 6455, permessage-deflate of RFC 7692) over the transport an upgrade hands over.

In a handler::

    ws, err = websocket.upgrade(method, headers, ctx)
    if ws is None:
        return None, None, None   # 400, 426 or 503 was already answered
    for message in ws:            # str for text, bytes for binary
        ws.send(message)
    return None, None, None

Frames are parsed and built sans-I/O: by websocket_frames.py, or by wsproto
(websocket_deflate.py) when permessage-deflate was negotiated; this module does
the I/O, the closing handshake and the keep-alive pings. Its waits share one
Alarm (transport/alarm.py), so a message costs no timer. An upgraded connection leaves the
keep-alive loop and gives its ``connection_limit`` slot back: sessions count
against ``websocket.session_limit`` instead, so idle sockets never keep plain
HTTP out. The server closes open sessions with 1001 when it stops.
"""

import base64
import binascii
from collections import deque

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from wsproto.utilities import generate_accept_token

from .. import metrics
from ..response import date_lines, render, status_line
from ..transport.alarm import Alarm
from ..transport.connection import ConnectionEnded, monotonic
from .websocket_deflate import BoundedDeflate, DeflateFrames
from .websocket_frames import BINARY, CLOSE, FAILED, PING, TEXT, Frames

NORMAL = 1000
GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
ABNORMAL = 1006


# What upgrade() says on HTTP/2, where it answers nothing: the handler gives the answer.
NEEDS_HTTP1 = "a WebSocket needs HTTP/1.1; this request came over HTTP/2"


def check(method, headers, version="HTTP/1.1"):
    """Why this request is not a WebSocket opening handshake: (status, message),
    or (None, None) when it is one (sans-I/O)."""
    if "websocket" not in _tokens(headers.get("upgrade")):
        return 426, "expected Upgrade: websocket"
    if method != "GET" or version != "HTTP/1.1":
        return 400, "a WebSocket upgrade is a GET over HTTP/1.1"
    if "upgrade" not in _tokens(headers.get("connection")):
        return 400, "expected Connection: Upgrade"
    if headers.get("sec-websocket-version", "").strip() != "13":
        return 426, "unsupported Sec-WebSocket-Version (only 13)"
    try:
        key_ok = len(base64.b64decode(headers.get("sec-websocket-key", "").strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        key_ok = False
    if not key_ok:
        return 400, "missing or malformed Sec-WebSocket-Key"
    return None, None


def upgrade(method, headers, ctx, protocols=None):
    """Answer a WebSocket opening handshake with 101: ``(WebSocket, None)``; or
    ``(None, err)`` after answering 400, 426 (not an upgrade) or 503 (the
    server is at ``websocket.session_limit``). On HTTP/2 it answers nothing and
    returns ``(None, NEEDS_HTTP1)``: the handler gives the answer (e.g. a 426).
    ``protocols``: the subprotocols this handler speaks; the first one the
    client offers is chosen."""
    conn = ctx["client"]
    if conn is None:  # HTTP/2: no connection of its own to hand over (RFC 8441 is not offered)
        return None, NEEDS_HTTP1
    cfg = ctx["cfg"]["websocket"]
    status, err = check(method, headers, ctx.get("version", "HTTP/1.1"))
    if status is not None:
        _refuse(conn, status, err)
        return None, err
    protocol = next((p for p in _tokens(headers.get("sec-websocket-protocol"), False) if p in (protocols or ())),
                    None)
    sessions = getattr(conn, "sessions", None)
    if sessions is not None and len(sessions) >= cfg["session_limit"]:
        _refuse(conn, 503, "too many WebSocket sessions")
        return None, "too many WebSocket sessions"
    extension, accepted = _deflate(headers.get("sec-websocket-extensions"), cfg)
    ws = WebSocket(conn, cfg, protocol, extension)  # the connection is handed over to it
    if sessions is not None:
        sessions.admit(ws, cfg["session_limit"])
    head = b"".join((status_line(101), date_lines(), b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
                     b"Sec-WebSocket-Accept: %s\r\n" % generate_accept_token(headers["sec-websocket-key"]
                                                                               .strip().encode("ascii"))))
    if protocol is not None:
        head += b"Sec-WebSocket-Protocol: %s\r\n" % protocol.encode("ascii")
    if accepted is not None:
        head += b"Sec-WebSocket-Extensions: %s\r\n" % accepted.encode("ascii")
    if ws._write(head + b"\r\n")[0] is None:
        return None, "closed"
    ws.bytes_sent = 0  # the session's bytes, not the handshake's
    return ws, None


def _tokens(value, lower=True):
    """The comma-separated items of a header value, stripped (lower-cased)."""
    if not value:
        return []
    return [t.strip().lower() if lower else t.strip() for t in value.split(",") if t.strip()]


def _deflate(offers, cfg):
    """permessage-deflate for the first acceptable offer: (extension, response
    parameters), or (None, None)."""
    if not cfg["compression"]:
        return None, None
    for offer in _tokens(offers, False):
        if offer.split(";")[0].strip().lower() != "permessage-deflate":
            continue
        extension = BoundedDeflate(cfg["max_message_size"])
        try:
            params = extension.accept(offer)
        except ValueError:  # a malformed window size
            continue
        if params is not None:
            return extension, "permessage-deflate" + ("; " + params if params else "")
    return None, None


def _refuse(conn, status, message):
    """Answer a request that is no (acceptable) opening handshake; the connection
    stays HTTP. The answer is reported for the access log."""
    headers = {"content-type": "text/plain; charset=utf-8"}
    if status == 426:
        headers.update({"upgrade": "websocket", "sec-websocket-version": "13"})
    elif status == 503:
        headers["retry-after"] = "5"
    data, _ = render(status, headers, "%d: %s\n" % (status, message), True)
    conn.send_quietly(data, 10)
    conn.report_answer(status, len(data))


class WebSocket:
    """One upgraded connection. ``receive()``, ``send()``, ``ping()``, ``close()``,
    ``closed``, ``close_code``; iterating gives the messages until the close."""

    def __init__(self, conn, cfg, protocol=None, extension=None):
        self.conn = conn
        self.protocol = protocol  # the chosen subprotocol, or None
        self.closed = False
        self.close_code = None
        self.close_reason = None
        self.bytes_sent = 0
        self.started = monotonic()
        self._cfg = cfg
        trailing = conn.hand_over(self)  # the bytes the client sent after its handshake
        self.bytes_received = len(trailing)
        limit = cfg["max_message_size"]
        # The frame codec: the lean one, or wsproto's when an extension was negotiated.
        self._frames = Frames(limit, trailing) if extension is None else DeflateFrames(limit, trailing, extension)
        self._close_sent = False
        self._alarm = Alarm()  # wakes this session's reads at their deadline
        self._lock = Semaphore()  # one writer at a time (the reader answers pings too)
        self._messages = deque()
        self._reader = None  # the greenlet inside receive() or close()
        self._heard = self.started  # when the peer last sent anything
        self._pinged = None  # when the keep-alive ping still awaiting an answer left

    # -- receiving -------------------------------------------------------------

    def receive(self, timeout=None):
        """The next message, ``str`` (text) or ``bytes`` (binary); None once the
        session is closed, or when ``timeout`` seconds pass without one."""
        deadline = None if timeout is None else monotonic() + timeout
        self._reader = gevent.getcurrent()
        try:
            while not self._messages:
                if self.closed:
                    return None
                now = monotonic()
                wait = self._keepalive(now)
                if wait is None:
                    self._fail(INTERNAL_ERROR, "keep-alive ping timeout")
                    return None
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wait = min(wait, deadline - now)
                self._feed(self.conn.read_available(now + wait, self._alarm))
            return self._messages.popleft()
        finally:
            self._reader = None

    def __iter__(self):
        while True:
            message = self.receive()
            if message is None:
                return
            yield message

    def _keepalive(self, now):
        """Send the idle ping when due; seconds until the next check, or None when
        the peer left a ping unanswered for ``pong_timeout``."""
        cfg = self._cfg
        if self._pinged is not None:
            if self._heard < self._pinged:
                left = self._pinged + cfg["pong_timeout"] - now
                return left if left > 0 else None
            self._pinged = None
        idle = now - self._heard
        if idle < cfg["ping_interval"]:
            return cfg["ping_interval"] - idle
        self._pinged = now
        self.ping()
        return cfg["pong_timeout"]

    def _feed(self, data):
        """Hand bytes read (b"": end of stream, None: nothing) to the frame codec and act on its events."""
        if data is None:
            return
        if not data:
            if not self.closed:
                self.close_code = self.close_code or ABNORMAL
                self._finish()
            return
        self.bytes_received += len(data)
        self._heard = monotonic()
        frames = self._frames
        out = b""
        for kind, value in frames.receive(data):
            if kind == BINARY or kind == TEXT:
                self._messages.append(value)
            elif kind == PING:
                if not self._close_sent:
                    out += frames.pong(value)
            elif kind == CLOSE:
                if self.close_code is None:
                    self.close_code, self.close_reason = value
                if out:
                    self._write(out)
                self._send_close(*value)  # the answer, unless this was the answer to ours
                self._finish()
                return
            elif kind == FAILED:  # a protocol violation or a limit
                self._fail(*value)
                return
            # A Pong needs nothing: any bytes from the peer count as a sign of life.
        if out:
            self._write(out)

    # -- sending ---------------------------------------------------------------

    def send(self, message):
        """Send ``str`` as a text message, ``bytes`` as binary: (True, None), or
        (None, err) when the session is closed or the peer stopped reading for
        ``websocket.send_timeout``."""
        if self.closed or self._close_sent:
            return None, "closed"
        return self._write(self._frames.message(message))

    def ping(self, payload=b""):
        """Send a ping (the peer answers with a pong): (True, None) or (None, err)."""
        if self.closed or self._close_sent:
            return None, "closed"
        return self._write(self._frames.ping(payload))

    def _write(self, data):
        with self._lock:
            if self.conn.closed:
                return None, "closed"
            try:
                self.conn.sendall(data, self._cfg["send_timeout"])
            except ConnectionEnded as exc:
                self.close_code = self.close_code or ABNORMAL
                self._finish()
                return None, exc.message
            self.bytes_sent += len(data)
        return True, None

    # -- closing ---------------------------------------------------------------

    def close(self, code=NORMAL, reason=""):
        """Start the closing handshake and wait (up to ``websocket.close_timeout``)
        for the peer's close; then the connection is closed. From another
        greenlet than the one receiving, only the close frame is sent: the
        receiver sees the answer (or the cut at the deadline)."""
        if self.closed:
            return
        if not self._close_sent and self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._send_close(code, reason)
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent():
            gevent.spawn_later(self._cfg["close_timeout"], self._cut)
            return
        deadline = monotonic() + self._cfg["close_timeout"]
        self._reader = gevent.getcurrent()
        try:
            while not self.closed:
                data = self.conn.read_available(deadline, self._alarm) if monotonic() < deadline else None
                if data is None:
                    break
                self._feed(data)
        finally:
            self._reader = None
        self._messages.clear()
        self._finish()

    def _fail(self, code, reason):
        """A protocol violation or a limit: send the close frame with ``code`` and end."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._send_close(code, reason)
        self._finish()

    def _send_close(self, code, reason):
        """Our close frame, once per session."""
        if not self._close_sent:
            self._close_sent = True
            self._write(self._frames.close(code, reason))

    def _cut(self):
        if not self.closed:
            self.conn.hang_up()  # the receiver wakes with end of stream

    def _finish(self):
        """The session is over: close the connection and leave the server's sessions.
        What the peer still sends is read and dropped for a moment first, so that
        our close frame is not lost to a TCP reset (a peer may send after its close)."""
        if self.closed:
            return
        self.closed = True
        self.close_code = self.close_code or ABNORMAL
        self._alarm.cancel()
        self.conn.linger_on_close()
        self.conn.close()
        sessions = getattr(self.conn, "sessions", None)
        if sessions is not None:
            sessions.remove(self)

    def end(self, failed=False):
        """The handler returned (or raised, ``failed``): close with 1000 (1011) if still open."""
        if not self.closed:
            self.close(INTERNAL_ERROR if failed else NORMAL)
        self._finish()


class Sessions:
    """A server's open sessions: counted against ``websocket.session_limit``,
    outside the connection pool, and closed with 1001 when the server stops."""

    def __init__(self):
        self.pool = None  # the server's connection pool, whose slot an upgrade gives back
        self.open = {}  # WebSocket -> its greenlet

    def __len__(self):
        return len(self.open)

    def use_pool(self, pool):
        """The server's connection pool (serving starts): an upgrade gives its slot back."""
        self.pool = pool

    def admit(self, ws, limit):
        """Count ``ws`` in, unless ``limit`` sessions are open; its greenlet leaves the pool."""
        if len(self.open) >= limit:
            return False
        greenlet = gevent.getcurrent()
        self.open[ws] = greenlet
        if self.pool is not None and greenlet in self.pool:
            self.pool.discard(greenlet)
        metrics.websocket_opened()
        return True

    def remove(self, ws):
        if self.open.pop(ws, None) is not None:
            metrics.websocket_closed()

    def close_all(self, code=GOING_AWAY, reason="server shutting down"):
        """Send every session the close frame (each in its own greenlet: a slow peer delays no other)."""
        for ws in list(self.open):
            gevent.spawn(ws.close, code, reason)

    def join(self, timeout):
        """Wait up to ``timeout`` for the sessions' handlers to return, then end them."""
        greenlets = [g for g in self.open.values() if g is not None]
        gevent.joinall(greenlets, timeout=timeout)
        for ws in list(self.open):
            ws._cut()
        gevent.killall([g for g in greenlets if not g.dead], timeout=1)
        self.open.clear()


class Takeover:
    """``Transport.taken_over`` when an application did its own upgrade on the raw
    socket (simple-websocket under WSGI): the server writes nothing more."""

    bytes_sent = 0

    def __init__(self, conn):
        self.conn = conn
        self.released = Event()  # set when the application closes the socket

    def close(self, code=GOING_AWAY, reason=""):
        self._cut()

    def _cut(self):
        self.conn.hang_up()

    def end(self, failed=False):
        """The application returned: give its reader a moment to finish the closing handshake."""
        self.released.wait(5)
        if self.conn.sessions is not None:
            self.conn.sessions.remove(self)


class WebSocketError(OSError):
    """Raised by the WSGI face's ``send`` on a closed session, as gevent-websocket does."""


class WSGIWebSocket:
    """``environ["wsgi.websocket"]`` with gevent-websocket's interface (``receive``,
    ``send``, ``close``, ``closed``, ``path``, ``origin``, ``protocol``,
    ``version``), so gevent-websocket applications (Flask-SocketIO in gevent
    mode) run unchanged. The 101 goes out on first use: an application that
    does not use it may still answer with plain HTTP."""

    def __init__(self, environ, method, headers, ctx):
        self.environ = environ
        self._request = (method, headers, ctx)
        self._ws = None
        self._refused = False

    version = property(lambda self: self.environ.get("HTTP_SEC_WEBSOCKET_VERSION"))
    path = property(lambda self: self.environ.get("PATH_INFO"))
    origin = property(lambda self: self.environ.get("HTTP_ORIGIN"))
    protocol = property(lambda self: self.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL"))

    @property
    def closed(self):
        return self._refused or (self._ws is not None and self._ws.closed)

    def _session(self):
        if self._ws is None and not self._refused:
            method, headers, ctx = self._request
            self._ws, err = upgrade(method, headers, ctx)
            if self._ws is None:  # answered (503): the application's response must not follow
                self._refused = True
                client = ctx["client"]
                if client.taken_over is None:
                    client.hand_over(Takeover(client), take_trailing=False)
        return self._ws

    def receive(self):
        """The next message (str or bytes), or None once the session is closed."""
        ws = self._session()
        return None if ws is None else ws.receive()

    def send(self, message, binary=None):
        """Send a message (``binary`` forces the type); raises WebSocketError once closed."""
        ws = self._session()
        if binary is True and isinstance(message, str):
            message = message.encode("utf-8")
        elif binary is False and not isinstance(message, str):
            message = bytes(message).decode("utf-8")
        ok, err = ws.send(message) if ws is not None else (None, "closed")
        if ok is None:
            raise WebSocketError("Socket is dead: %s" % err)

    def close(self, code=NORMAL, message=b""):
        if self._ws is not None:
            self._ws.close(code, message.decode("utf-8", "replace") if isinstance(message, bytes) else message)


class RawSocket:
    """The connection as ``environ["werkzeug.socket"]``, for applications that answer
    the handshake themselves (simple-websocket, so Flask-Sock): once used, the
    connection is theirs, leaves the pool like a session, and gets no HTTP response."""

    def __init__(self, conn):
        self._conn = conn

    def close(self):
        self._conn.close()
        if isinstance(self._conn.taken_over, Takeover):
            self._conn.taken_over.released.set()

    def __getattr__(self, name):
        conn = self._conn
        if conn.taken_over is None:
            takeover = Takeover(conn)
            conn.hand_over(takeover, take_trailing=False)  # its reads go through the buffer first
            if conn.sessions is not None:
                conn.sessions.admit(takeover, float("inf"))
        return getattr(conn, name)
