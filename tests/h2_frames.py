"""A raw-socket HTTP/2 client for the conformance and attack tests.

Well-formed frames come from hyperframe and header blocks from hpack; malformed
ones are built byte by byte with ``raw``.  ``Client`` reads what the server sends
back frame by frame, decodes its header blocks, and says how a case ended:
a response, a RST_STREAM, a GOAWAY, a closed socket or nothing before a timeout.
"""

import contextlib
import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time
import types

import hpack
from h2.errors import ErrorCodes
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 section 6), for frames built by hand.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# SETTINGS identifiers
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)
ENABLE_CONNECT_PROTOCOL = 8

MAX_WINDOW = 2 ** 31 - 1


def raw(frame_type, flags, stream_id, payload=b""):
    """One frame's bytes exactly as given: any length, type, flags or stream id."""
    return struct.pack(">I", len(payload))[1:] + bytes([frame_type, flags]) + struct.pack(">I", stream_id) + payload


def setting(identifier, value):
    return struct.pack(">HI", identifier, value)


class Closed(Exception):
    """The server closed the connection."""


class Outcome:
    """How a case ended.  ``kind`` is one of "response", "reset", "goaway",
    "closed", "timeout", "ping" (the PING barrier came back first)."""

    def __init__(self, kind, code=None, status=None, headers=None, body=b"", frames=()):
        self.kind, self.code, self.status = kind, code, status
        self.headers, self.body, self.frames = headers or [], body, list(frames)

    def __repr__(self):
        code = ErrorCodes(self.code).name if self.code in ErrorCodes._value2member_map_ else self.code
        seen = ", ".join(describe(f) for f in self.frames[-12:])
        return "Outcome(%s, code=%s, status=%s; frames: %s)" % (self.kind, code, self.status, seen)


def describe(frame):
    """A short name for a frame in assertion messages."""
    name = type(frame).__name__.replace("Frame", "")
    extra = ""
    if isinstance(frame, (GoAwayFrame, RstStreamFrame)):
        code = frame.error_code
        extra = " " + (ErrorCodes(code).name if code in ErrorCodes._value2member_map_ else str(code))
    elif isinstance(frame, DataFrame):
        extra = " %dB" % len(frame.data)
    return "%s[%d%s%s]" % (name, frame.stream_id, extra, " " + ",".join(sorted(frame.flags)) if frame.flags else "")


