"""Deployed the way an operator does it, with the real programs on loopback:
HAProxy with the PROXY protocol and health checks (also a rolling restart under
ab), nginx over a unix socket with upstream keepalive, systemd socket
activation, an inherited --fd, SO_REUSEPORT, unix socket files. The configs
are the ones docs/deploying.rst shows, from docs/examples/deploy/ (test_docs_show_these_configs)."""

import json
import os
import re
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from conftest import ACCESS, cli, free_port, need_program, read_response, read_to_end

DEPLOY_EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples" / "deploy"

APP = """
    import json, os

    def handle(method, query, args, headers, body, ctx):
        if query in ("/ok", "/slow"):  # a body of fixed length, for ab
            if query == "/slow":
                import gevent
                gevent.sleep(0.005)
            return "ok", 200, {"content-type": "text/plain"}
        seen = {"client_ip": ctx["client_ip"], "x-real-ip": headers["x-real-ip"],
                "x-client-ip": headers["x-client-ip"], "scheme": ctx["scheme"],
                "count": ctx["count"], "pid": os.getpid()}
        return json.dumps(seen), 200, {"content-type": "application/json"}
"""

# The configs the docs show, with {placeholders} the tests fill in; docs/examples/deploy/
# has them filled in with the EXAMPLE values.
NGINX_HTTP = """
    upstream app {
        server unix:{socket};
        keepalive 16;
    }
    server {
        listen 127.0.0.1:{port};
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }
    }
"""

HAPROXY_CFG = """
    defaults
        mode http
        timeout connect 2s
        timeout client 30s
        timeout server 30s
        retries 3
        option redispatch 1
        retry-on conn-failure empty-response response-timeout

    frontend web
        bind 127.0.0.1:{port}
        default_backend app

    backend app
        balance roundrobin
        option httpchk
        http-check send meth GET uri /health ver HTTP/1.1 hdr Host localhost
        default-server check inter 250ms fall 1 rise 2 {send_proxy}
        {servers}
"""

SYSTEMD_SOCKET = """
    [Socket]
    ListenStream=127.0.0.1:{port}

    [Install]
    WantedBy=sockets.target
"""

SYSTEMD_SERVICE = """
    [Unit]
    Requires=app.socket
    After=network.target

    [Service]
    WorkingDirectory={cwd}
    ExecStart={python} -m lilush_http app:handle --workers 2
    KillSignal=SIGTERM
    TimeoutStopSec=10
"""

EXAMPLE = {"port": "80", "socket": "/run/app/app.sock", "send_proxy": "send-proxy-v2",
           "servers": "server app1 127.0.0.1:8081\n    server app2 127.0.0.1:8082",
           "cwd": "/srv/app", "python": "/srv/app/.venv/bin/python"}


@pytest.mark.parametrize("name, template", [("nginx.conf", NGINX_HTTP), ("haproxy.cfg", HAPROXY_CFG),
                                            ("app.socket", SYSTEMD_SOCKET), ("app.service", SYSTEMD_SERVICE)])
def test_docs_show_these_configs(name, template):
    shown = (DEPLOY_EXAMPLES / name).read_text()
    assert shown == render(template, **EXAMPLE).strip("\n") + "\n", name


def render(template, **values):
    text = textwrap.dedent(template)
    for name, value in values.items():
        text = text.replace("{%s}" % name, str(value))
    return text


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    return tmp_path


class Program:
    """A system program (nginx, haproxy) run in the foreground; stderr in a file."""

    def __init__(self, args, tmp_path, port):
        self.log = tmp_path / ("%s.log" % os.path.basename(args[0]))
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        wait_listening(port, self)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def programs():
    started = []
    yield started
    for program in started:
        program.stop()


def wait_listening(port, program=None, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if program is not None and program.proc.poll() is not None:
                raise AssertionError(program.log.read_text())
            assert time.monotonic() < deadline, "nothing listens on %d" % port
            time.sleep(0.05)


def start_haproxy(programs, tmp_path, servers, send_proxy="send-proxy-v2"):
    port = free_port()
    lines = "\n    ".join("server app%d 127.0.0.1:%d" % (i + 1, p) for i, p in enumerate(servers))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render(HAPROXY_CFG, port=port, send_proxy=send_proxy, servers=lines))
    programs.append(Program([need_program("haproxy"), "-db", "-f", str(cfg)], tmp_path, port))
    return port


