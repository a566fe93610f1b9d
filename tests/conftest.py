"""Live servers for the tests: a real lilush_http server on 127.0.0.1, port 0,
running its own gevent hub in a background thread, so the tests drive it with
ordinary blocking clients (requests, http.client, raw sockets, curl)."""

import socket
import threading
import time

import pytest

from lilush_http import server


class LiveServer:
    """A started server; ``url``, ``host``, ``port``; ``stop()`` ends it."""

    def __init__(self, handle=None, **config):
        config.setdefault("ip", "127.0.0.1")
        config.setdefault("port", 0)
        self.srv, err = server.new(config, handle)
        assert self.srv is not None, err
        self.result = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.srv.address is None:
            assert self.thread.is_alive(), "server thread ended: %r" % (self.result,)
            assert time.monotonic() < deadline, "server did not bind"
            time.sleep(0.01)
        self.host, self.port = self.srv.address
        self.url = "http://%s:%d" % (self.host, self.port)

    def _run(self):
        self.result = self.srv.serve()

    def connect(self, timeout=5):
        """A raw TCP connection to the server."""
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def stop(self, timeout=2):
        if self.thread.is_alive():
            self.srv.stop(timeout)
            self.thread.join(timeout + 10)
        assert not self.thread.is_alive(), "server thread did not end"


@pytest.fixture
def live_server():
    """Factory: ``live_server(handle, **config)`` starts a server, stopped after the test."""
    started = []

    def start(handle=None, **config):
        live = LiveServer(handle, **config)
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


def read_response(reader, head_only=False):
    """Read one response: (status, headers dict, body bytes).

    ``reader`` is ``sock.makefile("rb")``, kept across calls when several
    responses come on one connection (a fresh one per call would lose bytes
    it read ahead), or a socket when only one response is read.
    The body is read by Content-Length or chunked framing, or to EOF when the
    response has neither; ``head_only`` reads no body (a HEAD request).
    """
    f = reader.makefile("rb") if isinstance(reader, socket.socket) else reader
    status_line = f.readline()
    assert status_line.endswith(b"\r\n"), status_line
    version, code, _reason = status_line.decode("ascii").split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    while True:
        line = f.readline()
        assert line.endswith(b"\r\n"), line
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(code)
    if head_only or status < 200 or status in (204, 304):
        body = b""
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b""):
                    pass
                break
            body += f.read(size)
            assert f.read(2) == b"\r\n"
    else:
        body = f.read()
    if f is not reader:
        f.close()
    return status, headers, body


class CliServer:
    """``python -m lilush_http ARGS`` in a subprocess, on a free port it reports.

    The port is read from the start line the server logs; ``stderr_text()``
    returns what it logged so far; ``stop()`` sends SIGTERM and waits.
    """

    def __init__(self, args, cwd, env=None):
        import os
        import subprocess
        import sys
        self.log_path = os.path.join(str(cwd), "server-%d.log" % id(self))
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "lilush_http", "--port", "0", *args],
                                        cwd=str(cwd), stdout=self.log, stderr=subprocess.STDOUT,
                                        env=env)
        deadline = time.monotonic() + 20
        self.port = None
        while self.port is None:
            assert self.process.poll() is None, "server exited: %s" % self.stderr_text()
            assert time.monotonic() < deadline, "server did not start: %s" % self.stderr_text()
            for line in self.stderr_text().splitlines():
                if " serving on " in line:
                    self.port = int(line.rsplit(":", 1)[1].split()[0])
            time.sleep(0.05)
        self.url = "http://127.0.0.1:%d" % self.port

    def stderr_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        import signal
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except Exception:
                self.process.kill()
                self.process.wait(5)
        self.log.close()
        return self.process.returncode


@pytest.fixture
def cli_server(tmp_path):
    """Factory: ``cli_server(*args, cwd=tmp_path)`` runs the CLI; stopped after the test."""
    started = []

    def start(*args, cwd=None, env=None):
        server = CliServer(args, cwd or tmp_path, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
