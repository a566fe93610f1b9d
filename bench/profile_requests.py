"""Where the server's time goes: one scenario of bench/run.py served in this
process under cProfile, with wrk on the other CPU, then the functions that
cost most.

    python bench/profile_requests.py [--scenario a|b|d|e|f] [--seconds 5] [--top 30] [--sort tottime]

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

from bench import apps, run  # noqa: E402
from lilush_http import server as http_server  # noqa: E402


def drive(server, url, extra, seconds, connections, report):
    """In an OS thread: wait until serving, run wrk, stop the server."""
    deadline = time.monotonic() + 20
    while server.address is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
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
    threading.Thread(target=drive, args=(server, url, extra, args.seconds, args.connections, report),
                     daemon=True).start()
    profile = cProfile.Profile()
    profile.enable()
    server.serve()
    profile.disable()
    if not report:
        raise SystemExit("wrk gave no result")
    requests = report[0]["rps"] * args.seconds
    print("scenario %s: %.0f req/s under the profiler, %d requests, errors %d" % (
        args.scenario, report[0]["rps"], requests, report[0]["errors"]))
    stats = pstats.Stats(profile)
    if args.dump:
        stats.dump_stats(args.dump)
    stats.sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
