"""The lean WebSocket frame codec (lilush_http/protocols/websocket_frames.py): its
rules byte by byte, a differential property against wsproto's frame protocol,
and real clients served by both codecs (plain, and permessage-deflate on wsproto)."""

import os
import socket
import struct
import time

import pytest
import websocket as websocket_client
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect as websockets_connect
from wsproto.frame_protocol import FrameProtocol, Opcode, XorMaskerSimple

from lilush_http import websocket
from lilush_http.protocols import websocket_frames
from lilush_http.protocols.websocket_deflate import DeflateFrames
from lilush_http.protocols.websocket_frames import (BINARY, CLOSE, FAILED, PING, PONG, TEXT, FrameReader, Frames,
                                                    close_frame, data_frame, python_xor_mask, xor_mask)
from test_websocket import frame, ws_url

LIMIT = 1 << 20


def events(data, limit=LIMIT, pieces=1):
    """What a FrameReader makes of ``data`` fed in ``pieces`` about equal reads."""
    reader = FrameReader(limit)
    step = max(1, -(-len(data) // pieces))
    out = []
    for start in range(0, len(data), step):
        out += reader.receive(data[start:start + step])
    return out


def failure(data, limit=LIMIT):
    out = events(data, limit)
    assert out and out[-1][0] == FAILED, out
    return out[-1][1][0]


# -- the rules, byte by byte --------------------------------------------------------------

@pytest.mark.parametrize("data, code", [
    (frame(0x1, b"ok", masked=False), 1002),                         # a client frame must be masked
    (frame(0x1, b"x", rsv=4), 1002),                                 # RSV1 without an extension
    (frame(0x2, b"x", rsv=1), 1002),                                 # RSV3
    (frame(0x3, b"x"), 1002),                                        # reserved data opcode
    (frame(0xB, b"x"), 1002),                                        # reserved control opcode
    (frame(0x9, b"p", fin=False), 1002),                             # a fragmented control frame
    (frame(0x9, b"p" * 126), 1002),                                  # a control frame over 125 bytes
    (frame(0x0, b"x"), 1002),                                        # a continuation with nothing to continue
    (frame(0x1, b"a", fin=False) + frame(0x2, b"b"), 1002),          # a new message inside a fragmented one
    (b"\x82\xfe\x00\x7d" + b"\0" * 4 + b"x" * 125, 1002),            # 16-bit length where 7 bits do
    (b"\x82\xff" + struct.pack("!Q", 1000) + b"\0" * 1004, 1002),    # 64-bit length where 16 bits do
    (b"\x82\xff" + struct.pack("!Q", 1 << 63) + b"\0" * 4, 1002),    # 64-bit length with its top bit set
    (frame(0x1, b"\xff\xfe"), 1007),                                 # invalid UTF-8
    (frame(0x1, b"\xed\xa0\x80"), 1007),                             # a UTF-16 surrogate in UTF-8
    (frame(0x1, b"\xe2\x82", fin=False) + frame(0x0, b"!"), 1007),   # a character cut by the message end
    (frame(0x1, b"ok", fin=False) + frame(0x0, b"\xc3\x28"), 1007),  # invalid in the second fragment
    (frame(0x8, b"\x03"), 1002),                                     # a close payload of one byte
    (frame(0x8, struct.pack("!H", 999)), 1002),                      # close codes out of range ...
    (frame(0x8, struct.pack("!H", 1005)), 1002),                     # ... local-only ...
    (frame(0x8, struct.pack("!H", 1004)), 1002),                     # ... reserved ...
    (frame(0x8, struct.pack("!H", 2999)), 1002),
    (frame(0x8, struct.pack("!H", 5000)), 1002),
    (frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),           # a close reason in invalid UTF-8
])
def test_each_violation_fails_with_its_close_code(data, code):
    assert failure(data) == code


def test_the_size_limit_counts_wire_bytes_across_fragments_before_the_payload_arrives():
    assert failure(frame(0x2, b"x" * 11), limit=10) == 1009
    assert failure(frame(0x1, "é".encode() * 6), limit=10) == 1009  # 6 characters, 12 bytes
    assert failure(frame(0x2, b"x" * 6, fin=False) + frame(0x0, b"x" * 5), limit=10) == 1009
    assert events(frame(0x2, b"x" * 5, fin=False) + frame(0x0, b"x" * 5), limit=10) == [(BINARY, b"x" * 10)]
    # A 2**62-byte header alone is refused: nothing waits for (or buffers) its payload.
    assert FrameReader(LIMIT).receive(b"\x82\xff" + struct.pack("!Q", 1 << 62) + b"\0" * 4) == [
        (FAILED, (1009, "message over %d bytes" % LIMIT))]


def test_valid_close_codes_and_an_empty_close():
    assert events(frame(0x8, b"")) == [(CLOSE, (1005, ""))]
    for code in (1000, 1003, 1011, 1013, 3000, 4999):
        assert events(frame(0x8, struct.pack("!H", code) + "é".encode())) == [(CLOSE, (code, "é"))]


def test_nothing_is_read_after_a_close_or_a_failure():
    reader = FrameReader(LIMIT)
    assert reader.receive(frame(0x8, b"") + frame(0x1, b"late")) == [(CLOSE, (1005, ""))]
    assert reader.receive(frame(0x1, b"later")) == []
    reader = FrameReader(LIMIT)
    assert reader.receive(frame(0x3, b"")) == [(FAILED, (1002, "reserved opcode 0x3"))]
    assert reader.receive(frame(0x1, b"later")) == []


def test_fragments_reassemble_with_control_frames_between():
    data = (frame(0x1, "frag".encode(), fin=False) + frame(0x9, b"ping!") + frame(0x0, b"ment\xe2\x9c", fin=False)
            + frame(0xA, b"pong") + frame(0x0, b"\x93") + frame(0x2, b"\0", fin=False) + frame(0x0, b"\1"))
    expected = [(PING, b"ping!"), (PONG, b"pong"), (TEXT, "fragment✓"), (BINARY, b"\0\1")]
    for pieces in (1, 3, 7, len(data)):  # read boundaries anywhere, down to a byte at a time
        assert events(data, pieces=pieces) == expected


@pytest.mark.parametrize("size", [0, 1, 125, 126, 1000, 65535, 65536, 70000, 1 << 20])
def test_all_three_length_forms_both_ways(size):
    payload = os.urandom(size)
    assert events(frame(0x2, payload), pieces=5) == [(BINARY, payload)]
    built = data_frame(BINARY, payload)
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(built) == header + size and built[0] == 0x82 and not built[1] & 0x80  # final, unmasked
    client = FrameProtocol(True, [])  # wsproto as a client reads what we built
    client.receive_bytes(built)
    (got,) = list(client.received_frames())
    assert got.opcode is Opcode.BINARY and got.payload == payload and got.message_finished


def test_server_control_frames():
    assert close_frame(1000, "bye") == b"\x88\x05\x03\xe8bye"
    assert close_frame(1005) == close_frame(None) == b"\x88\x00"  # "no status" goes as an empty close
    assert close_frame(1006)[2:4] == b"\x03\xe8"  # local-only codes never go on the wire
    long_close = close_frame(1000, "é" * 100)
    assert len(long_close) == 126 and long_close[4:].decode("utf-8") == "é" * 61  # cut on a character boundary
    assert Frames.ping(b"x") == b"\x89\x01x" and Frames.pong(b"y") == b"\x8a\x01y"
    with pytest.raises(ValueError):
        Frames.ping(b"x" * 126)
    with pytest.raises(TypeError):
        Frames.message(42)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 63, 64, 65, 4099, 70001])
