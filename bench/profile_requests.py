"""Where the server's time goes: one scenario of bench/run.py served in this
process under cProfile, with wrk on the other CPU, then the functions that
cost most.

    python bench/profile_requests.py [--scenario a|b|d|e|f] [--seconds 5] [--top 30] [--sort tottime]
    python bench/profile_requests.py --h2load 9000 [--scenario a|f]   # HTTP/2: h2load -c 10 -m 10 (f: TLS)

The profile counts every greenlet of the worker (switches are charged to the
function that was running), so read totals per function, not call trees.
"""

import argparse
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)  # http2.py (the h2load helper) imports its neighbours by name

from bench import apps, run  # noqa: E402
from lilush_http import server as http_server  # noqa: E402


def drive(server, url, extra, seconds, connections, report, h2_requests=0):
    """In an OS thread: wait until serving, run wrk (or h2load), stop the server."""
    deadline = time.monotonic() + 20
    while server.address is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        if h2_requests:
            import http2  # noqa: E402 - only for --h2load
            http2.h2load(url % server.address[1], max(100, h2_requests // 10), 10, 10)  # warm-up
            result = http2.h2load(url % server.address[1], h2_requests, 10, 10)
            report.append({"rps": result["rps"], "errors": result["failed"], "requests": result["succeeded"]})
            return
        command = ["wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds, "--latency", *extra,
                   url % server.address[1]]
        if shutil.which("taskset"):
            command = ["taskset", "-c", "1"] + command
        output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
        report.append(run.parse_wrk(output))
    finally:
        server.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="a", choices=sorted(set(run.SCENARIOS) - {"w"}))
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--dump", help="also write the raw pstats to this file")
    parser.add_argument("--h2load", type=int, default=0, metavar="N",
                        help="HTTP/2 instead: N requests from h2load (prior knowledge; TLS with --scenario f)")
    args = parser.parse_args(argv)
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {0})
    _title, path, extra = run.SCENARIOS[args.scenario]
    config = {"log_level": "error", "connection_limit": 1024, "backlog": 1024, "port": 0}
    scheme = "http"
    if args.scenario == "f":
        cert, key = run.make_certificate()
        config["ssl"] = {"default": {"cert": cert, "key": key}}
        scheme = "https"
    server, err = http_server.new(config, apps.hello)
    if err:
        raise SystemExit(err)
    report = []
    url = "%s://127.0.0.1:%%d%s" % (scheme, path)
    threading.Thread(target=drive, args=(server, url, extra, args.seconds, args.connections, report, args.h2load),
                     daemon=True).start()
    profile = cProfile.Profile()
    profile.enable()
    server.serve()
    profile.disable()
    if not report:
        raise SystemExit("wrk gave no result")
    requests = report[0].get("requests", report[0]["rps"] * args.seconds)
    print("scenario %s: %.0f req/s under the profiler, %d requests, errors %d" % (
        args.scenario, report[0]["rps"], requests, report[0]["errors"]))
    stats = pstats.Stats(profile)
    if args.dump:
        stats.dump_stats(args.dump)
    stats.sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
