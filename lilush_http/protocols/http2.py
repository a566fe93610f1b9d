"""The HTTP/2 driver: one connection's frames in, a greenlet per stream, one writer out.

h2 (python-hyper) does the framing, HPACK and the stream state machines. This
module does what h2 leaves to a server: the I/O and its deadlines, flow
control with back-pressure, the stream limit (REFUSED_STREAM for the stream
over it, not the connection), graceful GOAWAY, and the defences against
Rapid Reset and control-frame floods. Each request stream runs the one
request path (exchange.run) in its own (raw, the cheapest kind) greenlet.
"""

import logging
import traceback
from weakref import WeakKeyDictionary

from gevent import getcurrent, kill, sleep, spawn, spawn_raw
from gevent.event import Event

try:
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.errors import ErrorCodes
    from h2.exceptions import DenialOfServiceError, H2Error, ProtocolError
    from h2.settings import SettingCodes, Settings
    from hpack import HPACKError
    from hyperframe.exceptions import InvalidDataError
    from hyperframe.frame import GoAwayFrame
    AVAILABLE = True
except ImportError:  # pragma: no cover - h2 is a dependency; without it HTTP/2 is never offered
    AVAILABLE = False
    H2Connection = object

from .. import exchange
from ..body import BodyReadError
from ..request import HTTPError
from ..transport import ConnectionEnded, Phase, monotonic
from .http2_output import HIGH_WATER, Output
from .http2_events import ENHANCE_YOUR_CALM, HANDLERS, RESET_SECONDS, EventHandling, PeerError, check_fields
from .http2_sending import StreamSending
from .http2_stream import Http2Body

logger = logging.getLogger("lilush_http")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NEVER = float("inf")
FLOOD_BURST = 1000  # control frames (PING, SETTINGS, PRIORITY, empty DATA, unknown) a peer may send at once
FLOOD_RATE = 100.0  # ... and per second after that
GOODBYE_SECONDS = 1.0  # how long the last frames (a GOAWAY) get to leave before the connection closes
DEFAULT_WINDOW = 65535  # RFC 9113's initial flow-control window, kept for each stream
# The connection's window: unread request bodies a connection may hold in all (each stream
# at most DEFAULT_WINDOW), so one handler that does not read yet leaves the others room.
CONNECTION_WINDOW = 256 * 1024
FORGET_AT = 256  # streams h2 may hold (open and closed) before the closed ones are dropped
GOODBYE_TICK = 0.1  # how often open connections are checked for a stop


def serve(conn, host, client_ip):
    """Serve one HTTP/2 connection (the preface is in the transport's buffer) until it ends."""
    connection = Http2Connection(conn, host, client_ip)
    goodbyes = GOODBYES.get(host)
    if goodbyes is None:
        goodbyes = GOODBYES[host] = Goodbyes()
    goodbyes.add(connection)
    try:
        connection.serve()
    finally:
        goodbyes.discard(connection)


class Goodbyes:
    """One greenlet per server, while HTTP/2 connections are open: a connection
    whose server stops (or whose slot admission wants) says GOAWAY within a tenth of
    a second, even while its reader waits and its streams run."""

    def __init__(self):
        self.connections = set()
        self.greenlet = None

    def add(self, connection):
        self.connections.add(connection)
        if self.greenlet is None or self.greenlet.dead:  # dead: its hub ended with a thread of serve()
            self.greenlet = spawn(self._run)

    def discard(self, connection):
        self.connections.discard(connection)

    def _run(self):
        try:
            while self.connections:
                sleep(GOODBYE_TICK)
                for connection in list(self.connections):
                    if connection.host.stopping or connection.conn.close_requested:
                        connection.say_goodbye()
        finally:
            self.greenlet = None


GOODBYES = WeakKeyDictionary()  # server -> its Goodbyes (a server's greenlets live in its thread's hub)


