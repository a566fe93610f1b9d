"""A frame-level property of the live WebSocket server (hypothesis): any sequence of
frames, well-formed or not (bad masks, reserved bits and opcodes, oversize
messages, invalid UTF-8, control frames between fragments), gets the echo of
each complete message and the close code RFC 6455 prescribes, computed here by
a small model; the session then ends and nothing is left behind."""

import codecs
import logging
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.events import BytesMessage, CloseConnection, Pong, TextMessage

from conftest import LiveServer
from test_websocket import RawClient, echo, frame

LIMIT = 1024


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def live():
    problems = Collect()
    logging.getLogger("lilush_http").addHandler(problems)
    server = LiveServer(echo, websocket={"max_message_size": LIMIT})
    server.problems = problems.records
    yield server
    server.stop()
    logging.getLogger("lilush_http").removeHandler(problems)


text = st.text(max_size=40).map(lambda s: s.encode("utf-8"))
invalid_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\xf8\x88\x80\x80\x80"])
close_payloads = st.one_of(
    st.just(b""),
    st.sampled_from([1000, 1001, 1003, 1008, 3000, 4999]).map(lambda c: struct.pack("!H", c) + b"bye"),
    st.sampled_from([b"\x03", struct.pack("!H", 999), struct.pack("!H", 1005), struct.pack("!H", 2999),
                     struct.pack("!H", 5000), struct.pack("!H", 1000) + b"\xff"]),
)
frames = st.one_of(
    st.tuples(st.sampled_from([0x0, 0x1]), st.booleans(), st.one_of(text, invalid_utf8), st.just(True), st.just(0)),
    st.tuples(st.sampled_from([0x0, 0x2]), st.booleans(), st.binary(max_size=700), st.just(True), st.just(0)),
    st.tuples(st.sampled_from([0x9, 0xA]), st.booleans().map(lambda b: b or True), st.binary(max_size=20),
              st.just(True), st.just(0)),
    st.tuples(st.just(0x8), st.just(True), close_payloads, st.just(True), st.just(0)),
    # malformed: unmasked, reserved bits, reserved opcodes, fragmented or oversize control frames
    st.tuples(st.sampled_from([0x1, 0x2]), st.just(True), st.binary(max_size=10), st.just(False), st.just(0)),
    st.tuples(st.just(0x2), st.just(True), st.binary(max_size=10), st.just(True), st.sampled_from([1, 2, 4])),
    st.tuples(st.sampled_from([0x3, 0x7, 0xB, 0xF]), st.just(True), st.binary(max_size=10), st.just(True),
              st.just(0)),
    st.tuples(st.just(0x9), st.just(False), st.binary(max_size=10), st.just(True), st.just(0)),
    st.tuples(st.just(0x9), st.just(True), st.binary(min_size=126, max_size=130), st.just(True), st.just(0)),
)


def model(sequence):
    """What the server must answer: (echoed messages, pongs, close codes allowed),
    close None when the sequence leaves the session open."""
    messages, pongs = [], []
    kind = None
    parts = []
    decoder = None
    for opcode, fin, payload, masked, rsv in sequence:
        if not masked or rsv or opcode in (0x3, 0x7, 0xB, 0xF):
            return messages, pongs, {1002}
        if opcode >= 0x8:
            if not fin or len(payload) > 125:
                return messages, pongs, {1002}
            if opcode == 0x9:
                pongs.append(payload)
            elif opcode == 0x8:
                return messages, pongs, close_answer(payload)
            continue
        if (opcode == 0) == (kind is None):  # a continuation with nothing to continue, or a new message inside one
            return messages, pongs, {1002}
        if kind is None:
            kind = "text" if opcode == 0x1 else "binary"
            decoder = codecs.getincrementaldecoder("utf-8")() if kind == "text" else None
        parts.append(payload)
        size = sum(map(len, parts))
        if decoder is not None:
            try:
                decoder.decode(payload, final=fin)
            except UnicodeDecodeError:
                return messages, pongs, {1007, 1009} if size > LIMIT else {1007}
        if size > LIMIT:
            return messages, pongs, {1009}
        if fin:
            data = b"".join(parts)
            messages.append(data.decode("utf-8") if kind == "text" else data)
            kind, parts = None, []
    return messages, pongs, None


def close_answer(payload):
    if not payload:
        return {1005}
    if len(payload) == 1:
        return {1002}
    code = struct.unpack("!H", payload[:2])[0]
    if not 1000 <= code <= 4999 or code in (1005, 1006, 1015) or 1012 <= code <= 2999 and code not in (1012, 1013, 1014):
        return {1002}
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return {1007}
    return {code}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(frames, min_size=1, max_size=8), cut=st.integers(min_value=1, max_value=64))
def test_any_frames_get_the_echo_and_the_right_close_code(live, sequence, cut):
    messages, pongs, close = model(sequence)
    raw = RawClient(live)
    data = b"".join(frame(opcode, payload, fin, masked, rsv) for opcode, fin, payload, masked, rsv in sequence)
    for start in range(0, len(data), cut * 7):  # in pieces: the server must not depend on read boundaries
        raw.sock.sendall(data[start:start + cut * 7])
    got_messages, got_pongs, code = [], [], None
    deadline = time.monotonic() + 5
    open_ended = close is None
    closed_by_us = False
    while code is None and time.monotonic() < deadline:
        if open_ended and len(got_messages) == len(messages) and len(got_pongs) == len(pongs):
            raw.send(CloseConnection(code=1000))  # everything echoed: now close
            open_ended, close, closed_by_us = False, {1000}, True
        event = raw.until((TextMessage, BytesMessage, Pong, CloseConnection), deadline - time.monotonic())
        if event is None:
            break
        if isinstance(event, CloseConnection):
            code = int(event.code)
        elif isinstance(event, Pong):
            got_pongs.append(event.payload)
        else:
            got_messages.append(event.data)
    raw.sock.close()
    assert code in close, (sequence, code, close)
    # A message arriving with a close (or a violation) may go unanswered: the
    # server answers the close at once, as RFC 6455 section 5.5.1 asks.
    assert got_messages == messages[:len(got_messages)]
    assert got_pongs == pongs[:len(got_pongs)]
    if closed_by_us:
        assert got_messages == messages and got_pongs == pongs
    wait = time.monotonic() + 5
    while len(live.srv._websockets) and time.monotonic() < wait:  # the session ended: no greenlet stuck
        time.sleep(0.01)
    assert len(live.srv._websockets) == 0


def test_server_is_healthy_after_the_property(live):
    import requests
    assert requests.get(live.url, timeout=5).text == "plain"
    assert not live.problems, [r.getMessage() for r in live.problems]  # nothing logged at WARNING or above
    assert not live.srv._connections or all(not c.taken_over for c in live.srv._connections)
