"""Slots under pressure (admission.py): slow clients are cut at the rate floor, fresh
connections get their chance, freed slots say Connection: close, nothing is dropped;
nginx in front and slowhttptest against it."""

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import gevent
import pytest
import trustme

from conftest import need_program, read_response, read_to_end, slow_at
from lilush_http import server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def slots_log(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "lilush_http" and r.levelname == "INFO" and "to free " in r.getMessage()]


def test_fresh_connection_is_not_evicted_before_its_first_request(live_server, caplog):
    live = live_server(connection_limit=2, min_rate_window=1.0)
    kept = live.connect()
    kept.sendall(GET)
    assert read_response(kept)[0] == 200  # now idle between requests
    fresh = live.connect()  # takes the last slot, says nothing yet
    time.sleep(0.1)
    waiting = live.connect()
    waiting.sendall(GET)
    time.sleep(0.4)  # well inside its 1 s chance
    fresh.sendall(GET)
    assert read_response(fresh)[0] == 200
    assert read_response(waiting)[0] == 200
    assert read_to_end(kept, 3)[1]  # the idle keep-alive connection made the room
    assert any("idle keep-alive connection from 127.0.0.1 closed" in m for m in slots_log(caplog))


def test_connection_close_clients_at_a_small_pool_all_answered(live_server):
    """The overload of issue 11 in small: more clients than slots, each a new
    connection: every request is answered (none reset before its response)."""
    def handle(*args):
        gevent.sleep(0.002)
        return "ok", 200, {}
    live = live_server(handle, connection_limit=4)
    failures = []

    def client():
        for _ in range(20):
            try:
                with live.connect(timeout=10) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                    status, _, body = read_response(sock)
                    if status != 200 or body != b"ok":
                        failures.append(status)
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))
    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []


def test_full_pool_of_slow_clients_still_serves_a_normal_client(live_server, caplog):
    live = live_server(connection_limit=8, min_rate_window=0.3)
    attackers = []
    for _ in range(24):  # the pool and then its backlog full of slowloris clients
        sock = live.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nX-a: b\r\n")
        attackers.append(sock)
    time.sleep(0.2)
    started = time.monotonic()
    normal = live.connect(timeout=10)
    normal.sendall(GET)
    assert read_response(normal)[0] == 200
    assert time.monotonic() - started < 3
    # The cut ones had sent part of a request: each got a 408, not a silent close.
    data, closed = read_to_end(attackers[0], 5)
    assert closed and data.startswith(b"HTTP/1.1 408 ")
    cuts = [m for m in slots_log(caplog) if m.startswith("slow client 127.0.0.1 cut")]
    assert cuts and "request head" in cuts[0]
    for sock in attackers:
        sock.close()


def test_slow_reader_cut_at_the_floor(live_server, caplog):
    payload = b"x" * (4 * 1024 * 1024)
    live = live_server(lambda *a: (payload, 200, {}), connection_limit=1, min_rate_window=0.3,
                       min_rate=2000)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((live.host, live.port))
    slow.sendall(GET)
    slow.recv(100)  # then reads nothing more
    time.sleep(0.2)
    started = time.monotonic()
    normal = live.connect(timeout=10)
    normal.sendall(GET)
    status, _, body = read_response(normal)
    assert status == 200 and len(body) == len(payload)
    assert time.monotonic() - started < 5  # not the 30 s response_send_timeout
    data, closed = read_to_end(slow, 5)
    assert closed and len(data) < len(payload)
    cuts = [m for m in slots_log(caplog) if m.startswith("slow client 127.0.0.1 cut")]
    assert len(cuts) == 1 and "response" in cuts[0]
    slow.close()


def test_slow_reader_left_alone_without_pressure(live_server):
    payload = b"x" * (4 * 1024 * 1024)
    live = live_server(lambda *a: (payload, 200, {}), connection_limit=4, min_rate_window=0.2)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((live.host, live.port))
    slow.sendall(GET)
    time.sleep(1.0)
    slow.settimeout(10)
    status, _, body = read_response(slow)
    assert status == 200 and body == payload
    slow.close()


