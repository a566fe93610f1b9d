"""Slow clients against one lilush_http process at the default config: slowhttptest's
slow headers (-H), slow body (-B) and slow read (-X) attacks, one after another,
while a probe client sends a normal request on a new connection every 2 s.
Prints a table: slowhttptest's service availability, the probe's answers and
latency, the server's RSS and open descriptors (before, peak, 5 s after).

    python bench/slowclients.py [--connections 1000] [--rate 200] [--duration 60]
"""

import argparse
import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time

from common import fd_count, percentile, read_log, rss_mb, slot_summary, start_app

APP = '''
BIG = b"x" * (1400 * 1024)
MB = b"x" * (1024 * 1024)

def handle(method, query, args, headers, body, ctx):
    if query.startswith("/big"):
        return BIG, 200, {"content-type": "application/octet-stream"}
    if query.startswith("/1mb"):
        return MB, 200, {"content-type": "application/octet-stream"}
    if body is not None:
        return "%d bytes" % len(body), 200, {}
    return "Hi there!", 200, {}
'''
MODES = [  # (key, name, slowhttptest arguments, path)
    ("H", "slow headers (-H)", ["-H", "-i", "10", "-x", "24"], "/"),
    ("B", "slow body (-B)", ["-B", "-i", "10", "-s", "1048576", "-x", "24"], "/"),
    ("X", "slow read (-X)", ["-X", "-k", "3", "-n", "1", "-w", "1", "-y", "64", "-z", "32"], "/big"),
    ("M", "slow read 1 MB at 100 B/s (-X)", ["-X", "-k", "1", "-n", "1", "-w", "1", "-y", "100", "-z", "100"],
     "/1mb"),
]
REQUEST = b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"


def probe_once(port, timeout=10):
    """Seconds for a normal request on a new connection, or None when unanswered."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(REQUEST)
            data = b""
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
    except OSError:
        return None
    return time.monotonic() - started if data.startswith(b"HTTP/1.1 200 ") else None


def run_mode(name, options, path, port, pid, args, work):
    before_rss, before_fds = rss_mb(pid), fd_count(pid)
    peak = {"rss": before_rss, "fds": before_fds}
    probes = []
    done = threading.Event()

    def probe():
        while not done.wait(args.probe_every):
            probes.append(probe_once(port))

    def sample():
        while not done.wait(0.5):
            peak["rss"] = max(peak["rss"], rss_mb(pid))
            peak["fds"] = max(peak["fds"], fd_count(pid))

    prefix = os.path.join(work, "mode%d" % len(os.listdir(work)))
    threads = [threading.Thread(target=probe), threading.Thread(target=sample)]
    for thread in threads:
        thread.start()
    try:
        subprocess.run(["slowhttptest", *options, "-c", str(args.connections), "-r", str(args.rate),
                        "-l", str(args.duration), "-u", "http://127.0.0.1:%d%s" % (port, path),
                        "-g", "-o", prefix], capture_output=True, timeout=args.duration + 120)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    deadline = time.monotonic() + 5  # descriptors back to the baseline within 5 s
    while fd_count(pid) > before_fds and time.monotonic() < deadline:
        time.sleep(0.1)
    after_fds, after_rss = fd_count(pid), rss_mb(pid)
    with open(prefix + ".csv") as f:
        samples = [int(row["Service Available"]) > 0 for row in csv.DictReader(f)]
    answered = [p for p in probes if p is not None]
    return "| %s | %.1f | %d/%d | %.3f | %.3f | %.3f | %.1f / %.1f / %.1f | %d / %d / %d |" % (
        name, 100.0 * sum(samples) / max(1, len(samples)), len(answered), len(probes),
        statistics.median(answered) if answered else float("nan"), percentile(answered, 0.99),
        max(answered) if answered else float("nan"), before_rss, peak["rss"], after_rss,
        before_fds, peak["fds"], after_fds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=200, help="new attack connections per second")
    parser.add_argument("--duration", type=int, default=60, help="seconds per attack")
    parser.add_argument("--probe-every", type=float, default=2.0)
    parser.add_argument("--modes", default="HBXM", help="which to run: H, B, X, and M (X on a 1 MB response)")
    parser.add_argument("--config", default="{}", help="server config overrides as JSON (default: none)")
    parser.add_argument("--keep", action="store_true", help="keep the server log and slowhttptest reports")
    args = parser.parse_args(argv)
    if shutil.which("slowhttptest") is None:
        print("slowhttptest is not installed (apt-get install slowhttptest)")
        return 2
    work, server, port, log_path = start_app(APP, json.loads(args.config), "slow")
    rows = []
    try:
        time.sleep(0.5)
        probe_once(port)  # warm up
        for key, name, options, path in MODES:
            if key in args.modes:
                rows.append(run_mode(name, options, path, port, server.pid, args, work))
                print("  done: " + rows[-1], flush=True)
    finally:
        server.terminate()
        server.wait(20)
    log = read_log(log_path)
    print("slowhttptest -c %d -r %d -l %d, probe every %.0f s; config %s" % (
        args.connections, args.rate, args.duration, args.probe_every, args.config))
    print("| attack | service available % | probe answered | probe p50 s | probe p99 s | probe max s "
          "| server RSS MB before / peak / after | fds before / peak / 5 s after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    print(slot_summary(log))
    if args.keep:
        print("server log and reports kept in %s" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
