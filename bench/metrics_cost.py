"""What metrics cost on the request path: server CPU µs per request, metrics off
and on (and, with --code, off on another checkout, e.g. main), keep-alive
hello with wrk on loopback; server pinned to CPU 0, wrk to CPU 1. Runs alternate
between the variants; the median of --repeat runs is reported.

    python bench/metrics_cost.py [--duration 5] [--repeat 5] [--code /path/to/other/checkout]

On a busy machine wrk's figures scatter more than the difference; --loop
measures instead the CPU time of one process that sends keep-alive requests
to itself over a socket pair and answers them with process_request (client
included, so only differences between the variants mean anything).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from bench.run import PY, ROOT, free_port, run_wrk, stop, wait_until_serving  # noqa: E402


def start(code, with_metrics):
    port = free_port()
    config = {"log_level": "error", "connection_limit": 1024, "backlog": 1024}
    if with_metrics:
        config["metrics"] = {"ip": "127.0.0.1", "port": free_port()}
    path = os.path.join(tempfile.gettempdir(), "lilush-metrics-cost-%d.json" % port)
    with open(path, "w") as f:
        json.dump(config, f)
    command = [PY, "-m", "lilush_http", "bench.apps:hello", "--port", str(port), "--config", path]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0"] + command
    env = dict(os.environ, PYTHONPATH=code)  # python -m puts the cwd first on the path, too
    process = subprocess.Popen(command, cwd=code, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    url = "http://127.0.0.1:%d/" % port
    wait_until_serving(url, process)
    return process, url


LOOP_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: wrk\r\n\r\n"


def loop(count, with_metrics):
    """CPU µs per request of ``count`` request/response round trips in this process."""
    import time
    import gevent
    from gevent import socket
    sys.path.insert(0, os.getcwd())  # the lilush_http of the checkout this runs in
    from bench.apps import hello
    from lilush_http import server
    assert server.__file__.startswith(os.getcwd()), server.__file__
    from lilush_http.connection import Connection
    srv, err = server.new({"log_level": "error"}, hello)
    assert srv is not None, err
    a, b = socket.socketpair()
    conn = Connection(a)
    if with_metrics:
        # No periodic flush: it runs once a second, so a slow run (valgrind) would
        # charge the requests with far more flushes than a real second has.
        from lilush_http import metrics
        srv._metrics = metrics.Recorder(srv)
        conn = metrics.CountingConnection(a)
    srv._connections.add(conn)

    def serve():
        while srv.process_request(conn, "127.0.0.1", 1)[0] == "keep-alive":
            pass

    gevent.spawn(serve)
    b.sendall(LOOP_REQUEST)
    size = len(b.recv(65536))  # the response fits one read; all are the same size
    started = time.process_time()
    for _ in range(count):
        b.sendall(LOOP_REQUEST)
        got = 0
        while got < size:
            got += len(b.recv(65536))
    if with_metrics:
        srv._metrics.flush()
    return (time.process_time() - started) / count * 1e6


def wrk_run(code, with_metrics, args):
    """Server CPU µs per request and req/s of one wrk run against a fresh server."""
    process, url = start(code, with_metrics)
    try:
        result = run_wrk(url, [], args.duration, args.connections, process.pid)
    finally:
        stop(process)
    return result["cpu_us"], result["rps"]


def loop_run(code, with_metrics, args):
    """CPU µs per request of one in-process loop, in a fresh process in ``code``."""
    command = [PY, os.path.abspath(__file__), "--loop-run", str(args.requests)] + (
        ["--metrics"] if with_metrics else [])
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0"] + command
    output = subprocess.run(command, cwd=code, capture_output=True, text=True, timeout=600)
    assert output.returncode == 0, output.stderr
    return float(output.stdout), None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--code", help="another checkout (with bench/apps.py) whose lilush_http runs "
                        "metrics off, as a baseline")
    parser.add_argument("--loop", action="store_true", help="the in-process loop instead of wrk")
    parser.add_argument("--requests", type=int, default=100000, help="round trips per --loop run")
    parser.add_argument("--loop-run", type=int, help=argparse.SUPPRESS)  # one run of the loop, in a subprocess
    parser.add_argument("--metrics", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop_run:
        return print(loop(args.loop_run, args.metrics))
    measure = loop_run if args.loop else wrk_run
    variants = [("off", ROOT, False), ("on", ROOT, True)]
    if args.code:
        variants.insert(0, ("baseline off", os.path.abspath(args.code), False))
    results = {name: [] for name, _, _ in variants}
    for round_ in range(args.repeat):
        for name, code, with_metrics in variants:
            cpu, rps = measure(code, with_metrics, args)
            results[name].append((cpu, rps))
            print("round %d %-12s %6.2f us/request cpu%s" % (
                round_ + 1, name, cpu, ", %.0f req/s" % rps if rps else ""), flush=True)
    print()
    reference = statistics.median(cpu for cpu, _ in results[variants[0][0]])
    for name, runs in results.items():
        cpu = statistics.median(cpu for cpu, _ in runs)
        print("%-12s median %6.2f us/request cpu (%+.2f us, %.3fx %s), min %6.2f%s" % (
            name, cpu, cpu - reference, cpu / reference, variants[0][0], min(cpu for cpu, _ in runs),
            ", median %.0f req/s" % statistics.median(rps for _, rps in runs) if runs[0][1] else ""))


if __name__ == "__main__":
    main()
