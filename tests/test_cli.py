"""``lilush-http`` / ``python -m lilush_http`` run as a real subprocess."""

import json
import os
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
    entries = p.access_entries()
    assert [(e["method"], e["query"], e["status"]) for e in entries] == [
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
    p.wait_for(lambda line: '"/echo"' in line)
    entries = p.access_entries()
    assert entries[0]["method"] == "GET" and entries[0]["query"] == "/some/path"
    assert entries[0]["status"] == 201 and entries[0]["user-agent"] == "cli-test"
    assert entries[1]["method"] == "POST" and entries[1]["query"] == "/echo" and entries[1]["status"] == 200
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
    p.wait_for(lambda line: ACCESS in line and '"status":200' in line)
    entries = p.access_entries()
    assert entries[-1]["x-custom"] == "seen"
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
    check_error(cli(["broken:handle", "--port", "0"], tmp_path), "broken", "boom at import")
    check_error(cli(["badsyntax:handle", "--port", "0"], tmp_path), "badsyntax")


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
    check_error(cli(["--port", "http"], tmp_path), "port", "invalid int", max_lines=8)  # argparse: usage too


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
    check_error(cli(["--bogus"], tmp_path), "--bogus", max_lines=8)


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
                            timeout=4)
    assert result.returncode == 0 and result.stdout.strip() == "(None, None)", result.stderr
