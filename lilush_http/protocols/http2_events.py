"""The events h2 reports for what an HTTP/2 peer sent, and what the connection does
with each: a request opens a stream (or is refused), DATA feeds its body, a reset
ends it, window updates wake senders; control frames and resets are counted
against the flood and Rapid Reset caps (Http2Connection mixes this in)."""

import time

try:
    from h2.errors import ErrorCodes
    from h2.events import (ConnectionTerminated, DataReceived, PingReceived, PriorityUpdated, RemoteSettingsChanged,
                           RequestReceived, StreamEnded, StreamReset, TrailersReceived, UnknownFrameReceived,
                           WindowUpdated)
    from h2.exceptions import H2Error, ProtocolError
except ImportError:  # pragma: no cover - see http2.AVAILABLE
    pass

from ..body import BodyReadError
from .http2_request import build_request, field_error
from .http2_stream import Http2Body, Http2Stream

ENHANCE_YOUR_CALM = 0xb
RESET_SECONDS = 10.0  # http2_max_resets counts the streams a client resets within this many seconds


class PeerError(Exception):
    """The peer broke a rule h2 does not check, or a rate cap: GOAWAY with ``code``."""

    def __init__(self, message, code=ENHANCE_YOUR_CALM):
        super().__init__(message)
        self.code = code


def check_fields(h2, events):
    """Every header block of ``events`` well-formed, or GOAWAY PROTOCOL_ERROR queued on ``h2``
    and ProtocolError raised, as h2 does when it validates them itself."""
    for event in events:
        kind = type(event)
        if kind is RequestReceived or kind is TrailersReceived:
            error = field_error(event.headers, kind is TrailersReceived)
            if error is not None:
                try:
                    h2.close_connection(ErrorCodes.PROTOCOL_ERROR)
                except H2Error:
                    pass
                raise ProtocolError("malformed header block: " + error)


class EventHandling:
    """The connection's answers to h2's events (``HANDLERS`` maps each event type to one)."""

    def _on_request(self, event):
        sid = event.stream_id
        self.header_priority = event.priority_updated  # h2 reports it again as an event of its own
        if self.goaway is not None or len(self.streams) >= self.max_streams:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            if not self.flood.hit():
                raise PeerError("too many streams refused")
            return
        settings = self.host.settings
        self.count += 1
        self.conn.begin_request()
        started = time.perf_counter()
        request, error = build_request(event.headers, settings.limits)
        stream = Http2Stream(self, sid, request, settings, self.count, started)
        if error is not None:
            stream.body = error  # answered by _run
        elif event.stream_ended is not None and request.content_length:
            self.h2.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 section 8.1.1: no DATA came
            return
        elif event.stream_ended is None:
            stream.body = Http2Body(stream, request.content_length, settings.cfg["request_body_timeout"],
                                    settings.limits.body)
        self.streams[sid] = stream
        self.starting.append(stream)

    def _on_data(self, event):
        stream = self.streams.get(event.stream_id)
        body = stream.body if stream is not None else None
        if type(body) is not Http2Body or not body.feed(event.data, event.flow_controlled_length):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        if not event.data and event.stream_ended is None and not self.flood.hit():
            raise PeerError("a flood of empty DATA frames")

    def _on_end(self, event):
        stream = self.streams.get(event.stream_id)
        if stream is not None and type(stream.body) is Http2Body:
            stream.body.end()

    def _on_reset(self, event):
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        stream.reset = "stream reset by the client"
        if type(stream.body) is Http2Body:
            stream.body.fail(BodyReadError("stream reset by the client"))
        if stream.window is not None:
            stream.window.set()
        if stream in self.starting:  # reset before its greenlet started: it never will
            self._forget(stream)
        if not stream.ended and not self.resets.hit():
            raise PeerError("more than %d streams reset within %d s (Rapid Reset)"
                           % (self.resets.burst, RESET_SECONDS))

    def _on_window(self, event):
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.window is not None:
                stream.window.set()
        else:
            self._wake_senders()

    def _on_settings(self, event):
        self._wake_senders()
        self._on_control(event)

    def _on_priority(self, event):
        """A PRIORITY frame counts against the flood cap; priority carried by a request's
        own HEADERS (as browsers send it) does not."""
        if event is not self.header_priority:
            self._on_control(event)

    def _on_control(self, event):
        if not self.flood.hit():
            raise PeerError("a flood of %s frames" % type(event).__name__)

    def _on_goaway(self, event):
        self.ended = True  # the peer leaves; h2 sends nothing more after its GOAWAY


try:
    HANDLERS = {RequestReceived: EventHandling._on_request, DataReceived: EventHandling._on_data,
                StreamEnded: EventHandling._on_end, StreamReset: EventHandling._on_reset,
                WindowUpdated: EventHandling._on_window, RemoteSettingsChanged: EventHandling._on_settings,
                PingReceived: EventHandling._on_control, PriorityUpdated: EventHandling._on_priority,
                UnknownFrameReceived: EventHandling._on_control, ConnectionTerminated: EventHandling._on_goaway}
except NameError:  # pragma: no cover - h2 missing
    HANDLERS = {}
