"""Fair slots under keep-alive load: wrk's keep-alive clients, each sending back to
back, fill one lilush_http process at the default config (200 and 1,000 of them)
while curl asks for a page on a new connection every half second. Prints wrk's
throughput and errors and the probes' latency (goal: p99 under 0.5 s over 20
probes, no wrk errors).

    python bench/fairness.py [--clients 200,1000] [--duration 20] [--probes 20]
"""

import argparse
import json
import re
import shutil
import subprocess
import threading
import time

from common import curl_probe, percentile, print_table, start_app

APP = '''
def handle(method, query, args, headers, body, ctx):
    return "Hi there!", 200, {}
'''


def wrk_errors(out):
    """wrk's error counts: connect, read, write, timeout, non-2xx."""
    errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if match:
        errors = dict(zip(errors, map(int, match.groups())))
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors["non-2xx"] = int(match.group(1)) if match else 0
    return errors


def run(port, clients, args):
    result = {}

    def load():
        result["out"] = subprocess.run(["wrk", "-t2", "-c%d" % clients, "-d%ds" % args.duration,
                                        "http://127.0.0.1:%d/" % port],
                                       capture_output=True, text=True, timeout=args.duration + 60).stdout
    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(2.0)  # every wrk client connected and busy
    probes = []
    while thread.is_alive() and len(probes) < args.probes:
        probes.append(curl_probe("http://127.0.0.1:%d/" % port))
        time.sleep(0.5)
    thread.join()
    out = result.get("out", "")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    times = [t for ok, t in probes]
    errors = wrk_errors(out)
    return "| %d keep-alive wrk clients | %s | %s | %d/%d | %.3f | %.3f | %.3f |" % (
        clients, match.group(1) if match else "?", json.dumps(errors), sum(ok for ok, t in probes), len(probes),
        percentile(times, 0.5), percentile(times, 0.99), max(times) if times else float("nan"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="200,1000")
    parser.add_argument("--duration", type=int, default=20, help="seconds of wrk per run")
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--config", default="{}", help="server config overrides as JSON (default: none)")
    args = parser.parse_args(argv)
    for program in ("wrk", "curl"):
        if shutil.which(program) is None:
            print("%s is not installed" % program)
            return 2
    work, server, port, log_path = start_app(APP, json.loads(args.config), "fairness")
    rows = []
    try:
        curl_probe("http://127.0.0.1:%d/" % port)
        for clients in [int(c) for c in args.clients.split(",")]:
            rows.append(run(port, clients, args))
            print("  done: " + rows[-1], flush=True)
            time.sleep(1)
    finally:
        server.terminate()
        server.wait(20)
    print_table("wrk -t2 for %d s, a curl probe on a new connection every 0.5 s; config %s" % (
        args.duration, args.config), ("load", "wrk req/s", "wrk errors", "probes answered", "probe p50 s",
                                      "probe p99 s", "probe max s"), rows, log_path)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
