"""Before/after req/s of lilush_http from two source trees, measured in alternating pairs.

On a machine where other work comes and goes, two runs minutes apart differ
more than the change being measured. Here each pair runs both trees back to
back (in alternating order), and the change is judged by the median of the
per-pair ratios:

    python bench/pairs.py BEFORE_TREE AFTER_TREE [--scenarios abd] [--pairs 5] [--duration 3]

Each tree's server is bench/run.py's command for lilush_http, run with that
tree first on the path (a tree without a built accelerator runs pure Python).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import run  # noqa: E402


def measure_tree(tree, scenario, duration, connections):
    """One wrk run (after a one-second warm-up) against a fresh server from ``tree``."""
    title, path, extra = run.SCENARIOS[scenario]
    port = run.free_port()
    command = run.server_command("lilush_http", scenario, port, None)
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0"] + command
    process = subprocess.Popen(command, cwd=tree, env=dict(os.environ, PYTHONPATH=tree),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = "http://127.0.0.1:%d%s" % (port, path)
        run.wait_until_serving(url, process)
        run.run_wrk(url, extra, 1, connections, process.pid)
        return run.run_wrk(url, extra, duration, connections, process.pid)
    finally:
        run.stop(process)


def compare(trees, scenario, pairs, duration, connections, log=print):
    """Per-pair results of both trees; the median after/before ratios of req/s and CPU."""
    results = ([], [])
    for index in range(pairs):
        order = (0, 1) if index % 2 == 0 else (1, 0)
        for which in order:
            results[which].append(measure_tree(trees[which], scenario, duration, connections))
        before, after = results[0][-1], results[1][-1]
        log("%s pair %d: before %7.0f req/s %6.1f us  after %7.0f req/s %6.1f us  ratio %.3f" % (
            scenario, index + 1, before["rps"], before["cpu_us"], after["rps"], after["cpu_us"],
            after["rps"] / before["rps"]))
    rps = statistics.median(a["rps"] / b["rps"] for b, a in zip(*results))
    cpu = statistics.median(a["cpu_us"] / b["cpu_us"] for b, a in zip(*results))
    return results, rps, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--scenarios", default="abd")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    trees = (os.path.abspath(args.before), os.path.abspath(args.after))
    print("| scenario | before req/s | after req/s | after/before req/s | after/before CPU us/req |")
    print("|---|---:|---:|---:|---:|")
    summary = []
    for scenario in args.scenarios:
        if scenario == "f":
            raise SystemExit("pairs.py: TLS (f) is not supported")
        results, rps, cpu = compare(trees, scenario, args.pairs, args.duration, args.connections,
                                    log=lambda line: print(line, file=sys.stderr, flush=True))
        summary.append("| %s %s | %.0f | %.0f | %.3f | %.3f |" % (
            scenario, run.SCENARIOS[scenario][0], statistics.median(r["rps"] for r in results[0]),
            statistics.median(r["rps"] for r in results[1]), rps, cpu))
        print(summary[-1], flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