def test_connection_freed_for_a_waiting_client_says_connection_close(live_server, caplog):
    live = live_server(slow_at("/slow", 0.6), connection_limit=1)
    busy = live.connect()
    busy.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    time.sleep(0.2)
    waiting = live.connect()
    waiting.sendall(GET)
    status, headers, body = read_response(busy)
    assert status == 200 and body == b"ok /slow" and headers["connection"] == "close"
    assert read_to_end(busy, 3)[1]
    status, headers, body = read_response(waiting)
    assert status == 200 and body == b"ok /"
    assert any(m.startswith("1 connections asked to close after their response") for m in slots_log(caplog))


def test_connections_per_ip(live_server, caplog):
    live = live_server(connections_per_ip=2)
    first, second = live.connect(), live.connect()
    time.sleep(0.1)
    third = live.connect()
    third.sendall(GET)
    status, headers, _ = read_response(third)
    assert status == 503 and headers["connection"] == "close"
    for sock in (first, second):
        sock.sendall(GET)
        assert read_response(sock)[0] == 200
    second.close()
    time.sleep(0.2)
    fourth = live.connect()
    fourth.sendall(GET)
    assert read_response(fourth)[0] == 200
    assert any("connections_per_ip 2 reached" in r.getMessage() for r in caplog.records)


def test_overload_script_behind_nginx_no_errors():
    """bench/overload.py at a tiny setting: ab with Connection: close at more clients
    than slots, then nginx keeping more upstream connections than the server has
    slots, sending POSTs (which it does not retry): no request fails."""
    need_program("nginx")
    need_program("ab")
    out = subprocess.run([sys.executable, "bench/overload.py", "--close-runs", "1", "--requests", "1000",
                          "--concurrency", "40", "--nginx-requests", "2000", "--nginx-runs", "1", "--nginx-concurrency", "40",
                          "--nginx-keepalive", "32", "--config", '{"connection_limit": 8}'],
                         cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.stdout.splitlines()
            if line.startswith("| ab ") or line.startswith("| nginx ")]
    assert len(rows) == 2, out.stdout
    for name, complete, failed, non2xx, rps, p99, premature, fds in rows:
        assert (complete, failed, non2xx) == (("1000" if name.startswith("ab") else "2000"), "0", "0"), out.stdout
        before, after = fds.split(" / ")
        assert before == after, out.stdout  # descriptors back to the baseline
    assert rows[1][6] == "0", out.stdout  # nginx logged no "upstream prematurely closed connection"