class ServerConnection(H2Connection):
    """h2's connection, server side, with our settings. The stream limit is ours to
    enforce (REFUSED_STREAM for one stream), so h2's own count, which walks every
    stream it holds on every HEADERS (quadratic in a flood), never runs; closed
    streams are forgotten once per read instead (``forget_closed``). Received header
    blocks are checked by ``http2_request.field_error`` (h2's checks in one pass, not
    its chain of generators) and cookie crumbs joined by ``build_request``."""

    # How many closed streams h2 remembers (to tell a late frame from a protocol error):
    # h2's 65536 would hold some MB per long-lived connection.
    MAX_CLOSED_STREAMS = 1024

    def __init__(self, settings):
        super().__init__(H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False,
                                         normalize_outbound_headers=False, split_outbound_cookies=False,
                                         validate_inbound_headers=False, normalize_inbound_headers=False))
        self.local_settings = Settings(client=False, initial_values=settings)

    @property
    def open_inbound_streams(self):
        return 0

    def forget_closed(self):
        """Drop the closed streams from h2's table (h2 does it only as it counts) once it
        holds more than FORGET_AT."""
        if len(self.streams) > FORGET_AT:
            H2Connection.open_inbound_streams.fget(self)


class Bucket:
    """A leaky bucket: ``hit`` is False once more than ``burst`` hits came faster than ``rate`` a second."""

    __slots__ = ("burst", "rate", "level", "last")

    def __init__(self, burst, rate):
        self.burst = burst
        self.rate = rate
        self.level = 0.0
        self.last = monotonic()

    def hit(self):
        now = monotonic()
        self.level = max(0.0, self.level - (now - self.last) * self.rate) + 1.0
        self.last = now
        return self.level <= self.burst