def start_nginx(programs, tmp_path, socket_path):
    port = free_port()
    temp = "".join("    %s_temp_path %s/%s;\n" % (kind, tmp_path, kind)
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp_path / "nginx.conf"
    conf.write_text("%sworker_processes 1;\ndaemon off;\nerror_log stderr warn;\npid %s/nginx.pid;\n"
                    "events { worker_connections 256; }\nhttp {\n    access_log off;\n%s%s}\n"
                    % ("user root;\n" if os.geteuid() == 0 else "", tmp_path, temp,
                       textwrap.indent(render(NGINX_HTTP, socket=socket_path, port=port), "    ")))
    programs.append(Program([need_program("nginx"), "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)],
                            tmp_path, port))
    return port


def get_from(source_ip, port, path="/who", headers=()):
    """One request from the local address ``source_ip`` (127.0.0.2 is another client)."""
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source_ip, 0))
    sock.connect(("127.0.0.1", port))
    extra = "".join("%s: %s\r\n" % pair for pair in headers)
    sock.sendall(("GET %s HTTP/1.1\r\nHost: app\r\n%sConnection: close\r\n\r\n" % (path, extra)).encode())
    status, _, body = read_response(sock)
    sock.close()
    assert status == 200, body
    return json.loads(body)


def wait_for(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def who_entries(live):
    return [e for e in live.access_entries() if e.get("target") == "/who"]


# -- PROXY protocol --------------------------------------------------------------------------------


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2", "send-proxy-v2 ssl verify none"])
def test_haproxy_proxy_protocol_gives_the_real_client(send_proxy, app_dir, run, programs):
    args = ["app:handle", "--port", "0", "--proxy-protocol", "--log-level", "debug"]
    if "ssl" in send_proxy:  # the header comes before the TLS handshake
        import trustme
        pair = trustme.CA().issue_cert("127.0.0.1")
        pair.cert_chain_pems[0].write_to_path(str(app_dir / "cert.pem"))
        pair.private_key_pem.write_to_path(str(app_dir / "key.pem"))
        args += ["--tls-cert", str(app_dir / "cert.pem"), "--tls-key", str(app_dir / "key.pem")]
    live = run(args, app_dir)
    port = start_haproxy(programs, app_dir, [live.port], send_proxy)
    wait_for(lambda: "/health" in live.stderr)  # HAProxy's checks come with the header too
    seen = get_from("127.0.0.2", port)
    assert seen["client_ip"] == seen["x-real-ip"] == seen["x-client-ip"] == "127.0.0.2"
    assert seen["scheme"] == ("https" if "ssl" in send_proxy else "http")
    wait_for(lambda: who_entries(live))
    assert who_entries(live)[0]["client_ip"] == "127.0.0.2"
    # Straight to the server, without the header: closed without an answer.
    direct = socket.create_connection(("127.0.0.1", live.port), timeout=5)
    direct.sendall(b"GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
    assert read_to_end(direct) == (b"", True)
    assert len(who_entries(live)) == 1


def test_proxy_header_from_an_untrusted_peer_is_refused(app_dir, run):
    live = run(["app:handle", "--port", "0", "--proxy-protocol", "--trusted-proxies", "127.0.0.1"], app_dir)
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    sock.connect(("127.0.0.1", live.port))
    sock.sendall(b"PROXY TCP4 6.6.6.6 127.0.0.1 1234 80\r\nGET /who HTTP/1.1\r\nHost: app\r\n\r\n")
    assert read_to_end(sock) == (b"", True)
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=5)  # trusted, byte by byte
    for byte in b"PROXY TCP4 203.0.113.9 127.0.0.1 1234 80\r\n":
        sock.send(bytes([byte]))
    sock.sendall(b"GET /who HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
    assert json.loads(read_response(sock)[2])["client_ip"] == "203.0.113.9"


# -- trusted proxies ---------------------------------------------------------------------------------

SPOOF = (("X-Real-IP", "6.6.6.1"), ("X-Forwarded-For", "6.6.6.2"), ("Forwarded", "for=6.6.6.3"),
         ("X-Forwarded-Proto", "https"))


def test_forwarding_headers_from_an_untrusted_peer_are_not_believed(app_dir, run):
    live = run(["app:handle", "--port", "0", "--trusted-proxies", "127.0.0.1"], app_dir)
    seen = get_from("127.0.0.2", live.port, headers=SPOOF)
    assert seen["client_ip"] == seen["x-real-ip"] == seen["x-client-ip"] == "127.0.0.2"
    assert seen["scheme"] == "http"
    refused = socket.socket()  # a request refused after its head is logged too
    refused.bind(("127.0.0.2", 0))
    refused.connect(("127.0.0.1", live.port))
    refused.sendall(b"POST /who HTTP/1.1\r\nHost: app\r\nX-Real-IP: 6.6.6.4\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n")
    assert read_response(refused)[0] == 413
    wait_for(lambda: len([e for e in live.access_entries() if e.get("target") == "/who"]) == 2)
    lines = [line for line in live.stderr.splitlines() if ACCESS in line]
    assert all('"client_ip":"127.0.0.2"' in line and "6.6.6" not in line for line in lines), lines
    seen = get_from("127.0.0.1", live.port, headers=SPOOF)  # the same from the trusted proxy
    assert seen["client_ip"] == seen["x-real-ip"] == "6.6.6.1" and seen["x-client-ip"] == "127.0.0.1"
    assert seen["scheme"] == "https"


def test_wsgi_remote_addr_and_url_scheme(live_server):
    from lilush_http import wsgi

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"client_ip": environ["REMOTE_ADDR"], "x-real-ip": environ["HTTP_X_REAL_IP"],
                            "x-client-ip": environ["HTTP_X_CLIENT_IP"],
                            "scheme": environ["wsgi.url_scheme"]}).encode()]
    live = live_server(wsgi.to_handle(app), trusted_proxies=["127.0.0.1"])
    assert get_from("127.0.0.2", live.port, headers=SPOOF) == {
        "client_ip": "127.0.0.2", "x-real-ip": "127.0.0.2", "x-client-ip": "127.0.0.2", "scheme": "http"}
    behind = (("X-Forwarded-For", "6.6.6.6, 203.0.113.9"), ("X-Forwarded-Proto", "https"))
    assert get_from("127.0.0.1", live.port, headers=behind) == {
        "client_ip": "203.0.113.9", "x-real-ip": "203.0.113.9", "x-client-ip": "127.0.0.1", "scheme": "https"}