class Client:
    """One HTTP/2 connection driven by hand.

    ``auto_ack`` acknowledges the server's SETTINGS; ``auto_window`` gives back the
    connection and stream windows for every DATA frame read (off for flow-control cases).
    """

    def __init__(self, address, tls=None, server_hostname=None, timeout=3.0, auto_window=True, auto_ack=True):
        self.address = address
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=server_hostname or address[0])
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        self.sock = sock
        self.timeout = timeout
        self.auto_window, self.auto_ack = auto_window, auto_ack
        self.buffer = b""
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.server_settings = {}
        self.frames = []  # every frame read, in order
        self.streams = {}  # stream id -> {"headers": [...], "data": bytes, "ended": bool, "reset": code}
        self.goaway = None
        self.closed = False
        self.settings_acks = 0
        self.ping_acks = []
        self.next_stream_id = 1
        self._block = None  # (first frame, fragments) of a header block still open

    # -- sending ---------------------------------------------------------------------

    def send(self, *pieces):
        """Frames (hyperframe objects) and raw bytes, sent in one write."""
        data = b"".join(p if isinstance(p, (bytes, bytearray)) else p.serialize() for p in pieces)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.closed = True

    def start(self, settings=None, preface=PREFACE, wait=True):
        """The preface and our SETTINGS (``{id: value}``); with ``wait``, reads until
        the server's own SETTINGS arrived (and acknowledges it)."""
        frame = SettingsFrame(0, settings=dict(settings or {}))
        self.send(preface + frame.serialize())
        if wait:
            self.read_until(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags, what="server SETTINGS")
        return self

    def stream_id(self):
        """The next client stream id (odd, increasing)."""
        sid = self.next_stream_id
        self.next_stream_id += 2
        return sid

    def request_fields(self, path="/", method="GET", authority=None, scheme="http", extra=()):
        authority = authority or "%s:%d" % self.address
        return [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path)] + list(extra)

    def block(self, fields):
        """``fields`` HPACK-encoded with this connection's encoder (keep the server's
        decoder in step: send every block made here)."""
        return self.encoder.encode(fields)

    def headers(self, stream_id, fields, end_stream=True, end_headers=True, **kw):
        """A HEADERS frame for ``fields`` (a list of pairs), not yet sent."""
        flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
        return HeadersFrame(stream_id, data=self.block(fields), flags=flags, **kw)

    def request(self, path="/", method="GET", body=None, extra=(), stream_id=None):
        """Send a whole request; returns its stream id."""
        sid = stream_id or self.stream_id()
        fields = self.request_fields(path, method, extra=extra)
        frames = [self.headers(sid, fields, end_stream=body is None)]
        if body is not None:
            frames += data_frames(sid, body)
        self.send(*frames)
        return sid

    def ping(self, payload=b"barrier!"):
        self.send(PingFrame(0, opaque_data=payload))

    def window_update(self, stream_id, increment):
        self.send(WindowUpdateFrame(stream_id, window_increment=increment))

    # -- reading ---------------------------------------------------------------------

    def _recv(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        except ssl.SSLError:
            chunk = b""
        if not chunk:
            self.closed = True
            raise Closed()
        self.buffer += chunk

    def read_frame(self, timeout=None):
        """The next frame from the server; raises ``Closed`` or ``socket.timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.buffer) < 9:
            self._recv(deadline)
        frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
        while len(self.buffer) < 9 + length:
            self._recv(deadline)
        body, self.buffer = self.buffer[9:9 + length], self.buffer[9 + length:]
        frame.parse_body(memoryview(body))
        self.frames.append(frame)
        self._note(frame)
        return frame

    def _note(self, frame):
        """Keep the per-stream record, decode header blocks, acknowledge as configured."""
        state = self.streams.setdefault(frame.stream_id, {"headers": [], "data": b"", "ended": False, "reset": None})
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                self.settings_acks += 1
            else:
                self.server_settings.update(frame.settings)
                if self.auto_ack:
                    self.send(SettingsFrame(0, flags=["ACK"]))
        elif isinstance(frame, PingFrame) and "ACK" in frame.flags:
            self.ping_acks.append(frame.opaque_data)
        elif isinstance(frame, GoAwayFrame):
            self.goaway = frame
        elif isinstance(frame, RstStreamFrame):
            state["reset"] = frame.error_code
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            if isinstance(frame, HeadersFrame):
                self._block = (frame, [])
            self._block[1].append(frame.data)
            if "END_HEADERS" in frame.flags:
                first, fragments = self._block
                self._block = None
                first.fields = self.decoder.decode(b"".join(fragments))
                state["headers"].append(first.fields)
        elif isinstance(frame, DataFrame):
            state["data"] += frame.data
            if self.auto_window and frame.flow_controlled_length:
                self.send(WindowUpdateFrame(0, window_increment=frame.flow_controlled_length))
                if "END_STREAM" not in frame.flags:
                    self.send(WindowUpdateFrame(frame.stream_id, window_increment=frame.flow_controlled_length))
        if "END_STREAM" in frame.flags and isinstance(frame, (HeadersFrame, DataFrame)):
            state["ended"] = True

    def read_until(self, done, timeout=None, what="a frame"):
        """Read frames until ``done(frame)``; returns that frame.  Raises AssertionError
        on a GOAWAY, a close or a timeout first."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                frame = self.read_frame(max(0.0, deadline - time.monotonic()))
            except socket.timeout:
                raise AssertionError("timed out waiting for %s; frames: %s" % (what, self.seen()))
            except Closed:
                raise AssertionError("connection closed waiting for %s; frames: %s" % (what, self.seen()))
            if done(frame):
                return frame
            if isinstance(frame, GoAwayFrame):
                raise AssertionError("GOAWAY while waiting for %s; frames: %s" % (what, self.seen()))

    def seen(self):
        return ", ".join(describe(f) for f in self.frames[-16:])

    def outcome(self, stream_id=None, timeout=None, barrier=False):
        """Read until the case is decided: ``stream_id``'s response ends or is reset, a
        GOAWAY, a close, the PING barrier's ACK (with ``barrier``), or the timeout."""
        if barrier:
            self.ping(b"barrier!")
        elif stream_id in self.streams and (self.streams[stream_id]["ended"] or self.streams[stream_id]["reset"]):
            return self._stream_outcome(stream_id)  # already decided by frames read before
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                frame = self.read_frame(max(0.0, deadline - time.monotonic()))
            except socket.timeout:
                return Outcome("timeout", frames=self.frames)
            except Closed:
                if self.goaway is not None:
                    return self._goaway_outcome()
                return Outcome("closed", frames=self.frames)
            if isinstance(frame, GoAwayFrame):
                return self._goaway_outcome()
            if stream_id is not None and frame.stream_id == stream_id:
                state = self.streams[stream_id]
                if state["reset"] is not None or state["ended"]:
                    return self._stream_outcome(stream_id)
            if barrier and isinstance(frame, PingFrame) and "ACK" in frame.flags and frame.opaque_data == b"barrier!":
                return Outcome("ping", frames=self.frames)

    def _stream_outcome(self, stream_id):
        state = self.streams[stream_id]
        if state["reset"] is not None:
            return Outcome("reset", code=state["reset"], frames=self.frames)
        return self.response(stream_id)

    def _goaway_outcome(self):
        return Outcome("goaway", code=self.goaway.error_code, frames=self.frames)

    def response(self, stream_id):
        """The response read so far on ``stream_id`` as an Outcome."""
        state = self.streams[stream_id]
        head = dict(state["headers"][0]) if state["headers"] else {}
        status = int(head[":status"]) if ":status" in head else None
        return Outcome("response", status=status, headers=state["headers"][0] if state["headers"] else [],
                       body=state["data"], frames=self.frames)

    def fetch(self, path="/", method="GET", body=None, extra=(), timeout=None):
        """A whole request and its response (an Outcome)."""
        return self.outcome(self.request(path, method, body, extra), timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def data_frames(stream_id, body, size=16384, end_stream=True):
    """``body`` as DATA frames of at most ``size`` bytes, the last one ending the stream."""
    pieces = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    frames = [DataFrame(stream_id, data=p) for p in pieces]
    if end_stream:
        frames[-1].flags.add("END_STREAM")
    return frames


def tls_context(cafile=None):
    """A client TLS context offering only h2 (verifying against ``cafile`` when given)."""
    context = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
    context.set_alpn_protocols(["h2"])
    return context


# -- the application every HTTP/2 suite serves ----------------------------------------------
#   /            "hello"
#   /echo        JSON: method, path, host, HTTP version, body length and sha256, x-token and cookie fields
#   /slow?s=N    waits N seconds (default 1), then "slow"
#   /size/N      N bytes of ``pattern(N)``

def pattern(n):
    """The body of /size/N: a repeating, position-dependent pattern."""
    return (b"0123456789abcdefghijklmnopqrstuvwxyz" * (n // 36 + 1))[:n]


def echo(method, path, headers, body, version):
    return json.dumps({"method": method, "path": path, "host": headers.get("host"), "version": version,
                       "length": len(body),
                       "sha256": hashlib.sha256(body).hexdigest(), "x-token": headers.get("x-token"),
                       "cookie": headers.get("cookie")}).encode()


def seconds(args):
    """The ``s`` query argument of /slow."""
    for pair in (args or "").split("&"):
        if pair.startswith("s="):
            return float(pair[2:])
    return 1.0


def handle(method, query, args, headers, body, ctx):
    """The suites' application as a lilush_http handler."""
    import gevent
    if query == "/slow":
        gevent.sleep(seconds(args))
        return b"slow", 200, {"content-type": "text/plain"}
    if query.startswith("/size/"):
        return pattern(int(query[6:])), 200, {"content-type": "application/octet-stream"}
    if query == "/echo":
        data = body if isinstance(body, (bytes, type(None))) else body.read()
        answer = echo(method, query, headers, data or b"", ctx.get("version"))
        return answer, 200, {"content-type": "application/octet-stream"}
    return b"hello", 200, {"content-type": "text/plain"}


async def asgi_app(scope, receive, send):
    """The same application for hypercorn, the reference server."""
    import asyncio
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path, args = scope["path"], scope["query_string"].decode()
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    if path == "/slow":
        await asyncio.sleep(seconds(args))
        data = b"slow"
    elif path.startswith("/size/"):
        data = pattern(int(path[6:]))
    elif path == "/echo":
        headers.setdefault("host", headers.get(":authority"))
        data = echo(scope["method"], path, headers, body, "HTTP/" + scope["http_version"])
    else:
        data = b"hello"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(data))]})
    await send({"type": "http.response.body", "body": data})


@contextlib.contextmanager
def reference_server(certfile=None, keyfile=None):
    """hypercorn serving ``asgi_app`` on a free port (prior knowledge, or TLS with ALPN h2):
    yields an object with its ``address`` and ``proc`` (the Popen).  Used to check the suites
    themselves (hypercorn comes with the bench extra)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [os.path.join(os.path.dirname(sys.executable), "hypercorn"), "--bind", "127.0.0.1:%d" % port,
               "h2_frames:asgi_app"]
    if certfile:
        command += ["--certfile", certfile, "--keyfile", keyfile]
    process = subprocess.Popen(command, cwd=os.path.dirname(os.path.abspath(__file__)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "hypercorn did not start"
                time.sleep(0.05)
        yield types.SimpleNamespace(address=("127.0.0.1", port), proc=process)
    finally:
        process.terminate()
        process.wait(10)