class Http2Connection(EventHandling, StreamSending):
    """One HTTP/2 connection: the reader (this greenlet), the streams, the output."""

    def __init__(self, conn, host, client_ip):
        settings = host.settings
        cfg = settings.cfg
        self.conn = conn
        self.host = host
        self.client_ip = client_ip
        self.max_streams = cfg["http2_max_concurrent_streams"]
        self.h2 = ServerConnection({
            SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: header_list_size(settings.limits),
        })
        self.output = Output(conn, self.h2, self._update)
        self.streams = {}  # stream id -> Http2Stream, from its HEADERS until its greenlet ends
        self.starting = []  # streams opened by the frames being read, whose greenlets start after
        self.greenlets = set()  # the streams' greenlets still running
        self.greenlets_ended = None  # an Event once the connection ends and waits for them
        self.count = 0  # streams begun
        self.body_waiters = 0  # streams whose handler waits for DATA
        self.window_waiters = set()  # streams waiting for flow-control window
        self.header_started = None  # when a header block began arriving in parts (CONTINUATION)
        self.idle_since = monotonic()
        self.goaway = None  # the last stream id of the GOAWAY sent, once sent
        self.flood = Bucket(FLOOD_BURST, FLOOD_RATE)
        resets = cfg["http2_max_resets"]
        self.resets = Bucket(resets, resets / RESET_SECONDS)
        self.ended = False
        self.header_priority = None  # the PriorityUpdated of the last request's HEADERS
        self.opening = b""  # the first bytes, until the frame after the preface is known to be SETTINGS

    # -- the reader --------------------------------------------------------------------

    def serve(self):
        h2 = self.h2
        h2.initiate_connection()
        h2.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)
        self.output.flush()
        data = self.conn.take()
        try:
            while True:
                if data:
                    self._receive(data)
                if (self.goaway is not None or self.ended) and not self.streams:
                    break
                if self.output.size > HIGH_WATER:
                    self._wait_output()
                data = self._read()
        except PeerError as exc:
            level = logging.INFO if exc.code == ENHANCE_YOUR_CALM else logging.DEBUG
            logger.log(level, "HTTP/2 connection from %s closed: %s", self.client_ip, exc)
            self._fail(exc.code)
        except ProtocolError as exc:
            logger.debug("HTTP/2 connection from %s: protocol error: %s", self.client_ip, exc)
            code = error_code(exc)
            if code is not None:
                self._fail(code)
            else:
                self.output.flush()
            self.conn.linger_on_close()
        except ConnectionEnded as exc:
            # A timeout, an eviction (admission, stop) or the peer gone: a GOAWAY says which
            # streams were seen, if the peer still reads.
            message = self._deadline()[1] if self.conn.expired else exc.message  # the deadline may have moved
            logger.debug("HTTP/2 connection from %s ended: %s", self.client_ip, message)
            if self.goaway is None:
                h2.close_connection(ErrorCodes.NO_ERROR)
        finally:
            self._end()

    def _fail(self, code):
        """End the connection with GOAWAY ``code`` (in place of what h2 queued, if anything)."""
        self.conn.linger_on_close()  # so the GOAWAY is read, not lost to a reset
        self.h2.clear_outbound_data_buffer()
        self.output.add(GoAwayFrame(0, last_stream_id=self.h2.highest_inbound_stream_id,
                                    error_code=code).serialize())

    def _read(self):
        """The next bytes from the peer, within the deadline of what the connection waits for."""
        self._update()
        if self.host.stopping or self.conn.close_requested:
            self.say_goodbye()
        deadline, message = self._deadline()
        return self.conn.receive(deadline, message, False)

    def _deadline(self):
        """(deadline, its timeout message) of the reader's wait: a header block's, the idle
        connection's, and the blocked output's, whichever comes first."""
        cfg = self.host.settings.cfg
        if self.header_started is not None:
            deadline, message = self.header_started + cfg["request_header_timeout"], "request header timeout"
        elif not self.streams:
            deadline, message = self.idle_since + cfg["keepalive_idle_timeout"], "keepalive timeout"
        else:
            deadline, message = NEVER, "closed"
        if self.output.blocked:
            sending = self.output.progress + cfg["response_send_timeout"]
            if sending < deadline:
                deadline, message = sending, "response send timeout"
        return deadline, message

    def _receive(self, data):
        h2 = self.h2
        if self.opening is not None:
            self._check_opening(data)
        events = h2.receive_data(data)  # on a ProtocolError, serve() sends h2's GOAWAY (or its own)
        check_fields(h2, events)  # before any stream of this read starts, as h2's own check would
        self.output.flush()  # h2's answers: SETTINGS and PING ACKs
        self.header_started = (self.header_started or monotonic()) if partial_header(h2) else None
        starting = self.starting
        handlers = HANDLERS
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(self, event)
        self.starting = []
        h2.forget_closed()
        for stream in starting:
            if stream.reset is None:  # not opened and reset in the same read
                self.greenlets.add(spawn_raw(self._run, stream))
        self.output.flush()

    def _check_opening(self, data):
        """RFC 9113 section 3.4: the preface's first frame is SETTINGS (h2 does not check)."""
        self.opening += data[:len(PREFACE) + 9]
        if len(self.opening) > len(PREFACE) + 3:
            if self.opening.startswith(PREFACE) and self.opening[len(PREFACE) + 3] != 4:
                raise PeerError("the first frame is not SETTINGS", ErrorCodes.PROTOCOL_ERROR)
            self.opening = None

    def _wait_output(self):
        """The peer does not read what we send: read no more from it until it does."""
        self.conn.set_phase(Phase.SENDING)
        self.output.wait_room(self.host.settings.cfg["response_send_timeout"])

    # -- streams -----------------------------------------------------------------------------

    def _run(self, stream):
        """A stream's greenlet: the body (whole, unless the handler streams it), then the exchange."""
        settings = stream.settings
        try:
            body = stream.body
            if type(body) is HTTPError:
                size = stream.refuse(body.status, body.message)
                exchange.refused(settings, stream.request, self.client_ip, body.status, size)
                return
            if type(body) is Http2Body and not settings.stream_body:
                stream.body = body.read_all()
            exchange.run(stream, settings, settings.redis)
        except BodyReadError as exc:
            if exc.status is not None and not stream.head_sent:
                size = stream.refuse(exc.status, exc.message)
                exchange.refused(settings, stream.request, self.client_ip, exc.status, size)
        except ConnectionEnded:
            pass
        except Exception:
            logger.error("HTTP/2 stream %d failed:\n%s", stream.id, traceback.format_exc())
        finally:
            self._finish(stream)
            greenlets = self.greenlets
            greenlets.discard(getcurrent())
            if not greenlets and self.greenlets_ended is not None:
                self.greenlets_ended.set()

    def _finish(self, stream):
        """The stream's greenlet ended: reset what is unfinished, hand back unread window."""
        h2 = self.h2
        sid = stream.id
        try:
            if not stream.ended:
                self.reset_stream(stream, "internal")
            elif stream.reset is None and type(stream.body) is Http2Body and not stream.body.ended:
                h2.reset_stream(sid, ErrorCodes.NO_ERROR)  # answered: the rest of the body is not needed
            if type(stream.body) is Http2Body:
                unread = stream.body.unread()
                if unread:
                    h2.acknowledge_received_data(unread, sid)
        except H2Error:
            pass
        self._forget(stream)
        self.output.flush()

    def _forget(self, stream):
        """The stream is done; with the last one, the connection's phase and deadline become idle's
        (while others run, forgetting one changes neither)."""
        self.streams.pop(stream.id, None)
        if not self.streams:
            self.idle_since = monotonic()
            if self.goaway is not None or self.ended:
                self.conn.evict()  # wake the reader: the connection is done
            self._update()

    def say_goodbye(self):
        """Graceful GOAWAY (stop, drain, admission asking for the slot): the streams
        begun finish, no new one starts. Built here because h2 sends nothing after its own."""
        if self.goaway is not None:
            return
        self.goaway = self.h2.highest_inbound_stream_id
        self.output.add(GoAwayFrame(0, last_stream_id=self.goaway, error_code=0).serialize())
        if not self.streams:
            self.conn.evict()

    def _update(self):
        """The connection's phase, for admission and the stop: what it waits for."""
        if self.output.blocked or self.window_waiters:
            phase = Phase.SENDING
        elif self.header_started is not None:
            phase = Phase.HEAD
        elif self.body_waiters:
            phase = Phase.BODY
        elif self.streams:
            phase = Phase.HANDLER
        else:
            phase = Phase.IDLE
        self.conn.set_phase(phase)
        self.conn.move_deadline(self._deadline()[0])

    def _end(self):
        """The connection ends: the last frames get a moment to leave, streams still running are ended."""
        self.ended = True
        for stream in list(self.streams.values()):
            if stream.reset is None:
                stream.reset = "connection closed"
            if type(stream.body) is Http2Body:
                stream.body.fail(BodyReadError("connection closed"))
            if stream.window is not None:
                stream.window.set()
        self.output.flush()
        self.output.drain(GOODBYE_SECONDS)
        self._kill_streams(GOODBYE_SECONDS)
        self.output.close()

    def _kill_streams(self, timeout):
        """End the streams' greenlets still running (GreenletExit in each) and wait for them,
        at most ``timeout`` seconds."""
        greenlets = self.greenlets
        if not greenlets:
            return
        self.greenlets_ended = Event()
        for greenlet in list(greenlets):
            kill(greenlet)
        sleep(0)  # the kills are delivered; a greenlet that never started is dead without a word
        greenlets.difference_update([greenlet for greenlet in greenlets if greenlet.dead])
        if greenlets:
            self.greenlets_ended.wait(timeout)


def header_list_size(limits):
    """SETTINGS_MAX_HEADER_LIST_SIZE from the HTTP/1.1 header limits (64 KiB at the defaults)."""
    return min(65536, (limits.headers + 1) * limits.line)


def partial_header(h2):
    """Whether a header block has begun and waits for its CONTINUATION frames."""
    return bool(getattr(h2.incoming_buffer, "_headers_buffer", None))


def error_code(exc):
    """The GOAWAY code RFC 9113 prescribes where h2 reports a plain PROTOCOL_ERROR, or None:
    an HPACK error is a COMPRESSION_ERROR (section 4.3), a SETTINGS ACK with a payload
    a FRAME_SIZE_ERROR (section 6.5; hyperframe says so only in its message)."""
    cause = exc.__cause__
    if isinstance(cause, HPACKError) and not isinstance(exc, DenialOfServiceError):  # a bomb: ENHANCE_YOUR_CALM
        return ErrorCodes.COMPRESSION_ERROR
    if isinstance(cause, InvalidDataError) and str(cause).startswith("SETTINGS ack frame must not have payload"):
        return ErrorCodes.FRAME_SIZE_ERROR
    return None