# -- nginx over a unix socket ------------------------------------------------------------------------


def test_nginx_to_a_unix_socket_with_upstream_keepalive(app_dir, run, programs):
    path = app_dir / "app.sock"
    live = run(["app:handle", "--unix", str(path), "--log-level", "info"], app_dir, wait_start=False)
    live.wait_for(lambda line: "serving on http://unix:%s" % path in line)
    port = start_nginx(programs, app_dir, path)
    # A client at 127.0.0.2 that claims another address: nginx's X-Real-IP wins.
    seen = get_from("127.0.0.2", port, headers=(("X-Real-IP", "6.6.6.6"), ("X-Forwarded-For", "6.6.6.7")))
    assert seen["client_ip"] == seen["x-real-ip"] == "127.0.0.2"
    assert seen["x-client-ip"] == "unix:" and seen["scheme"] == "http"
    ab = subprocess.run([need_program("ab"), "-k", "-n", "5000", "-c", "10", "http://127.0.0.1:%d/ok" % port],
                        capture_output=True, text=True, timeout=120)
    assert "Complete requests:      5000" in ab.stdout, ab.stdout + ab.stderr
    assert "Failed requests:        0" in ab.stdout and "Non-2xx" not in ab.stdout, ab.stdout
    counts = [get_from("127.0.0.2", port)["count"] for _ in range(3)]
    assert max(counts) > 1  # nginx reuses its upstream connections
    assert live.stop() == 0
    assert not path.exists()  # removed on stop


# -- unix socket files ---------------------------------------------------------------------------------


