"""WebSocket frames with permessage-deflate (RFC 7692), by wsproto's frame protocol:
the codec of a session that negotiated the extension, with the interface of
websocket_frames.Frames (``receive`` gives the same events; ``message``,
``ping``, ``pong``, ``close`` build frames). A session without an extension uses
websocket_frames, which is faster.

When the ``websockets`` package is installed, its C XOR unmasks client frames
(wsproto's pure-Python unmasking of a 64 KB message costs about 150 times more).
"""

import zlib

from wsproto import frame_protocol
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from .websocket_frames import (BINARY, CLOSE, FAILED, MESSAGE_TOO_BIG, PING, PONG, TEXT, apply_mask, close_frame,
                               ping_frame, pong_frame)


class FastMasker(frame_protocol.XorMaskerSimple):
    """wsproto's unmasking (same results, key rotation across reads) by the C
    ``apply_mask`` of the websockets package."""

    def process(self, data):
        if not data:
            return bytearray()
        key = self._masking_key
        rotation = len(data) % 4
        self._masking_key = key[rotation:] + key[:rotation]
        return bytearray(apply_mask(data, bytes(key)))


if apply_mask is not None:
    frame_protocol.XorMaskerSimple = FastMasker


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate whose inflation of one read stops just past the message
    limit, so a small compressed frame cannot inflate to gigabytes (close 1009)."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def frame_inbound_payload_data(self, proto, data):
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        try:
            out = self._decompressor.decompress(bytes(data), self.limit + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out


KINDS = {Opcode.TEXT: TEXT, Opcode.BINARY: BINARY, Opcode.PING: PING, Opcode.PONG: PONG, Opcode.CLOSE: CLOSE}


class DeflateFrames:
    """wsproto's frame protocol with ``extension`` behind the session's codec interface:
    frames (or parts of them) reassembled into messages of at most ``max_message_size``."""

    def __init__(self, max_message_size, data=b"", extension=None):
        self.max_message_size = max_message_size
        self._proto = FrameProtocol(False, [extension] if extension is not None else [])
        self._parts = []
        self._size = 0
        self._done = False
        if data:
            self._proto.receive_bytes(data)

    def receive(self, data):
        """The events of the frames ``data`` completes, in order."""
        if self._done:
            return []
        self._proto.receive_bytes(data)
        events = []
        try:
            for frame in self._proto.received_frames():
                event = self._event(frame)
                if event is not None:
                    events.append(event)
                    if event[0] == CLOSE or event[0] == FAILED:
                        self._done = True
                        break
        except ParseFailed as exc:
            self._done = True
            events.append((FAILED, (int(exc.code), str(exc))))
        return events

    def _event(self, frame):
        kind = KINDS[frame.opcode]
        if kind == CLOSE:
            code, reason = frame.payload
            return CLOSE, (int(code), reason)
        if kind == PING or kind == PONG:
            return kind, bytes(frame.payload)
        payload = frame.payload
        self._size += len(payload.encode("utf-8")) if kind == TEXT else len(payload)  # bytes, as without deflate
        if self._size > self.max_message_size:
            return FAILED, (MESSAGE_TOO_BIG, "message over %d bytes" % self.max_message_size)
        self._parts.append(payload)
        if not frame.message_finished:
            return None
        message = ("" if kind == TEXT else b"").join(self._parts)
        self._parts, self._size = [], 0
        return kind, message

    def message(self, message):
        """A text frame for ``str``, a binary one for bytes-like, compressed as negotiated."""
        return bytes(self._proto.send_data(message if isinstance(message, str) else bytes(message)))

    # Control frames are never compressed: the same as without the extension.
    ping = staticmethod(ping_frame)
    pong = staticmethod(pong_frame)
    close = staticmethod(close_frame)
