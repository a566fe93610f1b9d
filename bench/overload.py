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
import subprocess
import time
import urllib.request

from common import fd_count, free_port, nginx_log, read_log, slot_summary, start_app, start_nginx

APP = '''
def handle(method, query, args, headers, body, ctx):
    if body is not None:
        return "%d bytes" % len(body), 200, {}
    return "Hi there!", 200, {}
'''
NGINX_LOCATION = 'proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";'
NGINX_UPSTREAM = "upstream app { server 127.0.0.1:%d; keepalive %d; }"


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
    """The ab -k run of 1 KB POSTs through nginx; its figures and nginx's "prematurely closed" count."""
    port = free_port()
    body = os.path.join(work, "body.txt")
    with open(body, "wb") as f:
        f.write(b"a=1&b=2&" * 128)  # 1 KB
    nginx = start_nginx(work, port, NGINX_LOCATION, NGINX_UPSTREAM % (app_port, args.nginx_keepalive))
    try:
        result = ab(["-k", "-n", str(args.nginx_requests), "-c", str(args.nginx_concurrency), "-p", body,
                     "-T", "application/x-www-form-urlencoded", "http://127.0.0.1:%d/" % port])
    finally:
        nginx.terminate()
        nginx.wait(10)
    return result, nginx_log(work).count("prematurely closed")


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
