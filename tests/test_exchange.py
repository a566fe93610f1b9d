"""The one request path (exchange.py): what every request gets, whatever went wrong:
an access log line, a traceback at debug, the client address a trusted proxy gave,
a message saying what was wrong with a handler's result."""

import json
import logging
import time

import requests

from conftest import read_response
from lilush_http import websocket


def access_entries(caplog, count, within=3):
    """The access log entries once there are ``count`` of them."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        records = [r for r in caplog.records if r.name == "lilush_http.access"]
        if len(records) >= count:
            break
        time.sleep(0.01)
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "lilush_http.access"]


def test_stream_raising_midway_is_logged_with_its_traceback(live_server, caplog):
    caplog.set_level(logging.DEBUG, logger="lilush_http")

    def pieces():
        yield b"first piece"
        raise ValueError("the source broke")

    live = live_server(lambda *args: (pieces(), 200, {"content-type": "text/plain"}), log_level="debug")
    sock = live.connect()
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
    received = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        received += data
    sock.close()
    assert b"first piece" in received and not received.endswith(b"0\r\n\r\n")  # truncated, no last chunk
    entries = access_entries(caplog, 1)
    assert len(entries) == 1
    assert entries[0]["target"] == "/stream" and entries[0]["status"] == 200 and entries[0]["size"] > 11
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and "Traceback" in r.getMessage()]
    assert debug and "ValueError: the source broke" in debug[0] and "pieces" in debug[0]


def test_websocket_refusals_are_access_logged(live_server, caplog):
    caplog.set_level(logging.DEBUG, logger="lilush_http")

    def handle(method, query, args, headers, body, ctx):
        ws, err = websocket.upgrade(method, headers, ctx)
        assert ws is None
        return None, None, None

    live = live_server(handle)
    assert requests.get(live.url + "/plain").status_code == 426
    bad = {"Upgrade": "websocket", "Connection": "keep-alive", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert requests.get(live.url + "/no-connection-upgrade", headers=bad).status_code == 400
    entries = access_entries(caplog, 2)
    assert [(e["target"], e["status"]) for e in entries] == [("/plain", 426), ("/no-connection-upgrade", 400)]
    assert all(e["size"] > 0 for e in entries)


def test_refused_request_is_logged_with_the_address_a_trusted_proxy_gave(live_server, caplog):
    caplog.set_level(logging.DEBUG, logger="lilush_http")
    live = live_server(max_body_size=100, log_level="debug")  # 127.0.0.1 is a trusted proxy by default
    sock = live.connect()
    # A chunked body over max_body_size: refused after the head was parsed.
    sock.sendall(b"POST /up HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.7\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"x" * 1000 + b"\r\n0\r\n\r\n")
    assert read_response(sock)[0] == 413
    sock.close()
    entries = access_entries(caplog, 1)
    assert entries[0]["status"] == 413 and entries[0]["client_ip"] == "203.0.113.7"
    assert any("refused request from 203.0.113.7" in r.getMessage() for r in caplog.records)


def test_refused_request_from_an_untrusted_peer_keeps_the_peer_address(live_server, caplog):
    caplog.set_level(logging.DEBUG, logger="lilush_http")
    live = live_server(max_body_size=100, trusted_proxies=[], log_headers=["x-real-ip"])
    sock = live.connect()
    sock.sendall(b"POST /up HTTP/1.1\r\nHost: h\r\nX-Real-IP: 203.0.113.7\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"x" * 1000 + b"\r\n0\r\n\r\n")
    assert read_response(sock)[0] == 413
    sock.close()
    entry = access_entries(caplog, 1)[0]
    assert entry["client_ip"] == "127.0.0.1" and entry["x-real-ip"] == "127.0.0.1"  # the claim is not logged


def test_four_tuple_says_what_was_wrong(live_server, caplog):
    live = live_server(lambda *args: ("body", 200, {}, "extra"))
    assert requests.get(live.url).status_code == 500
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("a tuple of 4 values" in m and "1 to 3 values" in m for m in errors), errors
