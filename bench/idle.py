"""Memory scenario: 10,000 idle keep-alive connections held open against one
lilush_http process; prints the server's RSS before and after, and how long a
new request takes meanwhile.

    python bench/idle.py [--connections 10000]
"""

import argparse
import resource
import shutil
import tempfile
import time

import gevent
from gevent import socket
from gevent.pool import Pool

from common import rss_mb, start_server

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_idle(port, count):
    """``count`` connections, each with one request answered, left open."""
    sockets = []

    def one(_):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(REQUEST)
        data = b""
        while not data.endswith(b"Hi there!"):
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("closed by the server")
            data += chunk
        sockets.append(sock)

    Pool(200).map(one, range(count))
    return sockets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10000)
    args = parser.parse_args(argv)
    limit = raise_fd_limit(args.connections * 2 + 1000)
    if limit < args.connections + 100:
        print("cannot raise the open-file limit to %d (got %d)" % (args.connections + 100, limit))
        return 2
    app_dir = tempfile.mkdtemp(prefix="lilush-idle-")
    config = {"connection_limit": args.connections + 100, "backlog": 4096, "keepalive_idle_timeout": 600}
    server, port, _ = start_server(app_dir, config, "idle", args=("lilush_http.server:sample_handle",))
    try:
        gevent.sleep(0.5)
        before = rss_mb(server.pid)
        started = time.monotonic()
        sockets = open_idle(port, args.connections)
        opened = time.monotonic() - started
        gevent.sleep(1)
        after = rss_mb(server.pid)
        started = time.monotonic()
        fresh = open_idle(port, 1)
        answer_ms = (time.monotonic() - started) * 1000
        print("idle keep-alive connections: %d (opened in %.1f s)" % (len(sockets), opened))
        print("server RSS: %.1f MB before, %.1f MB with them open (%.1f KB per connection)" % (
            before, after, (after - before) * 1024 / max(1, len(sockets))))
        print("a new request meanwhile: answered in %.1f ms" % answer_ms)
        for sock in sockets + fresh:
            sock.close()
    finally:
        server.terminate()
        server.wait(20)
        shutil.rmtree(app_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
