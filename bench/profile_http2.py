"""Where an HTTP/2 stream's time goes: the server in this process under cProfile, h2load
(prior knowledge, or TLS) on the other CPU, then the functions that cost most.

    python bench/profile_http2.py [--requests 9000] [--tls] [--top 30] [--sort tottime]

As bench/profile_requests.py: every greenlet is counted, so read totals per function.
"""

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import http2 as h2bench  # noqa: E402
import run  # noqa: E402
from bench import apps  # noqa: E402
from lilush_http import server as http_server  # noqa: E402


def drive(server, tls, requests, report):
    """In an OS thread: wait until serving, run h2load, stop the server."""
    deadline = time.monotonic() + 20
    while server.address is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        url = h2bench.url_of(server.address[1], tls)
        h2bench.h2load(url, max(100, requests // 10), 10, 10)  # warm-up
        report.append(h2bench.h2load(url, requests, 10, 10))
    finally:
        server.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=9000)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--dump", help="also write the raw pstats to this file")
    args = parser.parse_args(argv)
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {0})
    config = {"log_level": "error", "connection_limit": 1024, "backlog": 1024, "port": 0}
    tls = run.make_certificate() if args.tls else None
    if tls:
        config["ssl"] = {"default": {"cert": tls[0], "key": tls[1]}}
    server, err = http_server.new(config, apps.hello)
    if err:
        raise SystemExit(err)
    report = []
    threading.Thread(target=drive, args=(server, tls, args.requests, report), daemon=True).start()
    profile = cProfile.Profile()
    profile.enable()
    server.serve()
    profile.disable()
    if not report:
        raise SystemExit("h2load gave no result")
    print("%.0f req/s under the profiler, %d succeeded, %d failed (%s)" % (
        report[0]["rps"], report[0]["succeeded"], report[0]["failed"], report[0]["protocol"]))
    stats = pstats.Stats(profile)
    if args.dump:
        stats.dump_stats(args.dump)
    stats.sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
