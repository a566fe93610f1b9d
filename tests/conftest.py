"""Live servers for the tests: a real lilush_http server on 127.0.0.1, port 0,
running its own gevent hub in a background thread, so the tests drive it with
ordinary blocking clients (requests, http.client, raw sockets, curl)."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from lilush_http import server


# CI sets this so that a test needing a system program fails, rather than skips,
# when the program is missing (.ci/run installs every one of them).
REQUIRE_PROGRAMS = os.environ.get("LILUSH_HTTP_REQUIRE_PROGRAMS") == "1"


def need_program(name):
    """The path of the system program ``name``; skips the test when it is missing
    (fails instead under LILUSH_HTTP_REQUIRE_PROGRAMS=1, as in CI)."""
    path = shutil.which(name) or next(
        (p for p in ("/usr/sbin/" + name, "/sbin/" + name) if os.access(p, os.X_OK)), None)
    if path is None:
        if REQUIRE_PROGRAMS:
            pytest.fail("%s is not installed and LILUSH_HTTP_REQUIRE_PROGRAMS=1" % name)
        pytest.skip("%s is not installed" % name)
    return path


START = re.compile(r"lilush_http serving on https?://127\.0\.0\.1:(\d+)")
ACCESS = '{"time":'  # how a JSON access line starts (the CLI writes them to stderr by default)


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


def slow_at(path, seconds):
    """A handler answering "ok " + the query, after sleeping ``seconds`` (gevent) on ``path``."""
    import gevent

    def handle(method, query, *rest):
        if query == path:
            gevent.sleep(seconds)
        return "ok " + query, 200, {}
    return handle


def read_to_end(sock, within=5.0):
    """(data, closed): what arrived until the server closed ``sock`` (EOF or reset),
    or until ``within`` seconds passed (closed is then False)."""
    deadline = time.monotonic() + within
    data = b""
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            piece = sock.recv(65536)
            if not piece:
                return data, True
            data += piece
    except socket.timeout:
        return data, False
    except (ConnectionResetError, BrokenPipeError):
        return data, True


def wait_for(predicate, timeout=10):
    """True once ``predicate()`` is, or False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A running ``python -m lilush_http`` (after ``prefix``, a launcher such as
    systemd-socket-activate); stderr is collected by a thread."""

    def __init__(self, args, cwd, wait_start=True, port=None, prefix=(), pass_fds=()):
        self.proc = subprocess.Popen(list(prefix) + [sys.executable, "-m", "lilush_http"] + list(args),
                                     cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                     pass_fds=pass_fds)
        self.lines = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.port = port
        try:
            if wait_start:
                line = self.wait_for(START.search)
                self.port = int(START.search(line).group(1))
            elif port is not None:
                self.wait_listening()
        except BaseException:  # the run fixture never sees this Proc: do not leave it running
            self.kill()
            raise
        self.url = "http://127.0.0.1:%d" % self.port if self.port else None

    def _read(self):
        for raw in self.proc.stderr:
            with self.lock:
                self.lines.append(raw.decode("utf-8", "replace"))

    @property
    def stderr(self):
        with self.lock:
            return "".join(self.lines)

    def wait_for(self, match, timeout=10):
        """The first stderr line for which ``match`` is true, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                for line in self.lines:
                    if match(line):
                        return line
            if self.proc.poll() is not None and not self.reader.is_alive():
                raise AssertionError("server exited %s:\n%s" % (self.proc.returncode, self.stderr))
            if time.monotonic() > deadline:
                raise AssertionError("timed out; stderr so far:\n%s" % self.stderr)
            time.sleep(0.02)

    def wait_listening(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, "server exited:\n%s" % self.stderr
                assert time.monotonic() < deadline, "server did not listen:\n%s" % self.stderr
                time.sleep(0.05)

    def access_entries(self, count=None, timeout=10):
        """The JSON access entries on stderr; with ``count``, waits until that many have
        arrived (an entry is written just after its response is sent)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = [json.loads(line) for line in self.stderr.splitlines() if line.startswith(ACCESS)]
            if count is None or len(entries) >= count or time.monotonic() > deadline:
                return entries
            time.sleep(0.02)

    def stop(self, signum=signal.SIGTERM, timeout=5):
        """Send ``signum`` and wait for the exit; the return code."""
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout)
        self.reader.join(5)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.reader.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def run():
    """Factory: ``run(args, cwd, ...)`` starts the CLI; every process is killed after the test."""
    procs = []

    def start(args, cwd, **kw):
        p = Proc(args, cwd, **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


def cli(args, cwd, timeout=15):
    """Run the CLI to its end (an error case); the CompletedProcess, stderr as text."""
    return subprocess.run([sys.executable, "-m", "lilush_http"] + list(args), cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class HeadlessChromium:
    """Headless Chromium opening ``url`` with a fresh profile under ``tmp_path``, offline
    (no background networking, updates or sync); ``with`` ends it, killed if it lingers."""

    def __init__(self, url, tmp_path, *flags):
        profile = tmp_path / "chromium-profile"
        profile.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [need_program("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--user-data-dir=%s" % profile, *flags, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        return self.proc

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
