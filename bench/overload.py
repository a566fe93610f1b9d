"""Overload against one lilush_http process at the default config: ``ab -c 200``
with ``Connection: close`` (N runs), then nginx in front with upstream keep-alive
larger than ``connection_limit`` and ``ab -k`` POSTs, which nginx does not retry
(N runs; a 502 shows as non-2xx).
Prints failed and non-2xx requests, req/s, p99 and the server's descriptors
(before, and 5 s after each run).

    python bench/overload.py [--close-runs 10] [--requests 20000] [--concurrency 200] [--nginx-runs 10]
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

from common import fd_count, free_port, read_log, slot_summary, start_app

APP = '''
def handle(method, query, args, headers, body, ctx):
    if body is not None:
        return "%d bytes" % len(body), 200, {}
    return "Hi there!", 200, {}
'''
NGINX_CONF = """
worker_processes 1;
error_log %(dir)s/nginx-error.log;
pid %(dir)s/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    upstream app { server 127.0.0.1:%(app)d; keepalive %(keepalive)d; }
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
"""


def ab(args):
    """Run ab; (complete, failed, non-2xx, req/s, p99 ms) from its report."""
    out = subprocess.run(["ab", "-q", "-r", *args], capture_output=True, text=True, timeout=600).stdout

    def number(pattern, default=0.0):
        match = re.search(pattern, out)
        return float(match.group(1)) if match else default
    return (int(number(r"Complete requests:\s+(\d+)")), int(number(r"Failed requests:\s+(\d+)")),
            int(number(r"Non-2xx responses:\s+(\d+)")), number(r"Requests per second:\s+([\d.]+)"),
            number(r"\n\s+99%\s+(\d+)", float("nan")))


def settle(pid, baseline):
    """The server's descriptors once back at ``baseline``, or after 5 s."""
    deadline = time.monotonic() + 5
    while fd_count(pid) > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    return fd_count(pid)


def behind_nginx(work, app_port, args):
    """The ab -k POST run through nginx; its figures and nginx's "prematurely closed" count."""
    port = free_port()
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF % {"dir": work, "app": app_port, "port": port, "keepalive": args.nginx_keepalive})
    body = os.path.join(work, "body.txt")
    with open(body, "wb") as f:
        f.write(b"a=1&b=2" * 100)
    log = os.path.join(work, "nginx-error.log")
    if os.path.exists(log):
        os.unlink(log)  # each run counts its own
    nginx = subprocess.Popen([args.nginx, "-p", work, "-c", os.path.join(work, "nginx.conf"),
                              "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or nginx.poll() is not None:
                    raise SystemExit("nginx did not start")
                time.sleep(0.05)
        result = ab(["-k", "-n", str(args.nginx_requests), "-c", str(args.nginx_concurrency), "-p", body,
                     "-T", "application/x-www-form-urlencoded", "http://127.0.0.1:%d/" % port])
    finally:
        nginx.terminate()
        nginx.wait(10)
    with open(os.path.join(work, "nginx-error.log")) as f:
        return result, f.read().count("prematurely closed")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--close-runs", type=int, default=10)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--nginx-requests", type=int, default=15000, help="0: no nginx run")
    parser.add_argument("--nginx-runs", type=int, default=10)
    parser.add_argument("--nginx-concurrency", type=int, default=150)
    parser.add_argument("--nginx-keepalive", type=int, default=128)
    parser.add_argument("--config", default="{}", help="server config overrides as JSON (default: none)")
    args = parser.parse_args(argv)
    args.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if shutil.which("ab") is None:
        print("ab is not installed (apt-get install apache2-utils)")
        return 2
    work, server, port, log_path = start_app(APP, json.loads(args.config), "overload")
    rows = []
    try:
        for _ in range(3):  # warm up: a fresh worker closes some descriptors of its own on its first requests
            urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=10).read()
        time.sleep(0.5)
        baseline = fd_count(server.pid)
        for run in range(1, args.close_runs + 1):
            result = ab(["-n", str(args.requests), "-c", str(args.concurrency), "-H", "Connection: close",
                         "http://127.0.0.1:%d/" % port])
            rows.append(("ab -c %d Connection: close, run %d" % (args.concurrency, run), result, "-",
                         baseline, settle(server.pid, baseline)))
            print("  done: %s %s" % (rows[-1][0], result), flush=True)
        for run in range(1, args.nginx_runs + 1 if args.nginx_requests else 1):
            result, premature = behind_nginx(work, port, args)
            rows.append(("nginx keepalive %d, ab -k -c %d POST, run %d" % (
                args.nginx_keepalive, args.nginx_concurrency, run), result, premature, baseline,
                settle(server.pid, baseline)))
            print("  done: %s %s %s" % (rows[-1][0], result, premature), flush=True)
    finally:
        server.terminate()
        server.wait(20)
    log = read_log(log_path)
    print("%d requests per run; config %s" % (args.requests, args.config))
    print("| run | complete | failed | non-2xx | req/s | p99 ms | nginx 'prematurely closed' "
          "| fds before / 5 s after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (complete, failed, non2xx, rps, p99), premature, before, after in rows:
        print("| %s | %d | %d | %d | %.0f | %.0f | %s | %d / %d |" % (
            name, complete, failed, non2xx, rps, p99, premature, before, after))
    print(slot_summary(log))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
