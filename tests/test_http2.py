"""The HTTP/2 driver's mechanics (protocols/http2*.py), with h2's client state machine
over real sockets, and curl: negotiation, concurrent streams, the stream limit,
flow control as the handler reads, a reset while a handler writes, the raw
answer, graceful stop, the access log.

The conformance vectors, the attacks and the interop clients are in
tests/test_h2_*.py.
"""

import json
import socket
import subprocess
import threading
import time

import gevent
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from gevent.event import Event
from hyperframe.frame import Frame, GoAwayFrame, SettingsFrame, WindowUpdateFrame

from conftest import need_program, read_response, read_to_end
from lilush_http import websocket
from lilush_http.body import streamed_body


class H2Client:
    """One HTTP/2 connection driven with h2's client side; events are kept per stream."""

    def __init__(self, live, window=None):
        self.sock = socket.create_connection((live.host, live.port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.authority = "%s:%d" % (live.host, live.port)
        self.events = []
        self.bodies = {}
        self.status = {}
        self.ended = set()
        self.resets = {}
        self.goaway = None
        self.closed = False
        self.flush()

    def flush(self):
        self.sock.sendall(self.conn.data_to_send())

    def request(self, path, method="GET", body=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":path", path), (":scheme", "http"), (":authority", self.authority)]
        self.conn.send_headers(sid, headers, end_stream=body is None and end)
        if body is not None:
            for pos in range(0, max(1, len(body)), 16384):  # frames of the default maximum size
                self.conn.send_data(sid, body[pos:pos + 16384], end_stream=end and pos + 16384 >= len(body))
        self.flush()
        return sid

    def upload(self, sid, data, end=True):
        """Send ``data`` on stream ``sid`` as the server's window allows, reading what comes."""
        pos = 0
        while pos < len(data):
            self.read(lambda: self.conn.local_flow_control_window(sid) > 0)
            size = min(16384, self.conn.local_flow_control_window(sid), len(data) - pos)
            self.conn.send_data(sid, data[pos:pos + size], end_stream=end and pos + size == len(data))
            self.flush()
            pos += size

    def read(self, until, timeout=10):
        """Read and note events until ``until()`` holds (or the connection closes)."""
        deadline = time.monotonic() + timeout
        while not until():
            if self.closed:
                return
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise AssertionError("timed out; events so far: %r" % self.events[-10:])
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                return
            for event in self.conn.receive_data(data):
                self._note(event)
            self.flush()

    def _note(self, event):
        self.events.append(event)
        if isinstance(event, h2.events.ResponseReceived):
            self.status[event.stream_id] = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.bodies[event.stream_id] = self.bodies.get(event.stream_id, b"") + event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.add(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.resets[event.stream_id] = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def close(self):
        self.sock.close()


def app(method, query, args, headers, body, ctx):
    if query == "/slow":
        gevent.sleep(float(args))
    elif query == "/host":
        return "%s %s %s" % (headers["host"], ctx["version"], ctx["scheme"]), 200, {}
    elif query == "/raw":
        return None, None, None
    elif query == "/ws":
        ws, err = websocket.upgrade(method, headers, ctx)
        return err, 426, {"content-type": "text/plain"}
    elif query == "/big":
        return b"x" * int(args), 200, {"content-type": "application/octet-stream"}
    return "hello", 200, {"content-type": "text/plain"}


@pytest.fixture
def client():
    opened = []

    def connect(live, **kw):
        c = H2Client(live, **kw)
        opened.append(c)
        return c
    yield connect
    for c in opened:
        c.close()


def test_curl_prior_knowledge_and_host_from_authority(live_server):
    need_program("curl")
    live = live_server(app)
    out = subprocess.run(["curl", "-s", "-i", "--http2-prior-knowledge", live.url + "/host"],
                         capture_output=True, text=True, timeout=20)
    assert out.stdout.startswith("HTTP/2 200"), out.stdout
    assert out.stdout.endswith("%s:%d HTTP/2 http" % (live.host, live.port)), out.stdout


def test_streams_run_concurrently(live_server, client):
    """20 streams to a handler that takes 1 s, on one connection: done together."""
    live = live_server(app)
    c = client(live)
    started = time.monotonic()
    sids = [c.request("/slow?0.5") for _ in range(20)]
    c.read(lambda: c.ended >= set(sids))
    assert time.monotonic() - started < 1.5
    assert all(c.status[sid] == 200 and c.bodies[sid] == b"hello" for sid in sids)


def test_over_the_stream_limit_refuses_that_stream_only(live_server, client):
    live = live_server(app, http2_max_concurrent_streams=2)
    c = client(live)
    slow = [c.request("/slow?0.5") for _ in range(2)]
    third = c.request("/")
    c.read(lambda: third in c.resets and c.ended >= set(slow))
    assert c.resets[third] == h2.errors.ErrorCodes.REFUSED_STREAM
    assert [c.status[sid] for sid in slow] == [200, 200]
    again = c.request("/")  # the connection goes on
    c.read(lambda: again in c.ended)
    assert c.status[again] == 200 and c.goaway is None


def test_body_window_given_back_only_as_the_handler_reads(live_server, client):
    """A handler that has not read yet holds its sender to the initial window."""
    go = Event()

    @streamed_body
    def reader(method, query, args, headers, body, ctx):
        go.wait(10)
        return b"%d" % len(body.read()), 200, {}

    live = live_server(reader)
    c = client(live)
    sid = c.request("/", "POST", b"", end=False)
    sent = 0
    while c.conn.local_flow_control_window(sid) > 0:
        size = min(16384, c.conn.local_flow_control_window(sid))
        c.conn.send_data(sid, b"a" * size)
        sent += size
        c.flush()
    time.sleep(0.3)
    c.sock.settimeout(0.3)
    try:
        data = c.sock.recv(65536)
        for event in c.conn.receive_data(data):
            c._note(event)
    except socket.timeout:
        pass
    assert c.conn.local_flow_control_window(sid) == 0  # no WINDOW_UPDATE while nothing was read
    assert sent == 65535
    go.set()
    rest = b"b" * 200000
    c.upload(sid, rest)
    c.read(lambda: sid in c.ended)
    assert c.bodies[sid] == b"%d" % (sent + len(rest))


def test_reset_while_the_handler_writes(live_server, client):
    """The handler's next write fails cleanly (its iterator is closed), the connection goes on."""
    closed = Event()

    def ticker(method, query, args, headers, body, ctx):
        def ticks():
            try:
                while True:
                    yield b"tick\n"
                    gevent.sleep(0.05)
            finally:
                closed.set()
        return ticks(), 200, {}

    live = live_server(ticker)
    c = client(live)
    sid = c.request("/")
    c.read(lambda: len(c.bodies.get(sid, b"")) >= 10)
    c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    c.flush()
    assert closed.wait(5)
    other = c.request("/")
    c.read(lambda: len(c.bodies.get(other, b"")) >= 10)
    assert c.status[other] == 200 and sid not in c.ended  # a new stream is answered; the reset one never ended


def test_handlers_still_running_end_when_the_connection_goes(live_server, client):
    """The peer leaves while three handlers sleep: each is ended (GreenletExit, its finally
    runs) within the connection's goodbye second, not left to run for 30 s; the server goes on."""
    started, ended = [], []

    def sleeper(method, query, args, headers, body, ctx):
        if query == "/quick":
            return "quick", 200, {}
        started.append(query)
        try:
            gevent.sleep(30)
        finally:
            ended.append(query)
        return "late", 200, {}

    live = live_server(sleeper)
    c = client(live)
    for n in range(3):
        c.request("/sleep%d" % n)
    deadline = time.monotonic() + 5
    while len(started) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(started) == 3
    c.close()
    deadline = time.monotonic() + 5
    while len(ended) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(ended) == ["/sleep0", "/sleep1", "/sleep2"]
    again = client(live)
    sid = again.request("/quick")
    again.read(lambda: sid in again.ended)
    assert again.bodies[sid] == b"quick"


def test_raw_answer_is_a_500_with_an_error_logged(live_server, client, caplog):
    live = live_server(app)
    c = client(live)
    sid = c.request("/raw")
    c.read(lambda: sid in c.ended)
    assert c.status[sid] == 500
    assert any("(None, None, None) on HTTP/2" in r.getMessage() for r in caplog.records)


def test_websocket_upgrade_over_http2_answers_nothing_and_says_why(live_server, client, caplog):
    """No RFC 8441 here: upgrade() returns (None, err) without touching the stream,
    and the handler's own answer goes out; nothing is logged as an error."""
    live = live_server(app)
    c = client(live)
    sid = c.request("/ws")
    c.read(lambda: sid in c.ended)
    assert c.status[sid] == 426
    assert c.bodies[sid] == websocket.NEEDS_HTTP1.encode()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_stop_sends_goaway_and_lets_streams_finish(live_server, client):
    """GOAWAY (NO_ERROR, the last stream id) at once; the stream in flight still ends; then
    the close. Frames are read with hyperframe: h2's client accepts nothing after a GOAWAY."""
    live = live_server(app)
    c = client(live)
    sid = c.request("/slow?1")
    time.sleep(0.1)
    stopper = threading.Thread(target=live.stop, args=(5,))
    stopper.start()
    frames = read_frames(c.sock, 5)
    stopper.join(10)
    kinds = [(type(f).__name__, f.stream_id) for f in frames if not isinstance(f, (SettingsFrame, WindowUpdateFrame))]
    assert kinds == [("GoAwayFrame", 0), ("HeadersFrame", sid), ("DataFrame", sid)], kinds
    goaway = frames[[type(f) for f in frames].index(GoAwayFrame)]
    assert goaway.last_stream_id == sid and goaway.error_code == 0
    assert frames[-1].data == b"hello" and "END_STREAM" in frames[-1].flags


def read_frames(sock, timeout):
    """The frames the server sends until it closes the connection."""
    data, closed = read_to_end(sock, timeout)
    assert closed, "the server did not close the connection"
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        frames.append(frame)
        data = data[9 + length:]
    return frames


def test_http2_off_answers_the_preface_as_http11(live_server):
    live = live_server(app, http2=False)
    with socket.create_connection((live.host, live.port), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        status, _, _ = read_response(sock)
    assert status == 400


def test_upgrade_h2c_is_answered_as_http11(live_server):
    live = live_server(app)
    with socket.create_connection((live.host, live.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                     b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        status, headers, body = read_response(sock)
    assert status == 200 and body == b"hello" and "upgrade" not in headers


def test_one_access_log_line_per_stream(live_server, client, tmp_path):
    log = tmp_path / "access.log"
    live = live_server(app, access_log=str(log))
    c = client(live)
    sids = [c.request("/?n=%d" % i) for i in range(3)]
    c.read(lambda: c.ended >= set(sids))
    deadline = time.monotonic() + 5
    while len(log.read_text().splitlines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(e["target"] for e in entries) == ["/?n=0", "/?n=1", "/?n=2"]
    assert {e["protocol"] for e in entries} == {"HTTP/2"} and {e["status"] for e in entries} == {200}


def test_limits_answer_the_stream_and_the_connection_goes_on(live_server, client):
    """max_body_size (stated, then grown past), max_headers and CONNECT: an answer for that
    stream only."""
    live = live_server(app, max_body_size=1000, max_headers=5)
    c = client(live)
    authority = c.authority
    stated = c.conn.get_next_available_stream_id()
    c.conn.send_headers(stated, [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", authority),
                                 ("content-length", "5000")])
    c.flush()
    grown = c.request("/", "POST", b"x" * 3000)
    many = c.conn.get_next_available_stream_id()
    c.conn.send_headers(many, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", authority)]
                        + [("x-%d" % i, "v") for i in range(6)], end_stream=True)
    connect = c.conn.get_next_available_stream_id()
    c.conn.send_headers(connect, [(":method", "CONNECT"), (":authority", "example.com:443")])
    c.flush()
    c.read(lambda: {stated, grown, many, connect} <= set(c.status))
    assert (c.status[stated], c.status[grown], c.status[many], c.status[connect]) == (413, 413, 431, 501)
    after = c.request("/")
    c.read(lambda: after in c.ended)
    assert c.status[after] == 200 and c.goaway is None


def test_a_dribbled_body_gets_its_408_within_the_body_timeout(live_server, client):
    """A body sent a byte at a time is cut when request_body_timeout has passed for all of it."""
    live = live_server(app, request_body_timeout=1)
    c = client(live)
    sid = c.request("/", "POST", b"x", end=False)
    started = time.monotonic()
    while sid not in c.status and time.monotonic() - started < 5:
        c.conn.send_data(sid, b"x")
        c.flush()
        c.sock.settimeout(0.2)
        try:
            data = c.sock.recv(65536)
        except socket.timeout:
            continue
        for event in c.conn.receive_data(data):
            c._note(event)
    assert c.status.get(sid) == 408
    assert time.monotonic() - started < 2.5


def test_a_handler_not_reading_leaves_other_uploads_room(live_server, client):
    """One stream's unread body (its whole window) does not stall another upload on the connection."""
    go = Event()

    @streamed_body
    def handler(method, query, args, headers, body, ctx):
        if query == "/wait":
            go.wait(10)
        return b"%d" % len(body.read()), 200, {}

    live = live_server(handler)
    c = client(live)
    waiting = c.request("/wait", "POST", b"w" * 65535, end=False)
    other = c.request("/", "POST", b"", end=False)
    started = time.monotonic()
    c.upload(other, b"o" * 300000)
    c.read(lambda: other in c.ended)
    assert c.bodies[other] == b"300000" and waiting not in c.ended
    assert time.monotonic() - started < 3  # not a byte at a time through what the waiting stream left
    go.set()
    c.conn.end_stream(waiting)
    c.flush()
    c.read(lambda: waiting in c.ended)
    assert c.bodies[waiting] == b"65535"


def test_priority_in_headers_is_no_flood_but_priority_frames_are(live_server, client):
    """Browsers put priority in every request's HEADERS: 1200 such requests pass; 1200
    PRIORITY frames of their own are a flood (CVE-2019-9513): GOAWAY ENHANCE_YOUR_CALM."""
    live = live_server(app)
    c = client(live)
    for _ in range(12):
        sids = []
        for _ in range(100):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                      (":authority", c.authority)], end_stream=True, priority_weight=32)
            sids.append(sid)
        c.flush()
        c.read(lambda: c.ended >= set(sids))
    assert c.goaway is None and len(c.ended) == 1200
    for sid in range(3001, 5401, 2):  # idle streams
        c.conn.prioritize(sid, weight=16)
    c.flush()
    c.read(lambda: c.goaway is not None)
    assert c.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_an_informational_final_status_is_a_500(live_server, client, caplog):
    live = live_server(lambda *a: ("", 103, {}))
    c = client(live)
    sid = c.request("/")
    c.read(lambda: sid in c.ended)
    assert c.status[sid] == 500
    assert any("informational status cannot end a stream" in r.getMessage() for r in caplog.records)