def test_slowclients_script_with_slowhttptest():
    """bench/slowclients.py at a tiny setting: each slowhttptest mode against a small
    pool while the probe client is answered every time."""
    need_program("slowhttptest")
    out = subprocess.run([sys.executable, "bench/slowclients.py", "--connections", "60", "--rate", "30",
                          "--duration", "4", "--config", '{"connection_limit": 16}'],
                         cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| slow")]
    assert len(rows) == 4, out.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        answered, sent = cells[2].split("/")
        assert answered == sent and int(sent) >= 2, row  # the probe was always answered
        assert float(cells[5]) < 5.0, row  # probe max latency, seconds


@pytest.mark.parametrize("key, value", [("min_rate", -1), ("min_rate", 1.5), ("min_rate_window", 0),
                                        ("min_rate_window", "1"), ("connections_per_ip", -2)])
def test_bad_admission_config_is_refused(key, value):
    srv, err = server.new({key: value})
    assert srv is None and err.startswith(key + ": ")


# -- issue 21: TLS handshakes, fair slots under keep-alive load ------------------------------------

def tls_hello():
    """The first bytes a TLS client sends (a ClientHello)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="flood.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.fixture
def cert_pair(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    pair = {"cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem")}
    cert.cert_chain_pems[0].write_to_path(pair["cert"])
    cert.private_key_pem.write_to_path(pair["key"])
    return pair


def curl_time(url):
    """(HTTP status, seconds) of curl on a new connection."""
    out = subprocess.run(["curl", "-sk", "-o", "/dev/null", "--max-time", "10", "-w", "%{http_code} %{time_total}",
                          url], capture_output=True, text=True, timeout=15).stdout.split()
    return int(out[0]), float(out[1])


def test_handshake_flood_is_cut_and_curl_still_served(live_server, cert_pair, caplog):
    """A pool (and its backlog) full of TLS connections that never finish their
    handshake, silent or with half a ClientHello: curl is answered within a second,
    and the flood is cut as slow clients, not left to the 10 s handshake deadline."""
    need_program("curl")
    live = live_server(ssl={"default": cert_pair}, connection_limit=4)
    half = tls_hello()[:100]
    attackers = []
    try:
        for index in range(16):
            sock = live.connect()
            if index % 2:
                sock.sendall(half)
            attackers.append(sock)
        time.sleep(0.2)
        for _ in range(5):
            status, seconds = curl_time("https://127.0.0.1:%d/" % live.port)
            assert status == 200 and seconds < 1.0, (status, seconds)
        cuts = [m for m in slots_log(caplog) if "while in its TLS handshake" in m]
        assert len(cuts) >= 12, slots_log(caplog)[-5:]
    finally:
        for sock in attackers:
            sock.close()


def test_connections_per_ip_applies_before_the_tls_handshake(live_server, cert_pair, caplog):
    live = live_server(ssl={"default": cert_pair}, connections_per_ip=2)
    held = [live.connect(), live.connect()]  # two handshakes in progress
    time.sleep(0.1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    started = time.monotonic()
    with pytest.raises((ssl.SSLError, OSError)):
        with context.wrap_socket(live.connect(), server_hostname="h"):
            pass
    assert time.monotonic() - started < 2  # closed at once, no handshake spent on it
    assert any("connections_per_ip 2 reached" in r.getMessage() for r in caplog.records)
    for sock in held:
        sock.close()


def test_tls_flood_script():
    """bench/tls_flood.py at a tiny setting: every curl probe answered within a second."""
    need_program("curl")
    out = subprocess.run([sys.executable, "bench/tls_flood.py", "--connections", "60", "--duration", "5",
                          "--probes", "4", "--modes", "silent,half", "--config", '{"connection_limit": 32}'],
                         cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.stdout.splitlines()
            if line.startswith("| 60 connections")]
    assert len(rows) == 2, out.stdout
    for row in rows:
        answered, probes = row[2].split("/")
        assert answered == probes and int(probes) >= 2 and row[3] == "0", out.stdout  # none took 1 s


def test_keep_alive_clients_rotate_for_a_new_one(live_server, caplog):
    """More busy keep-alive clients than slots, each sending back to back: a new
    client is answered within a fraction of a second, because the most served
    connections get Connection: close on a response; the busy clients lose nothing."""
    live = live_server(connection_limit=4, requests_per_connection=100000)
    stop = threading.Event()
    failures, answered = [], [0]

    def busy():
        while not stop.is_set():
            try:
                with live.connect(timeout=10) as sock, sock.makefile("rb") as reader:
                    while not stop.is_set():
                        sock.sendall(GET)
                        status, headers, body = read_response(reader)
                        assert status == 200 and body == b"Hi there!"
                        answered[0] += 1
                        if headers.get("connection") == "close":
                            assert read_to_end(sock, 3)[1]
                            break
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))
    threads = [threading.Thread(target=busy) for _ in range(12)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        times = []
        for _ in range(5):
            started = time.monotonic()
            with live.connect(timeout=10) as sock:
                sock.sendall(GET)
                assert read_response(sock)[0] == 200
            times.append(time.monotonic() - started)
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert failures == [] and answered[0] > 100
    assert max(times) < 1.0, times
    assert any("asked to close after their response" in m for m in slots_log(caplog))


def test_fairness_script_with_wrk():
    """bench/fairness.py at a tiny setting: wrk keep-alive clients at five times the
    slots, curl probes answered fast, wrk sees no error."""
    need_program("wrk")
    need_program("curl")
    out = subprocess.run([sys.executable, "bench/fairness.py", "--clients", "40", "--duration", "6",
                          "--probes", "5", "--config", '{"connection_limit": 8}'],
                         cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stdout + out.stderr
    row = [c.strip() for c in next(line for line in out.stdout.splitlines()
                                   if line.startswith("| 40 keep-alive")).strip("|").split("|")]
    errors = json.loads(row[2])
    assert sum(errors.values()) == 0, out.stdout
    answered, probes = row[3].split("/")
    assert answered == probes and int(probes) >= 3, out.stdout
    assert float(row[6]) < 1.0, out.stdout  # the slowest probe
