"""--workers N, --wsgi and --tls-cert/--tls-key through the real CLI."""

import os
import signal
import socket
import textwrap

import pytest
import requests

from conftest import wait_for

APP = """
    import os
    def handle(method, query, args, headers, body, ctx):
        if query == "/die":
            os._exit(3)
        return str(os.getpid()), 200, {"content-type": "text/plain"}

    def wsgi(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"wsgi says " + environ["PATH_INFO"].encode()]
"""


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    return tmp_path


def pids_answering(url, tries=40):
    """The worker pids that answered ``tries`` fresh connections."""
    return {requests.get(url, headers={"Connection": "close"}, timeout=5).text for _ in range(tries)}


def test_two_workers_share_the_port_and_are_restarted(app_dir, run):
    live = run(["app:handle", "--port", "0", "--workers", "2", "--log-level", "debug"], app_dir)
    assert wait_for(lambda: len(pids_answering(live.url, 20)) == 2)
    pids = pids_answering(live.url)
    assert len(pids) == 2 and str(live.proc.pid) not in pids  # the supervisor does not serve
    with pytest.raises(requests.ConnectionError):
        requests.get(live.url + "/die", timeout=5)  # one worker exits
    assert wait_for(lambda: "starting another" in live.stderr)
    assert wait_for(lambda: len(pids_answering(live.url, 20) - pids) == 1)  # a new worker serves
    assert live.stop() == 0
    assert "exit status 3" in live.stderr


def test_sigterm_stops_supervisor_and_workers(app_dir, run):
    live = run(["app:handle", "--port", "0", "--workers", "2", "--log-level", "debug"], app_dir)
    assert wait_for(lambda: live.stderr.count("started") >= 2)
    workers = [int(line.split("worker ")[1].split()[0])
               for line in live.stderr.splitlines() if "worker " in line and "started" in line]
    assert live.stop(signal.SIGTERM, 10) == 0
    for pid in workers:
        assert wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                        open("/proc/%d/stat" % pid).read().split()[2] == "Z", 5)


def test_wsgi_flag(app_dir, run):
    live = run(["--wsgi", "app:wsgi", "--port", "0"], app_dir)
    response = requests.get(live.url + "/some/path")
    assert response.status_code == 200 and response.text == "wsgi says /some/path"


def test_wsgi_flag_errors(app_dir):
    import subprocess
    import sys
    for args, message in [(["--wsgi", "nope"], "wsgi: expected MODULE:FUNCTION"),
                          (["--wsgi", "app:missing"], "wsgi: app has no function 'missing'"),
                          (["app:handle", "--wsgi", "app:wsgi"], "not both"),
                          (["--tls-cert", "x.pem"], "--tls-cert and --tls-key go together"),
                          (["--workers", "0"], "workers: expected a positive integer")]:
        out = subprocess.run([sys.executable, "-m", "lilush_http", "--port", "0", *args], cwd=str(app_dir),
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_tls_flags(app_dir, run):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(app_dir / "cert.pem"))
    cert.private_key_pem.write_to_path(str(app_dir / "key.pem"))
    ca.cert_pem.write_to_path(str(app_dir / "ca.pem"))
    live = run(["app:handle", "--port", "0", "--tls-cert", "cert.pem", "--tls-key", "key.pem"], app_dir)
    assert "serving on https://" in live.stderr
    response = requests.get("https://127.0.0.1:%d/" % live.port, verify=str(app_dir / "ca.pem"))
    assert response.status_code == 200 and response.text.isdigit()
    assert response.text != str(live.proc.pid)  # a worker answers, even with --workers 1


def test_library_serve_with_workers(tmp_path):
    """``server.new({"workers": 2}, handle).serve()`` in a program of one's own: the
    handler is forked with the server, the program's SIGTERM handler stops it."""
    import subprocess
    import sys

    from conftest import free_port

    port = free_port()
    script = textwrap.dedent("""
        from gevent import monkey
        monkey.patch_all()
        import os, signal, gevent
        from lilush_http import server
        def handle(method, query, args, headers, body, ctx):
            return str(os.getpid()), 200, {}
        srv, err = server.new({"port": %d, "workers": 2, "log_level": "error"}, handle)
        gevent.signal_handler(signal.SIGTERM, srv.stop)
        print(srv.serve(), flush=True)
    """ % port)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=str(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = "http://127.0.0.1:%d/" % port
        assert wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 15), proc.stderr
        assert wait_for(lambda: len(pids_answering(url, 20)) == 2, 15)
        assert str(proc.pid) not in pids_answering(url)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0 and out.strip() == "(None, None)", err
    finally:
        proc.kill()
        proc.wait()
