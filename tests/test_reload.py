"""SIGHUP reloads the config and the handler's code under load, without a failed
request; a reload that cannot work leaves the old workers serving."""

import json
import signal
import threading
import time

import pytest
import requests

from conftest import wait_for

MODULE = '''
import os
VERSION = %r
def handle(method, query, args, headers, body, ctx):
    return "%%s %%d" %% (VERSION, os.getpid()), 200, {"content-type": "text/plain"}
'''


def write_module(directory, version, extra=""):
    # A new version of another length: Python's bytecode cache checks the size too,
    # so a rewrite within the same second is never taken for the cached one.
    (directory / "versioned.py").write_text(MODULE % version + extra)


class Load:
    """``clients`` threads, each looping GET on its own keep-alive session."""

    def __init__(self, url, clients=20):
        self.url = url
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.seen = {}  # version -> (count, first monotonic time)
        self.failures = []
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _client(self):
        with requests.Session() as session:
            while not self.stopping.is_set():
                try:
                    r = session.get(self.url, timeout=10)
                except requests.RequestException as exc:
                    with self.lock:
                        self.failures.append(repr(exc))
                    continue
                now = time.monotonic()
                with self.lock:
                    if r.status_code != 200:
                        self.failures.append("status %d" % r.status_code)
                        continue
                    version = r.text.split()[0]
                    count, first = self.seen.get(version, (0, now))
                    self.seen[version] = (count + 1, first)

    def first_seen(self, version, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if version in self.seen:
                    return self.seen[version][1]
            time.sleep(0.02)
        return None

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(15)
        return sum(count for count, _ in self.seen.values())


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_under_load(tmp_path, run, workers):
    write_module(tmp_path, "one")
    (tmp_path / "cfg.json").write_text(json.dumps({"log_level": "info"}))
    p = run(["versioned:handle", "--port", "0", "--workers", str(workers), "--config", "cfg.json"], tmp_path)
    load = Load(p.url)
    try:
        assert load.first_seen("one", 10) is not None
        time.sleep(4)
        write_module(tmp_path, "version-two")
        signalled = time.monotonic()
        p.proc.send_signal(signal.SIGHUP)
        arrived = load.first_seen("version-two", 5)
        assert arrived is not None, "the new version did not answer within 5 s:\n%s" % p.stderr
        time.sleep(4)
    finally:
        total = load.stop()
    assert load.failures == [], load.failures[:5]
    assert p.proc.poll() is None and "reloaded: %d new workers serve" % workers in p.stderr
    with load.lock:
        print("reload, %d workers: %d requests, %d after the new version; 0 failed; new version after %.2f s"
              % (workers, total, load.seen["version-two"][0], arrived - signalled))
    r = requests.get(p.url, headers={"Connection": "close"})
    assert r.text.startswith("version-two ")
    assert wait_for(lambda: len(children(p.proc.pid)) == workers)  # the old ones drained and exited
    assert p.stop() == 0


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return f.read().split()


def test_failed_reload_keeps_the_old_workers(tmp_path, run):
    write_module(tmp_path, "one")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"max_body_size": 1000}))
    p = run(["versioned:handle", "--port", "0", "--config", str(cfg)], tmp_path)
    before = requests.get(p.url).text
    assert before.startswith("one ")

    write_module(tmp_path, "version-two")  # would be taken up by a reload that works
    for bad_config, why in [("{not json", "cfg.json"), (json.dumps({"max_body_size": -1}), "max_body_size")]:
        cfg.write_text(bad_config)
        p.proc.send_signal(signal.SIGHUP)
        line = p.wait_for(lambda line: "reload failed" in line and why in line)
        assert "the old workers keep serving" in line
        assert requests.get(p.url).text == before  # the same worker, the old code
        p.lines.clear()

    cfg.write_text(json.dumps({"max_body_size": 1000}))
    write_module(tmp_path, "version-three", "\nraise RuntimeError('broken at import')\n")
    p.proc.send_signal(signal.SIGHUP)
    p.wait_for(lambda line: "reload failed" in line and "versioned" in line)
    assert "RuntimeError: broken at import" in p.stderr and 'versioned.py", line' in p.stderr
    assert requests.get(p.url).text == before

    write_module(tmp_path, "version-four")  # fixed: the next reload works
    p.proc.send_signal(signal.SIGHUP)
    p.wait_for(lambda line: "reloaded" in line)
    assert wait_for(lambda: len(children(p.proc.pid)) == 1)
    assert requests.get(p.url).text.startswith("version-four ")
    assert p.stop() == 0


def test_reload_takes_up_new_certificates(tmp_path, run):
    trustme = pytest.importorskip("trustme")
    write_module(tmp_path, "one")
    first, second = trustme.CA(), trustme.CA()
    for ca, name in ((first, "first"), (second, "second")):
        ca.cert_pem.write_to_path(str(tmp_path / ("%s-ca.pem" % name)))
    first.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    p = run(["versioned:handle", "--port", "0", "--tls-cert", "server.pem", "--tls-key", "server.pem"], tmp_path)
    url = "https://127.0.0.1:%d/" % p.port
    assert requests.get(url, verify=str(tmp_path / "first-ca.pem")).text.startswith("one ")

    second.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    p.proc.send_signal(signal.SIGHUP)
    p.wait_for(lambda line: "reloaded" in line)
    assert wait_for(lambda: len(children(p.proc.pid)) == 1)  # the old worker has drained
    assert requests.get(url, verify=str(tmp_path / "second-ca.pem")).text.startswith("one ")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, verify=str(tmp_path / "first-ca.pem"))
