"""WebSocket frames without extensions (RFC 6455), sans-I/O: ``FrameReader`` turns
a client's bytes into messages and control frames, enforcing the protocol's
rules; the builders make the server's (unmasked) frames.

A session without permessage-deflate uses this instead of wsproto: it does the
same checks in one pass over each frame instead of several layers of objects
per frame. Unmasking uses the C ``apply_mask`` of the ``websockets`` package
when it is installed, else one big-integer XOR (never a loop over bytes).

Events, here and from the wsproto codec (websocket_deflate.py), are pairs:
``(TEXT, str)`` and ``(BINARY, bytes)`` for a complete message, ``(PING, bytes)``,
``(PONG, bytes)``, ``(CLOSE, (code, reason))`` for the peer's close, and
``(FAILED, (code, reason))`` for a protocol violation or a limit (the close
code to send). Nothing is read after a close or a failure.
"""

import codecs

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FAILED = -1

PROTOCOL_ERROR = 1002
NO_STATUS = 1005
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009
LOCAL_ONLY_CODES = (1005, 1006, 1015)  # never in a close frame: stand for "none", "dropped", "TLS failed"
KNOWN_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013))

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets not installed, or without its C extension
    apply_mask = None


def python_xor_mask(data, key):
    """``data`` XOR the 4-byte ``key`` repeated (masking and unmasking are the same)."""
    size = len(data)
    if not size:
        return b""
    repeated = key * (size // 4 + 1)
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated[:size], "little")).to_bytes(size, "little")


xor_mask = apply_mask if apply_mask is not None else python_xor_mask  # the C one gives the same bytes


