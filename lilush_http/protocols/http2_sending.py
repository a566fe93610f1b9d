"""The half of an HTTP/2 connection its streams call: response HEADERS and DATA within
the peer's flow-control windows, stream resets, and the body window handed back as
the handler reads (Http2Connection mixes it in; h2 holds the state)."""

from gevent import sleep
from gevent.event import Event

try:
    from h2.exceptions import FlowControlError, H2Error
except ImportError:  # pragma: no cover - see http2.AVAILABLE
    H2Error = FlowControlError = Exception

from ..transport import ConnectionEnded
from .http2_output import HIGH_WATER

CODES = {"internal": 2, "refused": 7, "cancel": 8, "no error": 0}  # RST_STREAM codes by reason
QUANTUM = 32 * 1024  # body bytes a stream queues before the other streams get a turn
MAX_PIECE = 64 * 1024  # the largest DATA frame sent, whatever SETTINGS_MAX_FRAME_SIZE the peer allows
SMALL = 16384  # a body this size fits one DATA frame whatever the peer's SETTINGS_MAX_FRAME_SIZE


class StreamSending:
    """What streams call on their connection (which has ``h2``, ``output``, ``window_waiters``)."""

    def send_head(self, stream, status, fields, end):
        stream.check()
        try:
            self.h2.send_headers(stream.id, [(":status", str(status))] + fields, end_stream=end)
        except H2Error as exc:
            stream.reset = "stream closed: %s" % exc
            raise ConnectionEnded(stream.reset) from None
        stream.head_sent = True
        self.output.flush()

    def send_data(self, stream, data, end):
        """``data`` on the stream in frames the peer's windows allow; waits for window and
        for the output to drain (response_send_timeout each)."""
        h2 = self.h2
        sid = stream.id
        output = self.output
        size = len(data)
        if 0 < size <= SMALL and output.size <= HIGH_WATER:  # the common case: one frame, if the windows allow
            stream.check()
            try:
                h2.send_data(sid, data, end_stream=end)
            except FlowControlError:
                pass  # the loop below waits for window
            except H2Error as exc:
                stream.reset = "stream closed: %s" % exc
                raise ConnectionEnded(stream.reset) from None
            else:
                output.flush()
                return
        timeout = stream.settings.cfg["response_send_timeout"]
        pos = 0
        turn = 0
        while True:
            if turn >= QUANTUM:  # let the other streams' greenlets have their turn
                turn = 0
                sleep(0)
            stream.check()
            if output.size > HIGH_WATER:
                output.wait_room(timeout)
                continue
            left = size - pos
            try:
                if left:
                    window = h2.local_flow_control_window(sid)
                    if window <= 0:
                        self._wait_window(stream, timeout)
                        continue
                    piece = min(left, window, h2.max_outbound_frame_size, MAX_PIECE)
                    h2.send_data(sid, data[pos:pos + piece] if piece < size else data,
                                 end_stream=end and piece == left)
                    pos += piece
                    turn += piece
                elif end:
                    h2.end_stream(sid)
            except H2Error as exc:
                stream.reset = "stream closed: %s" % exc
                raise ConnectionEnded(stream.reset) from None
            output.flush()
            if pos == size:
                return

    def _wait_window(self, stream, timeout):
        if stream.window is None:
            stream.window = Event()
        stream.window.clear()
        self.window_waiters.add(stream)
        self._update()
        try:
            opened = stream.window.wait(timeout)
        finally:
            self.window_waiters.discard(stream)
            self._update()
        if not opened and stream.reset is None:
            self.reset_stream(stream, "cancel")
            raise ConnectionEnded("response send timeout")

    def reset_stream(self, stream, why):
        if stream.reset is None:
            stream.reset = why
            try:
                self.h2.reset_stream(stream.id, CODES[why])
            except H2Error:
                pass
            self.output.flush()

    def consumed(self, stream, flow_length):
        """The handler read DATA of ``flow_length``: the peer may send that much more."""
        if flow_length:
            try:
                self.h2.acknowledge_received_data(flow_length, stream.id)
            except H2Error:
                return
            self.output.flush()

    def waiting_body(self, stream, waiting):
        self.body_waiters += 1 if waiting else -1
        self._update()

    def _wake_senders(self):
        for stream in self.window_waiters:
            stream.window.set()
