"""The known HTTP/2 attacks, each mounted over a raw socket against a lilush_http process at a
small setting, each asserting the defence; a second client is served while each one runs.

Rapid Reset (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316 and kin), HPACK bomb, PING /
SETTINGS / empty-frame / PRIORITY / refused-stream floods from a peer that never reads
(CVE-2019-9512/9515/9518/9513/9514), zero-window slow read, data dribble and internal buffering
(CVE-2019-9511/9517), and a stream reset while its handler runs.

``H2_REFERENCE=hypercorn`` mounts them against hypercorn instead (to check the attacks themselves:
it lacks several of these defences, and those tests fail there).
"""

import json
import os
import select
import socket
import struct
import threading
import time

import pytest
from hyperframe.frame import DataFrame, RstStreamFrame

import h2_frames as h2
from conftest import Proc
from h2_frames import (CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, PING, PRIORITY, SETTINGS, WINDOW_UPDATE,
                       Client, raw, setting)

TESTS = os.path.dirname(os.path.abspath(__file__))
ENHANCE_YOUR_CALM = 0xB
CANCEL = 0x8

APP = """
import os, sys
sys.path.insert(0, %r)
import gevent
from h2_frames import handle as base

MARK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "closed.log")


def handle(method, query, args, headers, body, ctx):
    if query == "/stream":  # a streamed body that takes 10 s; its finally says when it was stopped
        def chunks():
            sent = 0
            try:
                for sent in range(200):
                    yield b"s" * 1024
                    gevent.sleep(0.05)
            finally:
                with open(MARK, "a") as f:
                    f.write("%%d\\n" %% sent)
        return chunks(), 200, {"content-type": "application/octet-stream"}
    return base(method, query, args, headers, body, ctx)
""" % TESTS

# Small limits so that each defence shows within seconds.
CONFIG = {
    "connection_limit": 6,
    "request_header_timeout": 2,
    "request_body_timeout": 3,
    "response_send_timeout": 3,
    "keepalive_idle_timeout": 5,
    "min_rate": 2000,
    "min_rate_window": 0.2,
    "max_body_size": 1024 * 1024,
    "log_level": "info",
    "http2_max_concurrent_streams": 50,
    "http2_max_resets": 50,
}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """One lilush_http process for the module, serving APP."""
    work = tmp_path_factory.mktemp("h2attacks")
    if os.environ.get("H2_REFERENCE") == "hypercorn":  # to debug the attacks themselves
        with h2.reference_server() as reference:
            reference.work, reference.stderr = work, ""
            yield reference
        return
    (work / "app.py").write_text(APP)
    (work / "config.json").write_text(json.dumps(CONFIG))
    proc = Proc(["app:handle", "--port", "0", "--config", str(work / "config.json")], work)
    proc.address = ("127.0.0.1", proc.port)
    proc.work = work
    try:
        yield proc
    finally:
        proc.kill()