def test_unix_socket_mode_stale_file_and_live_socket(app_dir, run, tmp_path):
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody answers: a crashed server's leftover
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"unix_socket": str(path), "unix_socket_mode": "0660"}))
    live = run(["app:handle", "--config", str(config)], app_dir, wait_start=False)
    live.wait_for(lambda line: "serving on http://unix:" in line)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    second = cli(["app:handle", "--unix", str(path)], app_dir)
    assert second.returncode == 1 and "another server is listening on it" in second.stderr
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(path))
    client.sendall(b"GET /who HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
    assert json.loads(read_response(client)[2])["client_ip"] == "unix:"
    assert live.stop() == 0 and not path.exists()
    path.write_text("not a socket")
    assert "not a socket" in cli(["app:handle", "--unix", str(path)], app_dir).stderr


# -- inherited sockets ------------------------------------------------------------------------------------


def listening_ports(pids):
    """The TCP ports the processes ``pids`` hold listening sockets on."""
    inodes = set()
    for pid in pids:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(p) for p in f.read().split()]


def test_systemd_socket_activation_with_workers(app_dir, run):
    port = free_port()
    service = render(SYSTEMD_SERVICE, cwd=app_dir, python=sys.executable)
    assert "ListenStream=127.0.0.1:%d" % port in render(SYSTEMD_SOCKET, port=port)
    args = re.search(r"ExecStart=\S+ -m lilush_http (.*)", service).group(1).split()
    live = run(args, app_dir, wait_start=False, prefix=[need_program("systemd-socket-activate"),
                                                         "-l", "127.0.0.1:%d" % port])
    wait_listening(port)  # systemd-socket-activate's socket; the server starts on the first connection
    url = "http://127.0.0.1:%d/who" % port
    assert requests.get(url, timeout=10).status_code == 200
    live.wait_for(lambda line: "serving on http://127.0.0.1:%d (fd 3)" % port in line)
    wait_for(lambda: len({requests.get(url, headers={"Connection": "close"}, timeout=5).json()["pid"]
                          for _ in range(20)}) == 2)
    workers = children(live.proc.pid)
    assert len(workers) == 2
    assert listening_ports([live.proc.pid] + workers) == {port}  # nothing else was bound
    assert live.stop() == 0


def test_fd_serves_an_inherited_socket(app_dir, run):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    live = run(["app:handle", "--fd", str(sock.fileno())], app_dir, pass_fds=[sock.fileno()])
    sock.close()
    assert live.port == port
    assert requests.get(live.url + "/who", timeout=5).json()["client_ip"] == "127.0.0.1"
    assert "not a socket" in cli(["app:handle", "--fd", "0"], app_dir).stderr


def test_reuse_port_lets_two_instances_share_a_port(app_dir, run):
    first = run(["app:handle", "--port", "0", "--reuse-port"], app_dir)
    second = run(["app:handle", "--port", str(first.port), "--reuse-port"], app_dir)
    pids = {requests.get(first.url + "/who", headers={"Connection": "close"}, timeout=5).json()["pid"]
            for _ in range(40)}
    # Each instance is a supervisor whose worker answers.
    assert pids == set(children(first.proc.pid)) | set(children(second.proc.pid))
    assert len(pids) == 2
    refused = cli(["app:handle", "--port", str(first.port)], app_dir)
    assert refused.returncode == 1 and "failed to bind" in refused.stderr


# -- rolling restart ------------------------------------------------------------------------------------


def test_rolling_restart_behind_haproxy_loses_nothing(app_dir, run, programs):
    ports = [free_port(), free_port()]
    instances = [run(["app:handle", "--port", str(p), "--proxy-protocol", "--log-level", "info"], app_dir)
                 for p in ports]
    front = start_haproxy(programs, app_dir, ports)
    wait_for(lambda: requests.get("http://127.0.0.1:%d/who" % front, timeout=5).status_code == 200)
    ab = subprocess.Popen([need_program("ab"), "-k", "-n", "20000", "-c", "20",
                           "http://127.0.0.1:%d/slow" % front], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    time.sleep(0.5)
    for i, port in enumerate(ports):
        assert ab.poll() is None, "ab ended before the restarts: make it run longer"
        assert instances[i].stop() == 0
        instances[i] = run(["app:handle", "--port", str(port), "--proxy-protocol", "--log-level", "info"],
                           app_dir)
        time.sleep(1.0)  # HAProxy's checks see it up again (rise 2, inter 250ms)
    out, err = ab.communicate(timeout=120)
    print(out)
    assert "Complete requests:      20000" in out, out + err
    assert "Failed requests:        0" in out and "Non-2xx" not in out, out
