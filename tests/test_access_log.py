"""Access and error log files through the CLI: the json and combined formats,
refused requests, one whole line per write with workers, SIGUSR1 rotation."""

import datetime
import json
import os
import re
import signal
import socket

import requests

from conftest import free_port, read_to_end, wait_for

# The combined log format as Apache and nginx write it, and GoAccess reads it.
COMBINED = re.compile(r'^(?P<client>\S+) \S+ \S+ \[(?P<time>\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
                      r'"(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<size>\d+|-) '
                      r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"$')
GARBAGE = b"\x00\x01GET \"/evil\" " + b"A" * 300 + b" HTTP/1.1\r\n\r\n"


def lines_of(path, count, timeout=10):
    """The complete lines of ``path`` once there are ``count`` of them."""
    def read():
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            return f.read().rpartition("\n")[0].splitlines()
    wait_for(lambda: len(read()) >= count, timeout)
    return read()


def traffic(url, port):
    """Three requests the entries are checked against, the last one refused unparsed."""
    assert requests.get(url + "/page?q=1&r=2", headers={"User-Agent": 'agent "quoted"',
                                                         "Referer": "http://ref/"}).status_code == 200
    assert requests.post(url + "/missing", data=b"x" * 10).status_code == 405
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(GARBAGE)
        assert read_to_end(s)[0].startswith(b"HTTP/1.1 400 ")


def test_json_lines(tmp_path, run):
    (tmp_path / "page").write_text("a page")
    log = tmp_path / "access.log"
    p = run(["--port", "0", "--access-log", str(log), "--set", 'log_headers=["user-agent","referer"]'], tmp_path)
    traffic(p.url, p.port)
    first, second, refused = [json.loads(line) for line in lines_of(log, 3)]
    assert "{" not in p.stderr  # the access log went to the file only
    for entry in (first, second, refused):
        stamp = datetime.datetime.fromisoformat(entry["time"])
        assert stamp.tzinfo is not None
        assert abs((datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()) < 60
        assert isinstance(entry["duration"], float) and 0 <= entry["duration"] < 5
        assert entry["client_ip"] == "127.0.0.1" and entry["size"] > 0
    assert first["method"] == "GET" and first["target"] == "/page?q=1&r=2" and first["status"] == 200
    assert first["vhost"] == "127.0.0.1:%d" % p.port
    assert first["user-agent"] == 'agent "quoted"' and first["referer"] == "http://ref/"
    assert second["method"] == "POST" and second["target"] == "/missing" and second["status"] == 405
    assert refused["status"] == 400 and "method" not in refused
    raw = GARBAGE.split(b"\r\n")[0][:200]
    assert refused["request"] == raw.decode("latin-1").replace("\x00", "\\x00").replace(
        "\x01", "\\x01").replace('"', "\\x22")


def test_combined_lines_with_workers(tmp_path, run):
    (tmp_path / "page").write_text("a page")
    log = tmp_path / "access.log"
    p = run(["--port", "0", "--workers", "2", "--access-log", str(log), "--access-log-format", "combined"],
            tmp_path)
    traffic(p.url, p.port)
    count = 200
    with requests.Session() as session:  # two workers append to one file: whole lines only
        for i in range(count):
            assert session.get(p.url + "/page?n=%d" % i, headers={"Connection": "close"}).status_code == 200
    lines = lines_of(log, 3 + count)
    assert len(lines) == 3 + count
    parsed = [COMBINED.match(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed) if not m]
    first, second, refused = (m.groupdict() for m in parsed[:3])
    assert first["request"] == "GET /page?q=1&r=2 HTTP/1.1" and first["status"] == "200"
    assert first["agent"] == "agent \\x22quoted\\x22" and first["referer"] == "http://ref/"
    assert first["client"] == "127.0.0.1" and int(first["size"]) > 6
    datetime.datetime.strptime(first["time"], "%d/%b/%Y:%H:%M:%S %z")
    assert second["request"] == "POST /missing HTTP/1.1" and second["status"] == "405"
    assert second["referer"] == "-"
    assert refused["status"] == "400" and refused["request"].startswith("\\x00\\x01GET \\x22/evil\\x22 AAA")
    assert len(refused["request"]) == 200 + 4 * 3  # cut to 200 bytes; 4 of them escaped as \xHH
    assert sorted(m.group("request") for m in parsed[3:]) == sorted(
        "GET /page?n=%d HTTP/1.1" % i for i in range(count))


def test_rotation_with_sigusr1(tmp_path, run):
    (tmp_path / "page").write_text("a page")
    log, errors = tmp_path / "access.log", tmp_path / "error.log"
    port = free_port()  # the start line goes to the error log, not stderr
    p = run(["--port", str(port), "--workers", "2", "--access-log", str(log), "--error-log", str(errors)],
            tmp_path, wait_start=False, port=port)
    assert wait_for(lambda: "serving on" in errors.read_text())
    get = lambda i: requests.get(p.url + "/page?n=%d" % i, headers={"Connection": "close"}).status_code
    assert [get(i) for i in range(20)] == [200] * 20
    assert len(lines_of(log, 20)) == 20
    os.rename(log, str(log) + ".1")
    os.rename(errors, str(errors) + ".1")
    p.proc.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: log.exists() and errors.exists())
    assert [get(i) for i in range(20, 40)] == [200] * 20
    p.proc.send_signal(signal.SIGHUP)  # a message of the supervisor's goes to the new error log too
    assert wait_for(lambda: "reloaded" in errors.read_text())
    old = lines_of(str(log) + ".1", 20)
    assert wait_for(lambda: len(old) + len(lines_of(log, 0)) >= 40)
    new = lines_of(log, 0)
    targets = [json.loads(line)["target"] for line in old + new]
    assert sorted(targets) == sorted("/page?n=%d" % i for i in range(40))  # none lost, none twice
    assert len(new) >= 10  # the workers write to the new file once they reopened it
    assert "serving on" in open(str(errors) + ".1").read() and "serving on" not in errors.read_text()
    assert p.stop() == 0
