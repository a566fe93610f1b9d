"""``lilush-http`` / ``python -m lilush_http`` run as a real subprocess."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests

from conftest import ACCESS, cli, free_port, read_to_end


HANDLER = '''
import json
import sys

import gevent
import gevent.monkey


def handle(method, query, args, headers, body, ctx):
    if query == "/slow":
        print("slow request started", file=sys.stderr, flush=True)
        gevent.sleep(1)
        return "slow done", 200, {"content-type": "text/plain"}
    if query == "/patched":
        return json.dumps(gevent.monkey.is_module_patched("socket")), 200, {"content-type": "application/json"}
    if query == "/echo":
        return body or b"", 200, {"content-type": "application/octet-stream"}
    return ("hello from %s %s %s" % (method, query, args)), 201, {"content-type": "text/plain", "x-handler": "mine"}


not_a_function = 42
'''


@pytest.fixture
def handler_dir(tmp_path):
    (tmp_path / "myhandler.py").write_text(HANDLER)
    return tmp_path


# -- no handler: static files ------------------------------------------------------------


def test_serves_root_dir(tmp_path, run):
    root = tmp_path / "site"
    root.mkdir()
    (root / "hello.txt").write_text("hello static\n")
    (root / "index.html").write_text("<p>index</p>")
    p = run(["--port", "0", "--root", str(root)], cwd=tmp_path)
    out = subprocess.run(["/usr/bin/curl", "-sv", p.url + "/hello.txt"], capture_output=True, timeout=10)
    assert out.returncode == 0
    assert out.stdout == b"hello static\n"
    assert b"< HTTP/1.1 200 OK" in out.stderr
    assert b"< content-type: text/plain; charset=utf-8" in out.stderr.lower()
    r = requests.get(p.url + "/")
    assert r.status_code == 200 and r.text == "<p>index</p>"
    assert requests.get(p.url + "/nope").status_code == 404
    assert requests.post(p.url + "/hello.txt").status_code == 405
    entries = p.access_entries(4)
    assert [(e["method"], e["target"], e["status"]) for e in entries] == [
        ("GET", "/hello.txt", 200), ("GET", "/", 200), ("GET", "/nope", 404), ("POST", "/hello.txt", 405)]
    assert p.stop() == 0


def test_relative_root(tmp_path, run):
    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "a.txt").write_text("relative")
    (tmp_path / "private.txt").write_text("private")
    p = run(["--port", "0", "--root", "pub"], cwd=tmp_path)
    assert requests.get(p.url + "/a.txt").text == "relative"
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /../private.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_to_end(s)[0]
    assert data.startswith(b"HTTP/1.1 404 ") and b"private" not in data.split(b"\r\n\r\n", 1)[1]


def test_default_root_is_working_directory(tmp_path, run):
    (tmp_path / "cwd.txt").write_text("from the cwd")
    p = run(["--port", "0"], cwd=tmp_path)
    out = subprocess.run(["/usr/bin/curl", "-sv", p.url + "/cwd.txt"], capture_output=True, timeout=10)
    assert out.stdout == b"from the cwd"
    assert b"< HTTP/1.1 200 OK" in out.stderr
    listing = requests.get(p.url + "/")
    assert listing.status_code == 200 and "cwd.txt" in listing.text


# -- MODULE:HANDLER ----------------------------------------------------------------------


def test_serves_handler_function(handler_dir, run):
    p = run(["myhandler:handle", "--port", "0"], cwd=handler_dir)
    r = requests.get(p.url + "/some/path?x=1", headers={"User-Agent": "cli-test"})
    assert r.status_code == 201
    assert r.text == "hello from GET /some/path x=1"
    assert r.headers["x-handler"] == "mine"
    assert r.headers["content-type"] == "text/plain"
    assert requests.post(p.url + "/echo", data=b"payload").content == b"payload"
    entries = p.access_entries(2)
    assert entries[0]["method"] == "GET" and entries[0]["target"] == "/some/path?x=1"
    assert entries[0]["status"] == 201 and entries[0]["user-agent"] == "cli-test"
    assert entries[1]["method"] == "POST" and entries[1]["target"] == "/echo" and entries[1]["status"] == 200
    assert "Traceback" not in p.stderr
    assert p.stop() == 0


def test_handler_in_a_package(tmp_path, run):
    pkg = tmp_path / "app"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "views.py").write_text("def root(method, query, args, headers, body, ctx):\n"
                                  "    return 'pkg ' + query, 200, {'content-type': 'text/plain'}\n")
    p = run(["app.views:root", "--port", "0"], cwd=tmp_path)
    assert requests.get(p.url + "/x").text == "pkg /x"


def test_handler_gets_no_static_files(handler_dir, run):
    """With a handler, --root is not served: the handler sees every path."""
    (handler_dir / "file.txt").write_text("static")
    p = run(["myhandler:handle", "--port", "0"], cwd=handler_dir)
    r = requests.get(p.url + "/file.txt")
    assert r.status_code == 201 and r.text.startswith("hello from GET /file.txt")


# -- config -----------------------------------------------------------------------------------


def test_config_file_applies(handler_dir, run):
    cfg = handler_dir / "cfg.json"
    cfg.write_text(json.dumps({"max_body_size": 10, "log_headers": ["x-custom"], "port": 0}))
    p = run(["myhandler:handle", "--config", str(cfg)], cwd=handler_dir)
    r = requests.post(p.url + "/echo", data=b"x" * 100, headers={"X-Custom": "seen"})
    assert r.status_code == 413
    r = requests.post(p.url + "/echo", data=b"x" * 10, headers={"X-Custom": "seen", "User-Agent": "ua"})
    assert r.status_code == 200 and r.content == b"x" * 10
    entries = p.access_entries(2)
    assert entries[-1]["status"] == 200 and entries[-1]["x-custom"] == "seen"
    assert "user-agent" not in entries[-1]  # log_headers replaced the default list


def test_command_line_overrides_config(handler_dir, run):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        cfg = handler_dir / "cfg.json"
        # Binding either of these would fail: the command line must win.
        cfg.write_text(json.dumps({"ip": "192.0.2.1", "port": busy.getsockname()[1], "log_level": "error"}))
        p = run(["myhandler:handle", "--config", str(cfg), "--ip", "127.0.0.1", "--port", "0",
                 "--log-level", "access"], cwd=handler_dir)
        assert requests.get(p.url + "/a").status_code == 201
        p.wait_for(lambda line: ACCESS in line)
    finally:
        busy.close()


def test_log_level_from_command_line_quietens(handler_dir, run):
    cfg = handler_dir / "cfg.json"
    cfg.write_text(json.dumps({"log_level": "access"}))
    port = free_port()
    p = run(["myhandler:handle", "--config", str(cfg), "--port", str(port), "--log-level", "error"],
            cwd=handler_dir, wait_start=False, port=port)
    assert requests.get(p.url + "/a").status_code == 201
    assert p.stop() == 0
    assert ACCESS not in p.stderr and "serving on" not in p.stderr and "stopped" not in p.stderr


def test_log_level_from_config_file(handler_dir, run):
    cfg = handler_dir / "cfg.json"
    port = free_port()
    cfg.write_text(json.dumps({"log_level": "warn", "port": port}))
    p = run(["myhandler:handle", "--config", str(cfg)], cwd=handler_dir, wait_start=False, port=port)
    assert requests.get(p.url + "/a").status_code == 201
    assert p.stop() == 0
    assert ACCESS not in p.stderr and "serving on" not in p.stderr


# -- errors --------------------------------------------------------------------------------------


def check_error(result, *words, max_lines=3):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    text = result.stderr.lower()
    for word in words:
        assert word.lower() in text, (word, result.stderr)
    assert len(result.stderr.strip().splitlines()) <= max_lines, result.stderr  # a message, not a dump


@pytest.mark.parametrize("spec", ["myhandler", "myhandler:", ":handle", "my handler:handle"])
def test_bad_handler_spec(handler_dir, spec):
    check_error(cli([spec, "--port", "0"], handler_dir), "handler")


def test_missing_module(handler_dir):
    check_error(cli(["no_such_module_xyz:handle", "--port", "0"], handler_dir), "no_such_module_xyz")


def test_missing_function(handler_dir):
    check_error(cli(["myhandler:nope", "--port", "0"], handler_dir), "myhandler", "nope")


def test_not_a_function(handler_dir):
    check_error(cli(["myhandler:not_a_function", "--port", "0"], handler_dir), "not_a_function")


def test_module_failing_on_import(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "badsyntax.py").write_text("def handle(:\n")
    (tmp_path / "indirect.py").write_text("import helper\n")
    (tmp_path / "helper.py").write_text("x = 1\ny = 1 / 0\n")
    for spec, where, error in [("broken:handle", 'broken.py", line 1', "RuntimeError: boom at import"),
                               ("badsyntax:handle", 'badsyntax.py", line 1', "SyntaxError"),
                               ("indirect:handle", 'helper.py", line 2', "ZeroDivisionError")]:
        result = cli([spec, "--port", "0"], tmp_path)
        assert result.returncode == 2
        assert "cannot import %s:\nTraceback" % spec.split(":")[0] in result.stderr
        assert where in result.stderr and error in result.stderr, result.stderr
        assert "importlib" not in result.stderr and "serving on" not in result.stderr


def test_missing_config_file(tmp_path):
    check_error(cli(["--config", str(tmp_path / "nope.json")], tmp_path), "config", "nope.json")


def test_unreadable_config_file(tmp_path):
    (tmp_path / "adir.json").mkdir()  # open() fails even for root
    check_error(cli(["--config", str(tmp_path / "adir.json")], tmp_path), "config")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    check_error(cli(["--config", str(tmp_path / "binary.json")], tmp_path), "config")


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", "42", '"port"', "{\"port\": 80"])
def test_invalid_json_config(tmp_path, text):
    (tmp_path / "bad.json").write_text(text)
    check_error(cli(["--config", str(tmp_path / "bad.json")], tmp_path), "config")


@pytest.mark.parametrize("cfg, word", [
    ({"port": 70000}, "port"),
    ({"port": "8080"}, "port"),
    ({"port": -1}, "port"),
    ({"ip": "not an ip"}, "ip"),
    ({"max_body_size": -5}, "max_body_size"),
    ({"log_level": "chatty"}, "log_level"),
    ({"log_headers": "referer"}, "log_headers"),
    ({"connection_limit": 0}, "connection_limit"),
])
def test_bad_config_value(tmp_path, cfg, word):
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    check_error(cli(["--config", str(tmp_path / "cfg.json")], tmp_path), word)


def test_bad_port_on_command_line(tmp_path):
    check_error(cli(["--port", "70000"], tmp_path), "port")
    check_error(cli(["--port", "http"], tmp_path), "port", "invalid int", max_lines=12)  # argparse: usage too


def test_bad_ip_on_command_line(tmp_path):
    check_error(cli(["--ip", "999.1.1.1", "--port", "0"], tmp_path), "ip")


def test_root_does_not_exist(tmp_path):
    check_error(cli(["--root", str(tmp_path / "missing"), "--port", "0"], tmp_path), "root", "missing")
    (tmp_path / "file").write_text("x")
    check_error(cli(["--root", str(tmp_path / "file"), "--port", "0"], tmp_path), "root")


def test_port_in_use(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        result = cli(["--port", str(port)], tmp_path)
        check_error(result, "failed to bind", str(port))
        assert result.returncode == 1
    finally:
        busy.close()


def test_unknown_option(tmp_path):
    check_error(cli(["--bogus"], tmp_path), "--bogus", max_lines=12)


# -- signals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(tmp_path, run, signum):
    (tmp_path / "a.txt").write_text("a")
    p = run(["--port", "0"], cwd=tmp_path)
    # An idle keep-alive connection must not hold the shutdown up.
    idle = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    try:
        idle.sendall(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        assert p.stop(signum) == 0
        assert time.monotonic() - started < 3
        assert idle.recv(65536) == b""  # closed by the server
    finally:
        idle.close()
    assert "lilush_http stopped" in p.stderr
    assert "Traceback" not in p.stderr and "KeyboardInterrupt" not in p.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p.port), timeout=1).close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_in_flight_request_completes_on_signal(handler_dir, run, signum):
    p = run(["myhandler:handle", "--port", "0"], cwd=handler_dir)
    result = {}

    def client():
        try:
            r = requests.get(p.url + "/slow", timeout=10)
            result["response"] = r
        except Exception as exc:  # reported below
            result["error"] = exc

    t = threading.Thread(target=client)
    t.start()
    p.wait_for(lambda line: "slow request started" in line)
    started = time.monotonic()
    assert p.stop(signum) == 0
    t.join(10)
    assert "error" not in result, result.get("error")
    r = result["response"]
    assert r.status_code == 200 and r.text == "slow done"
    assert r.headers.get("connection", "").lower() == "close"
    assert time.monotonic() - started < 4
    assert "lilush_http stopped" in p.stderr
    assert "Traceback" not in p.stderr


def test_signal_with_no_monkey_patch(handler_dir, run):
    p = run(["myhandler:handle", "--port", "0", "--no-monkey-patch"], cwd=handler_dir)
    assert requests.get(p.url + "/a").status_code == 201
    assert p.stop(signal.SIGINT) == 0
    assert "lilush_http stopped" in p.stderr and "Traceback" not in p.stderr


# -- monkey patching -------------------------------------------------------------------------


def test_monkey_patch_by_default(handler_dir, run):
    p = run(["myhandler:handle", "--port", "0"], cwd=handler_dir)
    assert requests.get(p.url + "/patched").json() is True


def test_no_monkey_patch(handler_dir, run):
    p = run(["myhandler:handle", "--port", "0", "--no-monkey-patch"], cwd=handler_dir)
    assert requests.get(p.url + "/patched").json() is False
    assert requests.get(p.url + "/x").status_code == 201


# -- entry points --------------------------------------------------------------------------------


def test_help(tmp_path):
    result = cli(["--help"], tmp_path)
    assert result.returncode == 0
    for option in ("MODULE:HANDLER", "--ip", "--port", "--config", "--root", "--log-level", "--no-monkey-patch"):
        assert option in result.stdout


def test_console_script(tmp_path):
    """The installed ``lilush-http`` command is the same program."""
    script = os.path.join(os.path.dirname(sys.executable), "lilush-http")
    if not os.path.exists(script):
        pytest.skip("lilush-http is not installed next to %s" % sys.executable)
    result = subprocess.run([script, "--root", str(tmp_path / "missing")], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=15)
    check_error(result, "root")


def test_server_stop_from_another_greenlet_when_monkey_patched(tmp_path):
    """What the CLI's signal handler does: stop() from a greenlet other than serve()'s, once
    monkey-patching made threading.get_ident() per greenlet (it used to spin forever)."""
    script = textwrap.dedent("""
        from gevent import monkey
        monkey.patch_all()
        import gevent
        from lilush_http import server
        srv, err = server.new({"port": 0, "log_level": "error"})
        gevent.spawn_later(0.3, srv.stop, 1)
        print(srv.serve())
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), capture_output=True, text=True,
                            timeout=20)  # the bug spun forever; a busy 2-core machine takes seconds to import
    assert result.returncode == 0 and result.stdout.strip() == "(None, None)", result.stderr


