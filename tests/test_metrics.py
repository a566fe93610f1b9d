"""Prometheus metrics: known traffic through one process and through two workers,
scraped over HTTP and parsed with prometheus_client's own text parser."""

import socket
import ssl
import textwrap
import time

import pytest
import requests

from lilush_http import server
from conftest import cli, free_port, read_response, read_to_end

parser = pytest.importorskip("prometheus_client.parser")

APP = """
    import os
    import gevent
    from lilush_http import metrics

    def handle(method, query, args, headers, body, ctx):
        if query == "/missing":
            return "not here", 404, {}
        if query == "/die":
            os._exit(3)
        if query == "/slow":
            gevent.sleep(float(args or 1))
        if query == "/hooks":
            metrics.record_reclaim("idle")
            metrics.record_reclaim("idle")
            metrics.record_slow_client_cut("body")
            metrics.websocket_opened()
            metrics.websocket_opened()
            metrics.websocket_closed()
        return str(os.getpid()), 200, {"content-type": "text/plain"}
"""


def scrape(port):
    """{(sample name, ((label, value), ...)): value} of one scrape."""
    text = requests.get("http://127.0.0.1:%d/metrics" % port, timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parser.text_string_to_metric_families(text) for s in family.samples}


def requests_by_label(samples):
    return {(dict(labels)["method"], dict(labels)["status"]): value
            for (name, labels), value in samples.items() if name == "lilush_http_requests_total"}


def scrape_until(port, predicate, timeout=10):
    """Scrape until ``predicate(samples)`` holds (workers fold their counts once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if predicate(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def exchange(port, raw):
    """Send ``raw`` on a fresh connection and read until the server closes: the reply bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        data, closed = read_to_end(sock)
    assert closed
    return data