def test_masking_matches_wsproto_both_in_c_and_in_python(size):
    data, key = os.urandom(size), os.urandom(4)
    expected = bytes(XorMaskerSimple(key).process(bytearray(data)))
    assert python_xor_mask(data, key) == expected
    assert xor_mask(data, key) == expected
    assert python_xor_mask(expected, key) == data


def test_the_c_mask_is_used_when_websockets_is_installed():
    from websockets.speedups import apply_mask
    assert websocket_frames.xor_mask is apply_mask


# -- the same frames through wsproto (hypothesis) ----------------------------------------------

text = st.text(max_size=30).map(lambda s: s.encode("utf-8"))
invalid_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"ok\xf8\x88\x80\x80\x80"])
close_payloads = st.one_of(
    st.just(b""),
    st.sampled_from([1000, 1001, 1003, 1004, 1008, 1012, 1014, 1016, 2000, 3000, 4999]).map(
        lambda c: struct.pack("!H", c) + b"bye"),
    st.sampled_from([b"\x03", struct.pack("!H", 999), struct.pack("!H", 1005), struct.pack("!H", 1015),
                     struct.pack("!H", 5000), struct.pack("!H", 1000) + b"\xff"]))
sizes = st.sampled_from([0, 5, 125, 126, 200, 65535, 65536, 70000])
frames = st.one_of(
    st.tuples(st.sampled_from([0x0, 0x1]), st.booleans(), st.one_of(text, invalid_utf8), st.just(True), st.just(0)),
    st.tuples(st.sampled_from([0x0, 0x2]), st.booleans(), sizes.map(lambda n: b"b" * n), st.just(True),
              st.just(0)),
    st.tuples(st.sampled_from([0x9, 0xA]), st.just(True), st.binary(max_size=20), st.just(True), st.just(0)),
    st.tuples(st.just(0x8), st.just(True), close_payloads, st.just(True), st.just(0)),
    st.tuples(st.sampled_from([0x1, 0x2]), st.just(True), st.binary(max_size=10), st.just(False), st.just(0)),
    st.tuples(st.just(0x2), st.booleans(), st.binary(max_size=10), st.just(True), st.sampled_from([1, 2, 4])),
    st.tuples(st.sampled_from([0x3, 0x7, 0xB, 0xF]), st.just(True), st.binary(max_size=10), st.just(True),
              st.just(0)),
    st.tuples(st.sampled_from([0x8, 0x9]), st.just(False), st.binary(max_size=10), st.just(True), st.just(0)),
    st.tuples(st.just(0x9), st.just(True), st.binary(min_size=126, max_size=130), st.just(True), st.just(0)))