# -- every config key from the command line -------------------------------------------------------


def test_generated_flags_and_set(handler_dir, run):
    p = run(["myhandler:handle", "--port", "0", "--max-body-size", "10", "--keepalive-idle-timeout", "0.5",
             "--set", "compression.min_size=0", "--set", 'log_headers=["x-custom"]'], cwd=handler_dir)
    assert requests.post(p.url + "/echo", data=b"x" * 11).status_code == 413
    r = requests.post(p.url + "/echo", data=b"y" * 10, headers={"Accept-Encoding": "gzip", "X-Custom": "c"})
    assert r.status_code == 200 and r.content == b"y" * 10
    assert r.headers.get("content-encoding") is None  # application/octet-stream is not a compressed type
    r = requests.get(p.url + "/page", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"  # min_size 0: even a short text/plain body
    assert p.access_entries(3)[1]["x-custom"] == "c"
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        data, closed = read_to_end(s, 5)
        assert closed and data.startswith(b"HTTP/1.1 201 ")
        assert time.monotonic() - started < 3  # the 0.5 s keep-alive timeout applied


def test_set_errors_and_unknown_keys(handler_dir, run):
    check_error(cli(["--set", "port"], handler_dir), "--set", "KEY=VALUE")
    check_error(cli(["--set", "compression.level=12"], handler_dir), "compression.level")
    cfg = handler_dir / "cfg.json"
    cfg.write_text(json.dumps({"max_body_sise": 10, "compression": {"levle": 1}}))
    p = run(["myhandler:handle", "--port", "0", "--config", str(cfg), "--set", "conection_limit=5"],
            cwd=handler_dir)
    for key, close in [("max_body_sise", "max_body_size"), ("compression.levle", "compression.level"),
                       ("conection_limit", "connection_limit")]:
        assert "unknown config key '%s' (did you mean '%s'?)" % (key, close) in p.stderr, p.stderr
    assert requests.get(p.url + "/").status_code == 201


def test_help_lists_every_key_and_version(tmp_path):
    result = cli(["--help"], tmp_path)
    assert result.returncode == 0
    for text in ("--max-body-size", "--connection-limit", "--request-header-timeout", "--access-log",
                 "--error-log", "--access-log-format", "--set KEY=VALUE", "compression.level", "ssl",
                 "redis", "HUP reloads", "USR1 reopens"):
        assert text in result.stdout, text
    assert re.search(r"max_body_size\s+5242880", result.stdout)
    assert re.search(r"compression\.min_size\s+4096", result.stdout)
    result = cli(["--version"], tmp_path)
    assert result.returncode == 0 and re.fullmatch(r"lilush-http \d+\.\d+\.\d+\n", result.stdout)