def status_kb(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def assert_served(address, within=3.0):
    """Another client gets its answer (HTTP/2, a fresh connection) within ``within`` seconds."""
    started = time.monotonic()
    with Client(address, timeout=within) as other:
        result = other.start().fetch("/")
    elapsed = time.monotonic() - started
    assert result.kind == "response" and result.status == 200 and result.body == b"hello", result
    assert elapsed < within, elapsed
    return elapsed


class Background(threading.Thread):
    """Run ``attack()`` in a thread; ``result()`` joins it and returns what it returned."""

    def __init__(self, attack):
        super().__init__(daemon=True)
        self.attack, self.value, self.error = attack, None, None
        self.start()

    def run(self):
        try:
            self.value = self.attack()
        except BaseException as e:  # re-raised in the test's thread
            self.error = e

    def result(self, timeout=30):
        self.join(timeout)
        assert not self.is_alive(), "the attack did not end"
        if self.error is not None:
            raise self.error
        return self.value


def flood(address, unit, budget, seconds, opening=b"", rcvbuf=4096):
    """Send ``unit`` (whole frames) over and over after the preface and ``opening``, never reading.

    Returns (how, bytes sent): "closed" (the server cut the connection), "stalled" (it stopped
    reading us for a second: sends would block, and it had not cut the connection within
    response_send_timeout + 3 s after that), or "sent" (the whole ``budget`` went, or time ran out).
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(address)
    try:
        sock.sendall(h2.PREFACE + raw(SETTINGS, 0, 0) + opening)
        sock.setblocking(False)
        block = unit * max(1, 65536 // len(unit))
        view, offset, sent = memoryview(block), 0, 0
        deadline = time.monotonic() + seconds
        stalled = None
        while sent < budget and time.monotonic() < deadline:
            try:
                n = sock.send(view[offset:])
            except BlockingIOError:
                stalled = stalled or time.monotonic()
                if time.monotonic() - stalled > 1.0:
                    cut = cut_within(sock, CONFIG["response_send_timeout"] + 3)
                    return "closed" if cut else "stalled", sent
                select.select([], [sock], [], 0.05)
                continue
            except (ConnectionResetError, BrokenPipeError):
                return "closed", sent
            stalled = None
            sent += n
            offset = (offset + n) % len(block)
        return "sent", sent
    finally:
        sock.close()


def wait_cut(sock, within):
    """True once the server has closed ``sock`` (EOF, reset, or a GOAWAY among what it sent)."""
    deadline = time.monotonic() + within
    sock.setblocking(True)
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(1 << 20)
        except socket.timeout:
            return False
        except OSError:
            return True
        if not data:
            return True
    return False


# -- Rapid Reset (CVE-2023-44487) ------------------------------------------------------------------

def test_rapid_reset_gets_enhance_your_calm(target):
    with Client(target.address, timeout=5) as c:
        c.start()
        frames = []
        for _ in range(1000):
            sid = c.stream_id()
            frames += [c.headers(sid, c.request_fields("/slow?s=2")), RstStreamFrame(sid, error_code=CANCEL)]

        def attack():
            for i in range(0, len(frames), 100):
                c.send(*frames[i:i + 100])
                result = c.outcome(timeout=0.05)
                if result.kind != "timeout":
                    return result
            return c.outcome(timeout=5)
        running = Background(attack)
        assert_served(target.address)
        result = running.result()
        print("outcome:", result)  # shown with pytest -rP: what the defence did
    assert result.kind == "goaway" and result.code == ENHANCE_YOUR_CALM, result
    assert c.goaway.last_stream_id < 1999, c.goaway.last_stream_id  # it stopped before the end
    assert_served(target.address)


def test_a_few_resets_are_not_punished(target):
    with Client(target.address) as c:
        c.start()
        for _ in range(5):
            sid = c.request("/slow?s=1")
            c.send(RstStreamFrame(sid, error_code=CANCEL))
        for _ in range(20):
            result = c.fetch("/")
            assert result.kind == "response" and result.status == 200, result
        assert c.goaway is None


# -- CONTINUATION flood (CVE-2024-27316, -28182, -27983, CVE-2023-45288) -----------------------------

def request_block(address, path="/"):
    """A request header block using static indexes and literals only (no dynamic table)."""
    authority = ("%s:%d" % address).encode()
    return b"\x82\x86\x01" + bytes([len(authority)]) + authority + b"\x04" + bytes([len(path)]) + path.encode()


def test_continuation_flood_is_bounded(target):
    rss_before = status_kb(target.proc.pid)
    header = b"\x00\x05x-pad" + b"\x7f\x81\x07" + b"p" * 1000  # a literal field of 1000 bytes
    opening = raw(HEADERS, END_STREAM, 1, request_block(target.address))
    running = Background(lambda: flood(target.address, raw(CONTINUATION, 0, 1, header), 32 << 20, 8, opening))
    assert_served(target.address)
    how, sent = running.result()
    print("outcome: %s after %d bytes" % (how, sent))  # shown with pytest -rP
    assert how == "closed", (how, sent)
    assert sent < 16 << 20, sent  # cut long before the 32 MB went
    assert status_kb(target.proc.pid) - rss_before < 20 * 1024
    assert_served(target.address)


def test_empty_continuation_flood_is_cut(target):
    opening = raw(HEADERS, END_STREAM, 1, request_block(target.address))
    with Client(target.address) as c:
        c.start()
        c.send(opening, *[raw(CONTINUATION, 0, 1, b"")] * 5000)
        result = c.outcome(1, timeout=5)
        print("outcome:", result)  # shown with pytest -rP: what the defence did
    assert result.kind in ("goaway", "closed") and result.code != 0, result


def test_slow_continuation_is_cut_by_the_header_timeout(target):
    """One CONTINUATION every 0.3 s never reaches a frame cap: request_header_timeout (2 s) ends it."""
    with Client(target.address) as c:
        c.start()
        c.send(raw(HEADERS, END_STREAM, 1, request_block(target.address)))
        started = time.monotonic()
        result, others = None, 0
        while time.monotonic() - started < 15:
            c.send(raw(CONTINUATION, 0, 1, b"\x00\x01x\x01y"))
            result = c.outcome(1, timeout=0.3)
            if result.kind != "timeout" or c.closed:
                break
            if not others:  # meanwhile another client is served
                others = assert_served(target.address)
        elapsed = time.monotonic() - started
    print("outcome: %r after %.1f s" % (result, elapsed))  # shown with pytest -rP
    assert result.kind in ("goaway", "closed", "reset"), result
    assert elapsed < CONFIG["request_header_timeout"] + 6, elapsed  # 64 frames (h2's cap) would take 19 s


# -- HPACK bomb ---------------------------------------------------------------------------------------

def test_hpack_bomb_is_capped(target):
    rss_before = status_kb(target.proc.pid)
    value = b"b" * 4000
    insert = b"\x40\x06x-bomb\x7f" + bytes([0x80 | ((4000 - 127) & 0x7F), (4000 - 127) >> 7]) + value
    with Client(target.address) as c:
        c.start()
        c.send(raw(HEADERS, END_STREAM | END_HEADERS, 1, request_block(target.address) + insert))
        first = c.outcome(1)
        assert first.kind == "response" and first.status == 200, first  # one 4 KB field is fine
        bomb = request_block(target.address) + b"\xbe" * 4000  # index 62 x 4000: 16 MB decoded
        c.send(raw(HEADERS, END_STREAM | END_HEADERS, 3, bomb))
        result = c.outcome(3, timeout=5)
        print("outcome:", result)  # shown with pytest -rP: what the defence did
    refused = result.kind in ("goaway", "reset", "closed") or (result.kind == "response" and result.status == 431)
    assert refused, result
    assert status_kb(target.proc.pid) - rss_before < 20 * 1024
    assert_served(target.address)


# -- floods from a peer that never reads (CVE-2019-9512, -9513, -9514, -9515, -9518) -----------------

def priority_churn(address):
    """PRIORITY frames moving odd streams under even ones (never a stream under itself)."""
    return b"".join(raw(PRIORITY, 0, 3 + 2 * (i % 50), struct.pack(">IB", 0x80000000 | (2 + 2 * (i % 37)), i % 256))
                    for i in range(1000))


def slots_held(address):
    """Every stream slot held by a slow request."""
    block = request_block(address, "/slow?s=5")
    return b"".join(raw(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, block)
                    for i in range(CONFIG["http2_max_concurrent_streams"]))


def refused_streams(address):
    """200,000 new streams past the limit: each must be refused (RST_STREAM REFUSED_STREAM)."""
    first = CONFIG["http2_max_concurrent_streams"]
    return b"".join(raw(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, request_block(address))
                    for i in range(first, first + 200000))


FLOODS = {  # name: (the frames sent over and over, what opens the connection)
    "ping": (lambda address: raw(PING, 0, 0, b"floodme!"), None),  # CVE-2019-9512
    "settings": (lambda address: raw(SETTINGS, 0, 0), None),  # CVE-2019-9515
    "settings-with-values": (lambda address: raw(SETTINGS, 0, 0, setting(h2.MAX_HEADER_LIST_SIZE, 65536)), None),
    "empty-data": (lambda address: raw(DATA, 0, 1, b""),  # CVE-2019-9518
                   lambda address: raw(HEADERS, END_HEADERS, 1, request_block(address, "/echo"))),
    "empty-unknown-frames": (lambda address: raw(0x42, 0, 0, b""), None),
    "priority-churn": (priority_churn, None),  # CVE-2019-9513
    "refused-streams": (refused_streams, slots_held),  # CVE-2019-9514
}


@pytest.mark.parametrize("name", sorted(FLOODS))
def test_flood_from_a_peer_that_never_reads_is_cut(target, name):
    frames, opening = FLOODS[name]
    unit = frames(target.address)
    rss_before = status_kb(target.proc.pid)
    budget = len(unit) if len(unit) > 1 << 20 else 16 << 20  # a long unit (new stream ids) is sent once
    running = Background(lambda: flood(target.address, unit, budget, 8, opening(target.address) if opening else b""))
    assert_served(target.address)
    how, sent = running.result()
    print("outcome: %s after %d bytes" % (how, sent))  # shown with pytest -rP
    assert how == "closed", (how, sent)
    grown = status_kb(target.proc.pid) - rss_before
    assert grown < 16 * 1024, "server RSS grew by %d KB after %d bytes of %s frames" % (grown, sent, name)
    assert_served(target.address)


# -- zero-window slow read, data dribble, internal buffering (CVE-2019-9511, -9517) ------------------

def slow_reader(address, window, path="/size/2000000"):
    """A connection that asks for a large body and announces a stream window of ``window``."""
    c = Client(address, timeout=5, auto_window=False)
    c.start(settings={h2.INITIAL_WINDOW_SIZE: window})
    c.request(path)
    return c


def test_zero_window_slow_read_is_cut(target):
    with slow_reader(target.address, 0) as c:
        started = time.monotonic()
        running = Background(lambda: c.outcome(1, timeout=10))
        assert_served(target.address)
        result = running.result()
        print("outcome:", result)  # shown with pytest -rP: what the defence did
        elapsed = time.monotonic() - started
    assert result.kind in ("goaway", "closed", "reset"), result
    assert elapsed < CONFIG["response_send_timeout"] + 3, elapsed


def test_data_dribble_is_cut_when_a_client_waits(target):
    """Every slot held by connections that take one byte at a time: a new client's
    arrival gets the dribblers cut under min_rate, and it is served."""
    dribblers = [slow_reader(target.address, 1) for _ in range(CONFIG["connection_limit"])]
    done = threading.Event()
    try:
        def dribble():
            while not done.is_set() and not all(d.closed for d in dribblers):
                for d in dribblers:
                    if not d.closed:
                        d.window_update(1, 1)
                        d.window_update(0, 1)
                        try:
                            d.read_frame(0.01)
                        except (socket.timeout, h2.Closed):
                            pass
                time.sleep(0.05)
        running = Background(dribble)
        try:
            elapsed = assert_served(target.address, within=5)
        finally:
            done.set()
            running.result()
        cut = sum(1 for d in dribblers if d.closed or wait_cut(d.sock, 0.5))
        print("outcome: %d of %d dribblers cut" % (cut, len(dribblers)))  # shown with pytest -rP
    finally:
        for d in dribblers:
            d.close()
    assert cut >= 1, "no dribbling connection was cut"
    assert elapsed < 5


def test_peer_that_opens_the_window_but_never_reads_is_cut(target):
    """Internal buffering: a huge HTTP/2 window, a closed TCP window."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(target.address)
    try:
        opening = (h2.PREFACE + raw(SETTINGS, 0, 0, setting(h2.INITIAL_WINDOW_SIZE, h2.MAX_WINDOW))
                   + raw(WINDOW_UPDATE, 0, 0, struct.pack(">I", h2.MAX_WINDOW - 65535)))
        requests = b"".join(raw(HEADERS, END_STREAM | END_HEADERS, sid, request_block(target.address, "/size/1000000"))
                            for sid in (1, 3, 5, 7, 9))
        sock.sendall(opening + requests)
        assert_served(target.address)
        assert cut_within(sock, CONFIG["response_send_timeout"] + 4), "kept a connection whose peer never reads"
    finally:
        sock.close()


TCP_ESTABLISHED = 1  # tcpi_state, the first byte of TCP_INFO (Linux)


def cut_within(sock, seconds):
    """True once the server closed ``sock`` (which we never read): sending on it fails,
    or its FIN came (a send buffer still full from the flood never fails on a FIN alone)."""
    sock.setblocking(False)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.send(raw(PING, 0, 0, b"alive?.."))
        except BlockingIOError:
            pass
        except OSError:
            return True
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != TCP_ESTABLISHED:
            return True
        time.sleep(0.2)
    return False


# -- a stream reset while its handler runs ------------------------------------------------------------

def test_reset_while_handler_streams_fails_cleanly_without_leaks(target):
    mark = target.work / "closed.log"
    baseline = fd_count(target.proc.pid)
    for round_ in range(10):
        with Client(target.address) as c:
            c.start()
            sid = c.request("/stream")
            c.read_until(lambda f: isinstance(f, DataFrame) and f.stream_id == sid, what="the first chunk")
            c.send(RstStreamFrame(sid, error_code=CANCEL))
            # the connection goes on: another stream is answered
            after = c.fetch("/")
            assert after.kind == "response" and after.status == 200, after
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and (not mark.exists() or len(mark.read_text().split()) <= round_):
            time.sleep(0.05)
        assert mark.exists() and len(mark.read_text().split()) == round_ + 1, "the generator was not closed"
    assert all(int(n) < 100 for n in mark.read_text().split())  # stopped early, not run to the end
    deadline = time.monotonic() + 3
    while fd_count(target.proc.pid) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fd_count(target.proc.pid) <= baseline
    assert "Traceback" not in target.stderr


def test_reset_before_a_slow_handler_answers(target):
    baseline = fd_count(target.proc.pid)
    with Client(target.address) as c:
        c.start()
        sids = [c.request("/slow?s=0.3") for _ in range(10)]
        c.send(*[RstStreamFrame(sid, error_code=CANCEL) for sid in sids])
        time.sleep(0.6)  # the handlers return into reset streams
        result = c.fetch("/")
        assert result.kind == "response" and result.status == 200, result
        assert not any(isinstance(f, DataFrame) and f.stream_id in sids for f in c.frames)
    deadline = time.monotonic() + 3
    while fd_count(target.proc.pid) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fd_count(target.proc.pid) <= baseline
    assert "Traceback" not in target.stderr