def known_traffic(port):
    """6 GETs answered 200, 3 answered 404, 1 refused (no Host): (pids seen, bytes sent, bytes received)."""
    sent = received = 0
    pids = set()
    for query in ["/"] * 6 + ["/missing"] * 3:
        raw = ("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % query).encode()
        reply = exchange(port, raw)
        sent += len(raw)
        received += len(reply)
        if query == "/":
            pids.add(reply.split(b"\r\n\r\n", 1)[1])
    raw = b"GET / HTTP/1.1\r\n\r\n"
    reply = exchange(port, raw)
    assert reply.startswith(b"HTTP/1.1 400 ")
    return pids, sent + len(raw), received + len(reply)


def test_two_workers_sum_exact_counts(tmp_path, run):
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    metrics_port = free_port()
    live = run(["app:handle", "--port", "0", "--workers", "2", "--metrics", "127.0.0.1:%d" % metrics_port,
                "--log-level", "info"], tmp_path)
    live.wait_for(lambda line: "metrics on http://127.0.0.1:%d/metrics" % metrics_port in line)
    expected = {("GET", "2xx"): 6, ("GET", "4xx"): 3, ("other", "4xx"): 1}
    pids = set()
    sent = received = rounds = 0
    while len(pids) < 2:  # until both workers have answered some of the traffic
        # Both accept on one socket; on a busy machine one may win many rounds in a row.
        assert rounds < 60, "one worker answered everything"
        if rounds:
            time.sleep(0.05)
        seen, more_sent, more_received = known_traffic(live.port)
        pids |= seen
        sent += more_sent
        received += more_received
        rounds += 1
    expected = {key: n * rounds for key, n in expected.items()}
    samples = scrape_until(metrics_port, lambda s: requests_by_label(s) == expected)
    assert requests_by_label(samples) == expected
    assert samples[("lilush_http_request_duration_seconds_count", ())] == 9 * rounds
    assert samples[("lilush_http_request_duration_seconds_bucket", (("le", "+Inf"),))] == 9 * rounds
    assert samples[("lilush_http_received_bytes_total", ())] == sent
    assert samples[("lilush_http_sent_bytes_total", ())] == received
    assert samples[("lilush_http_requests_in_flight", ())] == 0
    # A worker that dies: its counts stay in the sum, and its replacement adds to them.
    with pytest.raises(requests.ConnectionError):
        requests.get(live.url + "/die", timeout=5)
    live.wait_for(lambda line: "starting another" in line)
    assert requests.get(live.url + "/missing", timeout=5).status_code == 404
    expected[("GET", "4xx")] += 1
    samples = scrape_until(metrics_port, lambda s: requests_by_label(s) == expected)
    assert requests_by_label(samples) == expected
    assert live.stop() == 0


def test_one_process_phases_in_flight_and_hooks(live_server):
    ns = {}
    exec(textwrap.dedent(APP), ns)
    metrics_port = free_port()
    live = live_server(ns["handle"], metrics={"ip": "127.0.0.1", "port": metrics_port})
    idle = live.connect()
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(idle)[0] == 200  # now idle, kept alive
    head = live.connect()
    head.sendall(b"GET / HTTP/1.1\r\nHo")  # a head that has started
    body = live.connect()
    body.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    slow = live.connect()
    slow.sendall(b"GET /slow?3 HTTP/1.1\r\nHost: x\r\n\r\n")
    requests.get(live.url + "/hooks")
    requests.get(live.url + "/missing")

    def phases(samples):
        return {dict(labels)["phase"]: value for (name, labels), value in samples.items()
                if name == "lilush_http_open_connections"}
    expected = {"idle": 1, "head": 1, "body": 1, "handler": 1, "sending": 0}
    answered = {("GET", "2xx"): 2, ("GET", "4xx"): 1}
    # In one process a scrape folds the counts first; the server may still be
    # counting a response the client has already read, or a close.
    samples = scrape_until(metrics_port, lambda s: phases(s) == expected and requests_by_label(s) == answered,
                           timeout=2)
    assert phases(samples) == expected
    assert samples[("lilush_http_requests_in_flight", ())] == 2  # the body being read and /slow
    assert requests_by_label(samples) == answered
    assert samples[("lilush_http_reclaims_total", (("reason", "idle"),))] == 2
    assert samples[("lilush_http_slow_client_cuts_total", (("phase", "body"),))] == 1
    assert samples[("lilush_http_websocket_sessions_total", ())] == 2
    assert samples[("lilush_http_websocket_sessions_open", ())] == 1

    body.sendall(b"67890")
    assert read_response(body)[0] == 200
    assert read_response(slow)[0] == 200
    for sock in (idle, head, body, slow):
        sock.close()
    answered = {("GET", "2xx"): 3, ("POST", "2xx"): 1, ("GET", "4xx"): 1}
    samples = scrape_until(metrics_port, lambda s: requests_by_label(s) == answered)
    assert requests_by_label(samples) == answered
    assert samples[("lilush_http_requests_in_flight", ())] == 0
    assert samples[("lilush_http_request_duration_seconds_bucket", (("le", "1.0"),))] == 4
    assert samples[("lilush_http_request_duration_seconds_bucket", (("le", "5.0"),))] == 5
    assert samples[("lilush_http_request_duration_seconds_sum", ())] >= 3


def test_tls_handshake_failures_are_counted(live_server, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "pair.pem"))
    metrics_port = free_port()
    live = live_server(None, metrics={"port": metrics_port},
                       ssl={"default": {"cert": str(tmp_path / "pair.pem"), "key": str(tmp_path / "pair.pem")}})
    context = ssl.create_default_context()  # does not trust the test CA: the handshake fails
    for _ in range(2):
        with live.connect() as sock:
            with pytest.raises(ssl.SSLError):
                context.wrap_socket(sock, server_hostname="localhost")
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with client.wrap_socket(live.connect(), server_hostname="localhost") as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert read_response(sock)[0] == 200
    samples = scrape_until(metrics_port, lambda s: s[("lilush_http_tls_handshake_failures_total", ())] == 2)
    assert samples[("lilush_http_tls_handshake_failures_total", ())] == 2
    assert requests_by_label(samples) == {("GET", "2xx"): 1}


@pytest.mark.parametrize("bad,message", [
    ("9101", "metrics: expected a table"), ({"port": 70000}, "metrics.port:"), ({"ip": ""}, "metrics.ip:"),
    ({"host": "x"}, "metrics: unknown key 'host'"),
])
def test_bad_metrics_config(bad, message):
    srv, err = server.new({"metrics": bad})
    assert srv is None and err.startswith(message), err


def test_metrics_port_taken_and_bad_flag(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv, err = server.new({"port": 0, "metrics": {"port": port}})
        assert srv is not None, err
        result = srv.serve()
        assert result[0] is None and result[1].startswith("metrics: failed to bind 127.0.0.1:%d" % port)
    result = cli(["--metrics", "9101"], tmp_path)
    assert result.returncode == 2 and "--metrics: expected IP:PORT" in result.stderr
