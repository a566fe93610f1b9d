"""Graceful stop: SIGTERM while 50 slow requests are in flight; exits 0 on success.

``python -m lilush_http`` (on a free loopback port) serves a handler that
sleeps 2 s (gevent.sleep) before answering. 50 clients send their request;
once all 50 handlers are running, the server gets SIGTERM. Every one of the 50
must still get its 200 (with ``Connection: close``), new connections made
after the signal must be refused, and the process must exit with status 0
within the stop timeout (5 s), with no WARNING or ERROR in its log.

    python bench/graceful_stop.py [--clients 50] [--sleep 2]
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from common import loud_lines, read_log, start_server

STOP_TIMEOUT = 5  # what the CLI's SIGTERM handler gives srv.stop()

APP = '''
import gevent

SLEEP = %r
running = [0]


def handle(method, query, args, headers, body, ctx):
    if query == "/running":
        return str(running[0]), 200, {"content-type": "text/plain"}
    running[0] += 1
    try:
        gevent.sleep(SLEEP)
    finally:
        running[0] -= 1
    return "done", 200, {"content-type": "text/plain"}
'''


def read_response(sock):
    """(status, headers, body) of one Content-Length response."""
    f = sock.makefile("rb")
    try:
        status = int(f.readline().split(b" ")[1])
        headers = {}
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = f.read(int(headers.get("content-length", 0)))
        return status, headers, body
    finally:
        f.close()


def get(port, path, timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: stop\r\n\r\n" % path.encode())
        return read_response(sock)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds each handler sleeps")
    args = parser.parse_args(argv)

    app_dir = tempfile.mkdtemp(prefix="lilush-stop-")
    with open(os.path.join(app_dir, "app.py"), "w") as f:
        f.write(APP % args.sleep)
    process, port, log_path = start_server(app_dir, {"connection_limit": args.clients + 16})

    results = [None] * args.clients

    def client(i):
        t0 = time.monotonic()
        try:
            status, headers, body = get(port, "/slow/%d" % i, timeout=args.sleep + STOP_TIMEOUT + 5)
            results[i] = (status, headers.get("connection"), body, time.monotonic() - t0)
        except OSError as exc:
            results[i] = ("error: %s" % exc, None, b"", time.monotonic() - t0)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    # Wait until every handler is running (asked on a connection of its own).
    deadline = time.monotonic() + args.sleep
    running = 0
    while time.monotonic() < deadline:
        running = int(get(port, "/running")[2])
        if running >= args.clients:
            break
        time.sleep(0.02)
    if running < args.clients:
        print("graceful_stop: only %d of %d handlers started before the first finished" % (running, args.clients))
        process.kill()
        return 1

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)

    # New connections after the signal are refused (tried until the process is gone).
    attempts = refused = served_after = 0
    time.sleep(0.2)
    while process.poll() is None and time.monotonic() - signalled < STOP_TIMEOUT + 2:
        attempts += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /running HTTP/1.1\r\nHost: stop\r\n\r\n")
                sock.settimeout(1)
                if sock.recv(100).startswith(b"HTTP/1.1 200"):
                    served_after += 1
                else:
                    refused += 1  # accepted by the kernel, then closed unanswered
        except (ConnectionRefusedError, ConnectionResetError, socket.timeout):
            refused += 1
        time.sleep(0.1)
    try:
        code = process.wait(STOP_TIMEOUT + 10)
    except subprocess.TimeoutExpired:
        process.kill()
        code = "killed"
    exited_after = time.monotonic() - signalled
    for t in threads:
        t.join(5)
    loud = loud_lines(read_log(log_path))
    shutil.rmtree(app_dir, ignore_errors=True)

    completed = [r for r in results if r and r[0] == 200 and r[2] == b"done"]
    closing = [r for r in completed if r[1] == "close"]
    slowest = max(r[3] for r in results if r) if any(results) else 0
    print("graceful_stop: %d requests in flight (handler sleeps %gs) when SIGTERM was sent"
          % (args.clients, args.sleep))
    print("graceful_stop: completed with 200: %d/%d (with Connection: close: %d), slowest %.2fs"
          % (len(completed), args.clients, len(closing), slowest))
    print("graceful_stop: new connections after the signal: %d tried, %d refused, %d served"
          % (attempts, refused, served_after))
    print("graceful_stop: exit code %s, %.2fs after SIGTERM (stop timeout %ds)" % (code, exited_after, STOP_TIMEOUT))
    print("graceful_stop: log lines at WARNING or above: %d" % len(loud))
    for line in loud[:5]:
        print("   ", line)
    problems = []
    if len(completed) != args.clients:
        problems.append("not all completed: %r" % [r for r in results if r not in completed][:5])
    if len(closing) != args.clients:
        problems.append("responses without Connection: close")
    if served_after or not attempts or refused != attempts:
        problems.append("new connections were not all refused")
    if code != 0 or exited_after > STOP_TIMEOUT:
        problems.append("exit code %s after %.2fs" % (code, exited_after))
    if loud:
        problems.append("log lines at WARNING or above")
    for p in problems:
        print("    " + p)
    print("graceful_stop: %s" % ("OK" if not problems else "FAILED"))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