def codes(events):
    """Events with a failure reduced to its close code (the reasons are worded differently)."""
    return [(kind, value[0]) if kind == FAILED else (kind, value) for kind, value in events]


@settings(max_examples=300, deadline=None)
@given(sequence=st.lists(frames, min_size=1, max_size=8), limit=st.sampled_from([100, 70000, LIMIT]),
       cuts=st.lists(st.integers(min_value=0, max_value=200000), max_size=6))
def test_the_lean_reader_and_wsproto_agree(sequence, limit, cuts):
    data = b"".join(frame(opcode, payload, fin, masked, rsv) for opcode, fin, payload, masked, rsv in sequence)
    bounds = sorted({0, len(data)} | {c % (len(data) + 1) for c in cuts})
    lean, wsproto = Frames(limit), DeflateFrames(limit)
    got_lean, got_wsproto = [], []
    for start, stop in zip(bounds, bounds[1:]):
        got_lean += lean.receive(data[start:stop])
        got_wsproto += wsproto.receive(data[start:stop])
    got_lean, got_wsproto = codes(got_lean), codes(got_wsproto)
    if got_lean != got_wsproto:
        # The one allowed difference: a text message both too big and invalid UTF-8 is
        # refused for its size by the lean reader (from its header) and may be for its
        # bytes by wsproto (which decodes what has arrived before it counts).
        assert got_lean[:-1] == got_wsproto[:-1] and got_lean[-1] == (FAILED, 1009), (got_lean, got_wsproto)
        assert got_wsproto[-1] == (FAILED, 1007), (got_lean, got_wsproto)


# -- both codecs serve real clients ------------------------------------------------------------

def codec_echo(method, query, args, headers, body, ctx):
    ws, err = websocket.upgrade(method, headers, ctx)
    if ws is None:
        return None, None, None
    for message in ws:
        ws.send(type(ws._frames).__name__ if message == "codec?" else message)
    return None, None, None


@pytest.mark.parametrize("compression, codec", [(None, "Frames"), ("deflate", "DeflateFrames")])
def test_the_websockets_library_through_each_codec(live_server, compression, codec):
    live = live_server(codec_echo, websocket={"max_message_size": 4 << 20})
    with websockets_connect(ws_url(live), compression=compression, max_size=None) as client:
        client.send("codec?")
        assert client.recv() == codec
        for message in ("héllo ✓", b"", b"\0" * 125, os.urandom(126), os.urandom(65535), os.urandom(65536),
                        "x" * 70000, os.urandom(3 << 20)):
            client.send(message)
            assert client.recv() == message
        client.send(["frag", "mented ✓"])  # a fragmented text message
        assert client.recv() == "fragmented ✓"
        client.ping(b"are you there").wait(5)
    assert client.close_code == 1000


def test_websocket_client_library_through_the_lean_codec(live_server):
    live = live_server(codec_echo)
    client = websocket_client.create_connection(ws_url(live))
    client.send("codec?")
    assert client.recv() == "Frames"
    for size in (1, 64, 1000, 64 * 1024, 100000):
        payload = os.urandom(size)
        client.send_binary(payload)
        assert client.recv() == payload
    client.close()


def test_a_receive_timeout_comes_back_empty_and_the_session_goes_on(live_server):
    """The session's one Alarm serves receive(timeout) as a per-call Timeout did."""
    waited = []

    def handle(method, query, args, headers, body, ctx):
        ws, err = websocket.upgrade(method, headers, ctx)
        while not ws.closed:
            started = time.monotonic()
            message = ws.receive(timeout=0.2)
            if message is None:
                waited.append(time.monotonic() - started)
                ws.send("tick")
            else:
                ws.send(message)
        return None, None, None
    live = live_server(handle)
    client = websocket_client.create_connection(ws_url(live), timeout=5)
    assert client.recv() == "tick"
    for i in range(20):  # messages well inside the timeout do not make it ring
        client.send("m%d" % i)
        assert client.recv() == "m%d" % i
    assert client.recv() == "tick"
    client.close()
    assert all(0.19 <= w < 1.0 for w in waited[:2]), waited


def test_a_busy_session_is_not_pinged_and_an_idle_one_is(live_server):
    live = live_server(codec_echo, websocket={"ping_interval": 0.4, "pong_timeout": 5})
    sock = socket.create_connection((live.host, live.port), timeout=5)
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    assert buf.startswith(b"HTTP/1.1 101")
    received = buf.split(b"\r\n\r\n", 1)[1]
    started = time.monotonic()
    while time.monotonic() - started < 1.2:  # a message every 0.1 s for three ping intervals
        sock.sendall(frame(0x2, b"hi"))
        time.sleep(0.1)
        received += sock.recv(65536)
    assert b"\x89" not in received.replace(b"\x82\x02hi", b"")  # echoes only, no ping
    sock.settimeout(3)
    assert sock.recv(65536) == b"\x89\x00"  # silent now: pinged after the interval
    sock.close()
