"""A stop that loses nothing (issue 21): what the kernel queued is served, a
just-accepted connection gets to send its request, drain_delay keeps serving with
Connection: close, and bench/stop_loss.py (clients through SIGTERM, the stopped
worker repro, nginx with its default proxy_pass) at a tiny setting."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import need_program, read_response, read_to_end, slow_at
from lilush_http import server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_queued_connections_are_served_at_stop(live_server):
    """Connections the kernel accepted while the server was busy are answered
    after stop() is called, not reset by the close of the listener."""
    live = live_server(slow_at("/block", 0.5), connection_limit=1)
    blocker = live.connect()
    blocker.sendall(b"GET /block HTTP/1.1\r\nHost: h\r\n\r\n")
    time.sleep(0.1)
    queued = []
    for _ in range(5):  # wait in the accept queue: the one slot is busy
        sock = live.connect()
        sock.sendall(GET)
        queued.append(sock)
    stopper = threading.Thread(target=live.stop)
    stopper.start()
    try:
        assert read_response(blocker)[0] == 200
        for sock in queued:
            sock.settimeout(5)
            status, headers, body = read_response(sock)
            assert (status, body, headers["connection"]) == (200, b"ok /", "close")
    finally:
        stopper.join(15)
        for sock in queued + [blocker]:
            sock.close()
    with pytest.raises(OSError):
        socket.create_connection((live.host, live.port), timeout=2).close()


def test_just_accepted_connection_gets_to_send_its_request(live_server):
    live = live_server()
    fresh = live.connect()
    time.sleep(0.1)  # accepted, nothing sent yet
    stopper = threading.Thread(target=live.stop)
    stopper.start()
    try:
        time.sleep(0.3)
        fresh.sendall(GET)
        status, headers, _ = read_response(fresh)
        assert status == 200 and headers["connection"] == "close"
    finally:
        stopper.join(15)
        fresh.close()


def test_drain_delay_keeps_serving_with_connection_close(tmp_path, run):
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        def handle(method, query, args, headers, body, ctx):
            return "served", 200, {}
    """))
    p = run(["app:handle", "--port", "0", "--drain-delay", "1.5"], cwd=tmp_path)
    kept = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    with kept, kept.makefile("rb") as reader:
        kept.sendall(GET)
        assert read_response(reader)[1].get("connection") is None  # keep-alive before the signal
        signalled = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        kept.sendall(GET)  # an open connection is still answered, and told to close
        status, headers, body = read_response(reader)
        assert (status, body, headers["connection"]) == (200, b"served", "close")
        assert read_to_end(kept, 3)[1]
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as new:  # new ones too
        new.sendall(GET)
        status, headers, _ = read_response(new)
        assert status == 200 and headers["connection"] == "close"
    assert time.monotonic() - signalled < 1.5
    assert p.proc.wait(10) == 0
    assert time.monotonic() - signalled >= 1.5
    assert "drain_delay" in p.stderr and "Traceback" not in p.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p.port), timeout=2).close()


@pytest.mark.parametrize("value", [-1, "1", None])
def test_bad_drain_delay_is_refused(value):
    srv, err = server.new({"drain_delay": value})
    assert srv is None and err.startswith("drain_delay: ")


def test_stop_loss_script():
    """bench/stop_loss.py at a tiny setting: clients (GETs and 10 KB POSTs, a new
    connection each) through SIGTERM with 1 and 2 workers, the SIGSTOPped worker
    with 10 queued GETs, nginx's default proxy_pass through a restart: nothing is
    reset or closed unanswered."""
    need_program("nginx")
    out = subprocess.run([sys.executable, "bench/stop_loss.py", "--stops", "1", "--clients", "4",
                          "--restarts", "1"], cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert out.returncode == 0 and "stop_loss: OK" in out.stdout, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| SIGTERM") or line.startswith("| worker")]
    assert len(rows) == 3, out.stdout
    assert "| 10 | 10 | - | 0 |" in rows[-1], out.stdout  # all 10 queued GETs answered