class Failed(Exception):
    """A frame breaks the protocol or a limit: ``code`` is the close code to answer with."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class FrameReader:
    """A client's frames in, events out (see the module docstring); fragments are
    reassembled into messages of at most ``max_message_size`` bytes."""

    def __init__(self, max_message_size, data=b""):
        self.max_message_size = max_message_size
        self._chunks = [data] if data else []  # bytes received, not yet a whole frame
        self._buffered = len(data)
        self._needed = 2  # bytes the frame at the start of the buffer needs in all (when known)
        self._opcode = None  # the opcode of the fragmented message in progress
        self._parts = []
        self._size = 0
        self._decoder = None  # UTF-8 across the fragments of a text message
        self._done = False  # a close or a failure was read: the rest is ignored

    def receive(self, data):
        """The events of the frames ``data`` completes, in order."""
        if self._done:
            return []
        if self._chunks:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._needed:
                return []
            data = b"".join(self._chunks)
            self._chunks = []
        events = []
        try:
            rest = self._frames(data, events)
        except Failed as exc:
            self._done = True
            events.append((FAILED, (exc.code, exc.reason)))
            return events
        if rest and not self._done:
            self._chunks = [rest]
            self._buffered = len(rest)
        return events

    def _frames(self, data, events):
        """Read the whole frames at the start of ``data`` into ``events``; returns the
        bytes left over (a measured hot loop, hence its length)."""
        pos = 0
        end = len(data)
        self._needed = 2
        while end - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            opcode = first & 0x0F
            length = second & 0x7F
            if first & 0x70 or not second & 0x80 or opcode & 0x7 > 2:
                self._check_header(first, second, opcode)
            if opcode & 0x8 and (not first & 0x80 or length > 125):
                raise Failed(PROTOCOL_ERROR, "a fragmented control frame" if not first & 0x80
                             else "a control frame over 125 bytes")
            start = pos + 6
            if length >= 126:
                start = pos + (8 if length == 126 else 14)
                if end < start:
                    self._needed = start - pos
                    break
                length = self._extended_length(data[pos + 2:start - 4])
            if not opcode & 0x8:
                if (opcode == CONTINUATION) is (self._opcode is None):
                    raise Failed(PROTOCOL_ERROR, "a continuation with no message to continue" if opcode == 0
                                 else "a new message inside a fragmented one")
                if self._size + length > self.max_message_size:
                    raise Failed(MESSAGE_TOO_BIG, "message over %d bytes" % self.max_message_size)
            stop = start + length
            if end < stop:
                self._needed = stop - pos
                break
            # A large payload is unmasked straight from the buffer (one copy less).
            payload = xor_mask(data[start:stop] if length < 4096 else memoryview(data)[start:stop],
                               data[start - 4:start])
            pos = stop
            if first & 0x80 and (opcode == BINARY or opcode == TEXT):
                if opcode == BINARY:
                    events.append((BINARY, payload))
                    continue
                try:
                    events.append((TEXT, payload.decode("utf-8")))
                except UnicodeDecodeError:
                    raise Failed(INVALID_DATA, "invalid UTF-8 in a text message") from None
                continue
            event = self._frame(opcode, first & 0x80, payload)
            if event is not None:
                events.append(event)
                if self._done:
                    return b""
        return data[pos:] if pos else data

    @staticmethod
    def _check_header(first, second, opcode):
        """Reserved bits, an unmasked frame or a reserved opcode: each is a protocol error."""
        if opcode & 0x7 > 2:
            raise Failed(PROTOCOL_ERROR, "reserved opcode %#x" % opcode)
        if first & 0x70:
            raise Failed(PROTOCOL_ERROR, "reserved bits set without an extension")
        raise Failed(PROTOCOL_ERROR, "an unmasked client frame")

    @staticmethod
    def _extended_length(field):
        """A 16- or 64-bit length, which must be the shortest form and (64-bit) have its top bit 0."""
        length = int.from_bytes(field, "big")
        if len(field) == 2:
            if length < 126:
                raise Failed(PROTOCOL_ERROR, "a 16-bit length under 126")
        elif length >> 63:
            raise Failed(PROTOCOL_ERROR, "a 64-bit length with its top bit set")
        elif length < 65536:
            raise Failed(PROTOCOL_ERROR, "a 64-bit length under 65536")
        return length

    def _frame(self, opcode, fin, payload):
        """The event of a control frame or a fragment (None while its message is incomplete)."""
        if opcode == PING or opcode == PONG:
            return opcode, payload
        if opcode == CLOSE:
            self._done = True
            return CLOSE, close_reason(payload)
        if opcode != CONTINUATION:
            self._opcode = opcode
            self._decoder = codecs.getincrementaldecoder("utf-8")() if opcode == TEXT else None
        self._size += len(payload)  # bytes on the wire, not characters
        if self._decoder is not None:
            try:
                payload = self._decoder.decode(payload, bool(fin))
            except UnicodeDecodeError:
                raise Failed(INVALID_DATA, "invalid UTF-8 in a text message") from None
        self._parts.append(payload)
        if not fin:
            return None
        kind = self._opcode
        message = ("" if kind == TEXT else b"").join(self._parts)
        self._opcode, self._decoder, self._parts, self._size = None, None, [], 0
        return kind, message


def close_reason(payload):
    """The (code, reason) of a close frame's payload; Failed when it is malformed."""
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise Failed(PROTOCOL_ERROR, "a close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not 1000 <= code <= 4999 or code in LOCAL_ONLY_CODES or (code < 3000 and code not in KNOWN_CODES):
        raise Failed(PROTOCOL_ERROR, "a close frame with code %d" % code)
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise Failed(INVALID_DATA, "invalid UTF-8 in a close reason") from None


# -- the server's frames (never masked) -----------------------------------------------------

def data_frame(opcode, payload):
    """One final frame of ``payload`` bytes: every length form (7, 16 and 64 bits)."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big") + payload


def message_frame(message):
    """A text frame for ``str``, a binary one for bytes-like."""
    if isinstance(message, str):
        return data_frame(TEXT, message.encode("utf-8"))
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise TypeError("a message is str or bytes-like, not %s" % type(message).__name__)
    return data_frame(BINARY, bytes(message))


def ping_frame(payload=b""):
    return _control_frame(PING, payload)


def pong_frame(payload=b""):
    return _control_frame(PONG, payload)


def close_frame(code=None, reason=""):
    """A close frame: no payload for ``code`` None or 1005, 1000 for the other
    local-only codes; the reason cut to fit 125 bytes on a character boundary."""
    if code is None or code == NO_STATUS:
        return _control_frame(CLOSE, b"")
    if code in LOCAL_ONLY_CODES:
        code = 1000
    reason = (reason or "").encode("utf-8")
    if len(reason) > 123:
        reason = reason[:123].decode("utf-8", "ignore").encode("utf-8")
    return _control_frame(CLOSE, int(code).to_bytes(2, "big") + reason)


def _control_frame(opcode, payload):
    payload = bytes(payload)
    if len(payload) > 125:
        raise ValueError("a control frame carries at most 125 bytes")
    return bytes((0x80 | opcode, len(payload))) + payload


class Frames(FrameReader):
    """The frame codec of a session without extensions: ``receive`` (FrameReader)
    and the builders ``message``, ``ping``, ``pong``, ``close`` (the interface
    websocket_deflate.DeflateFrames has too)."""

    message = staticmethod(message_frame)
    ping = staticmethod(ping_frame)
    pong = staticmethod(pong_frame)
    close = staticmethod(close_frame)
