"""Every example of the docs and README (the files under docs/examples/) run as a user
runs them, and called with real clients: ``python file.py`` for the ones with a
``__main__`` block, and ``lilush-http file:handle`` (or ``--wsgi file:app``) for all,
which must import them without serving."""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"

# Every file under docs/examples/ is run by a test here, or named below with the reason.
RUN_ELSEWHERE = {
    "deploy/nginx.conf": "tests/test_deploy.py runs it with nginx (test_docs_show_these_configs: same file)",
    "deploy/haproxy.cfg": "tests/test_deploy.py runs it with HAProxy",
    "deploy/app.socket": "tests/test_deploy.py runs it with systemd-socket-activate",
    "deploy/app.service": "tests/test_deploy.py runs its ExecStart",
    "porting.lua": "the Lua side of the porting page, for comparison (no LuaJIT here)",
}
RUN_HERE = set()


def runs(*names):
    """Mark a test as the one running these example files."""
    RUN_HERE.update(names)
    return lambda test: test


def copy_examples(tmp_path, *names):
    """The example files copied into ``tmp_path`` (where they run, so that what they
    write stays out of the source tree)."""
    for name in names:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES / name, target)
    return tmp_path


class Script:
    """``python FILE`` started with ``PORT`` set, once it accepts connections."""

    def __init__(self, path, cwd, env=None, scheme="http"):
        self.port = free_port()
        environment = dict(os.environ, PORT=str(self.port), PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen([sys.executable, str(path)], cwd=str(cwd), env=environment,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = "%s://127.0.0.1:%d" % (scheme, self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("%s did not serve:\n%s" % (path, self.proc.stderr.read().decode()))
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stderr.close()


@pytest.fixture
def script():
    """Factory: ``script(path, cwd, env=None)`` runs ``python path``; stopped after the test."""
    started = []

    def start(path, cwd, **kw):
        started.append(Script(path, cwd, **kw))
        return started[-1]
    yield start
    for s in started:
        s.stop()


def both_ways(tmp_path, name, spec, run, script, cli_args=()):
    """The example served by ``python name`` and by the CLI with ``spec``: their URLs."""
    cwd = copy_examples(tmp_path, name)
    by_script = script(cwd / name, cwd)
    by_cli = run([*spec, "--port", "0", *cli_args], cwd=cwd)
    return [by_script.url, by_cli.url]


@runs("hello.py")
def test_hello_runs_both_ways(tmp_path, run, script):
    for url in both_ways(tmp_path, "hello.py", ["hello:handle"], run, script):
        answer = requests.get(url + "/hello", timeout=10)
        assert (answer.status_code, answer.text) == (200, "Hello, 127.0.0.1!\n")
        assert answer.headers["content-type"] == "text/plain"
        assert requests.get(url + "/elsewhere", timeout=10).status_code == 404


def chunks(total, size=65536):
    """A body without a length, so that requests sends it chunked."""
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


@runs("flask_app.py")
def test_flask_app_runs_both_ways(tmp_path, run, script):
    for url in both_ways(tmp_path, "flask_app.py", ["--wsgi", "flask_app:app"], run, script):
        answer = requests.get(url + "/", timeout=10)
        assert (answer.status_code, answer.text) == (200, "hello from Flask\n")
        assert requests.post(url + "/upload", data=b"y" * 1000, timeout=10).json() == {"received": 1000}
        chunked = requests.post(url + "/upload", data=chunks(300000), timeout=10)
        assert chunked.json() == {"received": 300000}


@runs("django_app.py")
def test_django_app(tmp_path, run):
    p = run(["--wsgi", "django_app:application", "--port", "0"], cwd=copy_examples(tmp_path, "django_app.py"))
    answer = requests.get(p.url + "/", timeout=10)
    assert (answer.status_code, answer.text) == (200, "hello from Django\n")
    assert requests.post(p.url + "/upload", data=b"y" * 1000, timeout=10).json() == {"received": 1000}
    assert requests.post(p.url + "/upload", data=chunks(200000), timeout=10).json() == {"received": 200000}
    assert requests.get(p.url + "/missing", timeout=10).status_code == 404


@runs("falcon_app.py")
def test_falcon_app(tmp_path, run):
    p = run(["--wsgi", "falcon_app:app", "--port", "0"], cwd=copy_examples(tmp_path, "falcon_app.py"))
    answer = requests.get(p.url + "/", timeout=10)
    assert (answer.status_code, answer.text) == (200, "hello from Falcon\n")
    assert requests.post(p.url + "/", data=chunks(100000), timeout=10).json() == {"received": 100000}


@runs("streaming.py")
def test_streamed_responses(tmp_path, run):
    cwd = copy_examples(tmp_path, "streaming.py")
    p = run(["streaming:handle", "--port", "0"], cwd=cwd)
    with requests.get(p.url + "/count", stream=True, timeout=10) as answer:
        assert answer.headers["transfer-encoding"] == "chunked"
        pieces = list(answer.iter_content(chunk_size=None))  # as they arrive
    assert pieces[0] == b"line 0\n"  # sent alone, while the generator slept before the next line
    assert b"".join(pieces) == b"".join(b"line %d\n" % i for i in range(5))
    download = requests.get(p.url + "/download", timeout=10)
    assert download.content == (cwd / "streaming.py").read_bytes()
    assert download.headers["content-length"] == str(len(download.content))


@runs("sse.py")
def test_server_sent_events(tmp_path, run):
    p = run(["sse:handle", "--port", "0"], cwd=copy_examples(tmp_path, "sse.py"))
    with requests.get(p.url + "/events", stream=True, timeout=10) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/event-stream"
        lines = answer.iter_lines(decode_unicode=True)
        event = [next(lines) for _ in range(3)]
    assert event[:2] == ["id: 0", "event: tick"]
    assert event[2].startswith("data: ") and "uptime" in json.loads(event[2][len("data: "):])
    assert requests.get(p.url + "/other", timeout=10).status_code == 404


@runs("send_file.py")
def test_send_file(tmp_path, run, monkeypatch):
    report = tmp_path / "latest.pdf"
    report.write_bytes(bytes(range(256)) * 40)
    monkeypatch.setenv("REPORT_PATH", str(report))
    p = run(["send_file:handle", "--port", "0"], cwd=copy_examples(tmp_path, "send_file.py"))
    whole = requests.get(p.url + "/reports/latest.pdf", timeout=10)
    assert whole.status_code == 200 and whole.content == report.read_bytes()
    assert whole.headers["cache-control"] == "no-cache" and whole.headers["etag"]
    part = requests.get(p.url + "/reports/latest.pdf", headers={"Range": "bytes=0-9"}, timeout=10)
    assert (part.status_code, part.content) == (206, bytes(range(10)))
    again = requests.get(p.url + "/reports/latest.pdf", headers={"If-None-Match": whole.headers["etag"]},
                         timeout=10)
    assert again.status_code == 304
    assert requests.get(p.url + "/reports/other.pdf", timeout=10).status_code == 404


@runs("upload.py")
def test_streamed_upload(tmp_path, run):
    cwd = copy_examples(tmp_path, "upload.py")
    p = run(["upload:handle", "--port", "0", "--max-body-size", str(8 << 20)], cwd=cwd)
    answer = requests.put(p.url + "/upload", data=chunks(3 << 20), timeout=20)
    assert (answer.status_code, answer.text) == (201, "stored %d bytes\n" % (3 << 20))
    assert (cwd / "upload.bin").stat().st_size == 3 << 20
    assert requests.get(p.url + "/upload", timeout=10).status_code == 404


@runs("websocket_echo.py")
def test_websocket_echo(tmp_path, run):
    import websocket as websocket_client
    p = run(["websocket_echo:handle", "--port", "0"], cwd=copy_examples(tmp_path, "websocket_echo.py"))
    ws = websocket_client.create_connection(p.url.replace("http", "ws") + "/chat", subprotocols=["chat"],
                                            timeout=10)
    try:
        assert ws.subprotocol == "chat"
        ws.send("hello")
        assert ws.recv() == "echo: hello"
        ws.send_binary(b"\x00\x01")
        assert ws.recv() == b"\x00\x01"
    finally:
        ws.close()
    assert requests.get(p.url + "/chat", timeout=10).status_code == 426


@runs("tls_server.py")
def test_tls_with_sni(tmp_path, script):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cwd = copy_examples(tmp_path, "tls_server.py")
    (cwd / "tls").mkdir()
    for name, hosts in (("default", ["127.0.0.1"]), ("example.com", ["example.com"]),
                        ("example.org", ["*.example.org"])):
        cert = ca.issue_cert(*hosts)
        cert.cert_chain_pems[0].write_to_path(str(cwd / "tls" / (name + ".pem")))
        cert.private_key_pem.write_to_path(str(cwd / "tls" / (name + ".key")))
    served = script(cwd / "tls_server.py", cwd, scheme="https")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    for name in ("example.com", "www.example.org", "127.0.0.1"):
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:  # verifies the name's certificate
                tls.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % name.encode())
                with tls.makefile("rb") as reader:
                    answer = reader.read()
        sni = "None" if name == "127.0.0.1" else name  # no SNI for an IP address
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(("Hello over https, %s\n" % sni).encode())


@runs("redis_counter.py")
def test_redis_counter(tmp_path, run):
    redis = pytest.importorskip("redis")
    from test_redis import start_redis
    port = free_port()
    process = start_redis(tmp_path, "--port", str(port), "--save", "", "--appendonly", "no")
    try:
        p = run(["redis_counter:handle", "--port", "0", "--set", "redis.port=%d" % port],
                cwd=copy_examples(tmp_path, "redis_counter.py"))
        redis.Redis(port=port).delete("hits")
        assert [requests.get(p.url + "/", timeout=10).text for _ in range(2)] == ["visit 1\n", "visit 2\n"]
    finally:
        process.terminate()
        process.wait(10)


@runs("blocking.py")
def test_blocking_library_calls_overlap(tmp_path, live_server, script):
    import gevent
    state = {"in_flight": 0, "most": 0}

    def backend(method, query, args, headers, body, ctx):
        """Answers once 5 requests wait together (or after 10 s): how many it saw at once."""
        state["in_flight"] += 1
        state["most"] = max(state["most"], state["in_flight"])
        deadline = time.monotonic() + 10
        while state["most"] < 5 and time.monotonic() < deadline:
            gevent.sleep(0.01)
        state["in_flight"] -= 1
        return str(state["most"]), 200, {}
    upstream = live_server(backend)
    cwd = copy_examples(tmp_path, "blocking.py")
    served = script(cwd / "blocking.py", cwd, env={"BACKEND_URL": upstream.url + "/"})
    answers = []
    clients = [threading.Thread(target=lambda: answers.append(requests.get(served.url + "/", timeout=30).text))
               for _ in range(5)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    assert answers == ["5"] * 5  # the five calls to requests.get were waiting at the same time


@runs("porting.py")
def test_porting_idioms(tmp_path, run):
    p = run(["porting:handle", "--port", "0"], cwd=copy_examples(tmp_path, "porting.py"))
    get = lambda path, **kw: requests.get(p.url + path, timeout=10, **kw)  # noqa: E731
    assert get("/hello").text == "Hello!"
    assert get("/greet?name=Ada").text == "Hello, Ada!"
    assert get("/whoami", headers={"User-Agent": "probe/1"}).text == "127.0.0.1 probe/1"
    assert requests.post(p.url + "/echo", data=b"12345", timeout=10).text == "got 5 bytes"
    login = get("/login")
    assert login.raw.headers.getlist("set-cookie") == ["session=abc; HttpOnly", "theme=dark"]
    assert get("/limits").text == "max body %d" % (5 * 1024 * 1024)
    assert p.wait_for(lambda line: '"limits asked"' in line)
    ok = get("/ok")
    assert (ok.status_code, ok.text) == (200, "ok")
    assert (get("/raw").status_code, get("/raw").text) == (200, "raw")
    cwd = tmp_path
    served = Script(cwd / "porting.py", cwd)  # the [serve] block
    try:
        assert requests.get(served.url + "/hello", timeout=10).text == "Hello!"
    finally:
        served.stop()


@runs("config.json")
def test_config_file(tmp_path, run):
    cwd = copy_examples(tmp_path, "config.json", "hello.py")
    p = run(["hello:handle", "--config", "config.json", "--port", "0"], cwd=cwd)
    assert requests.get(p.url + "/hello", timeout=10).status_code == 200
    combined = p.wait_for(lambda line: '"GET /hello HTTP/1.1" 200' in line)
    assert combined.startswith("127.0.0.1 - - [")  # access_log_format: combined
    too_big = requests.post(p.url + "/hello", data=b"z" * (1024 * 1024 + 1), timeout=10)
    assert too_big.status_code == 413  # max_body_size: 1048576


def container_command():
    """The Dockerfile's ENTRYPOINT and CMD, the manifest's args (they replace CMD) and its text."""
    dockerfile = (EXAMPLES / "deploy" / "Dockerfile").read_text()
    manifest = (EXAMPLES / "deploy" / "kubernetes.yaml").read_text()
    found = [json.loads(re.search(pattern, text, re.M).group(1)) for pattern, text in (
        (r"^ENTRYPOINT (\[.*\])$", dockerfile), (r"^CMD (\[.*\])$", dockerfile), (r"^\s+args: (\[.*\])$", manifest))]
    return found + [manifest]


@runs("deploy/kubernetes.yaml", "deploy/Dockerfile", "deploy/app.py")
def test_container_command_probes_drain_and_sigterm(tmp_path, run):
    entrypoint, cmd, args, manifest = container_command()
    assert entrypoint == ["lilush-http"] and args[:len(cmd)] == cmd  # the manifest adds to the image's command
    probe = re.search(r"readinessProbe:\s+httpGet: \{path: (\S+), port: (\d+)\}", manifest)
    assert probe.group(2) == args[args.index("--port") + 1]
    args = list(args)
    args[args.index("--ip") + 1] = "127.0.0.1"  # loopback only in the tests
    args[args.index("--port") + 1] = "0"
    p = run(args, cwd=copy_examples(tmp_path, "deploy/app.py") / "deploy")
    answer = requests.get(p.url + probe.group(1), timeout=10)
    assert (answer.status_code, answer.text) == (200, "ok\n")
    grace = int(re.search(r"terminationGracePeriodSeconds: (\d+)", manifest).group(1))
    drain = float(args[args.index("--drain-delay") + 1])
    assert drain + 5 < grace  # the drain and the stop's own 5 s end before SIGKILL
    p.proc.send_signal(signal.SIGTERM)
    p.wait_for(lambda line: "drain_delay" in line)
    during = requests.get(p.url + probe.group(1), timeout=10)  # a load balancer still sending
    assert during.status_code == 200 and during.headers["connection"] == "close"
    assert p.proc.wait(min(grace, 30)) == 0


def test_every_example_is_run():
    files = {str(path.relative_to(EXAMPLES)) for path in EXAMPLES.rglob("*")
             if path.is_file() and "__pycache__" not in path.parts}
    assert files == RUN_HERE | set(RUN_ELSEWHERE), "examples not run: %s; run but missing: %s" % (
        sorted(files - RUN_HERE - set(RUN_ELSEWHERE)), sorted((RUN_HERE | set(RUN_ELSEWHERE)) - files))
