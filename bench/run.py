"""Side-by-side benchmark: lilush_http against gevent.pywsgi, gunicorn -k gevent,
uvicorn+httptools, granian (WSGI, the Rust server: the non-gevent anchor) and a
bare gevent loop, with wrk on loopback.

Each server runs as one process pinned to CPU 0, wrk (one thread) to CPU 1;
each is started on a free port, measured, and stopped, one after another.
Every scenario is repeated and the median run reported (req/s, p50, p99).

    python bench/run.py [--duration 5] [--repeat 3] [--servers ...] [--scenarios a,b,...]
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable
BIN = os.path.dirname(PY)

SCENARIOS = {
    "a": ("13-byte body, keep-alive", "/", []),
    "b": ("13-byte body, Connection: close", "/", ["-H", "Connection: close"]),
    "c": ("100 KB HTML, gzip", "/page", ["-H", "Accept-Encoding: gzip"]),
    "d": ("POST 64 KB body", "/", ["-s", os.path.join(HERE, "post.lua")]),
    "e": ("pipelined GETs, depth 16", "/", ["-s", os.path.join(HERE, "pipeline.lua")]),
    "f": ("TLS, keep-alive", "/", []),
    "g": ("100 KB HTML, gzip, new body each time", "/dynamic", ["-H", "Accept-Encoding: gzip"]),
    "w": ("13-byte body, keep-alive, 2 workers", "/", []),
}
SERVERS = ["lilush_http", "bare", "granian", "pywsgi", "gunicorn", "uvicorn"]
ANCHORS = ("granian", "pywsgi", "gunicorn", "uvicorn", "bare")  # the ratio table's columns


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(name, scenario, port, tls, workers=1):
    """The command line of one server, or None when it cannot run the scenario."""
    cert, key = tls or (None, None)
    if name == "lilush_http":
        config = {"log_level": "error", "connection_limit": 1024, "backlog": 1024}
        if tls:
            config["ssl"] = {"default": {"cert": cert, "key": key}}
        path = os.path.join(tempfile.gettempdir(), "lilush-bench-%d.json" % port)
        with open(path, "w") as f:
            json.dump(config, f)
        command = [PY, "-m", "lilush_http", "bench.apps:hello", "--port", str(port), "--config", path]
        return command + (["--workers", str(workers)] if workers > 1 else [])
    if workers > 1:
        return None
    if name == "bare":  # it answers every request alike: a and e keep-alive, b with close
        if tls or scenario not in ("a", "b", "e"):
            return None
        return [PY, os.path.join(HERE, "bare.py"), str(port)] + (["close"] if scenario == "b" else [])
    if name == "granian":  # WSGI, one worker, one blocking thread: its fastest single-core setup
        command = [os.path.join(BIN, "granian"), "--interface", "wsgi", "--workers", "1",
                   "--blocking-threads", "1", "--runtime-threads", "1", "--no-ws", "--log-level", "warning",
                   "--host", "127.0.0.1", "--port", str(port), "--backlog", "1024", "bench.apps:wsgi_app"]
        return command + (["--ssl-certificate", cert, "--ssl-keyfile", key] if tls else [])
    if name == "pywsgi":
        return [PY, os.path.join(HERE, "pywsgi_server.py"), str(port)] + ([cert, key] if tls else [])
    if name == "gunicorn":
        command = [os.path.join(BIN, "gunicorn"), "-k", "gevent", "-w", "1", "--worker-connections", "1024",
                   "-b", "127.0.0.1:%d" % port, "--log-level", "warning", "bench.apps:wsgi_app"]
        return command + (["--certfile", cert, "--keyfile", key] if tls else [])
    if name == "uvicorn":
        app = "bench.apps:asgi_gzip_app" if scenario == "g" else "bench.apps:asgi_app"
        command = [os.path.join(BIN, "uvicorn"), app, "--http", "httptools",
                   "--workers", "1", "--no-access-log", "--log-level", "warning",
                   "--host", "127.0.0.1", "--port", str(port), "--backlog", "1024"]
        return command + (["--ssl-certfile", cert, "--ssl-keyfile", key] if tls else [])
    raise ValueError(name)


def wait_until_serving(url, process, timeout=20):
    import ssl
    context = ssl._create_unverified_context()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited with %s" % process.returncode)
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as response:
                response.read()
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def start(name, scenario, port, tls, workers, cpus):
    command = server_command(name, scenario, port, tls, workers)
    if command is None:
        return None
    if shutil.which("taskset"):
        command = ["taskset", "-c", cpus] + command
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    scheme = "https" if tls else "http"
    wait_until_serving("%s://127.0.0.1:%d/" % (scheme, port), process)
    return process


def stop(process):
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(5)


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(output):
    """req/s, p50 and p99 latency (ms), and the error count from wrk --latency output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    latency = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", output, re.M):
        latency[pct] = float(value) * UNITS[unit]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non2xx.group(1)) if non2xx else 0
    return {"rps": rps, "p50": latency.get("50"), "p99": latency.get("99"), "errors": errors}


def cpu_seconds(session):
    """User+system CPU time of every process in the server's session (gunicorn's
    arbiter and worker, lilush_http's supervisor and workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat: the session id
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def run_wrk(url, extra, duration, connections, session):
    command = ["wrk", "-t1", "-c%d" % connections, "-d%ds" % duration, "--latency", *extra, url]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "1"] + command
    cpu_before = cpu_seconds(session)
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60).stdout
    result = parse_wrk(output)
    requests = result["rps"] * duration
    result["cpu_us"] = (cpu_seconds(session) - cpu_before) / requests * 1e6 if requests else 0.0
    return result


def make_certificate():
    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    directory = tempfile.mkdtemp(prefix="lilush-bench-")
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    return cert_path, key_path


def measure(servers, scenarios, duration, repeat, connections, log=print):
    tls = make_certificate() if "f" in scenarios else None
    results = {}
    for scenario in scenarios:
        title, path, extra = SCENARIOS[scenario]
        for name in servers:
            workers = 2 if scenario == "w" else 1
            port = free_port()
            use_tls = tls if scenario == "f" else None
            process = start(name, scenario, port, use_tls, workers, "0,1" if workers > 1 else "0")
            if process is None:
                continue
            try:
                url = "%s://127.0.0.1:%d%s" % ("https" if use_tls else "http", port, path)
                run_wrk(url, extra, 1, connections, process.pid)  # warm-up
                runs = [run_wrk(url, extra, duration, connections, process.pid) for _ in range(repeat)]
            finally:
                stop(process)
            median = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
            median["runs"] = [r["rps"] for r in runs]
            results[(scenario, name)] = median
            log("%s %-12s %10.0f req/s  p50 %7.2f ms  p99 %7.2f ms  %6.1f us CPU/req  errors %d" % (
                scenario, name, median["rps"], median["p50"] or 0, median["p99"] or 0, median["cpu_us"],
                median["errors"]))
    return results


def versions():
    found = {"python": platform.python_version()}
    for module in ("gevent", "granian", "uvicorn", "httptools", "gunicorn", "lilush_http"):
        try:
            found[module] = __import__(module).__version__
        except Exception:
            pass
    try:
        found["wrk"] = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()[1]
    except (OSError, IndexError):
        pass
    return found


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(results, servers, scenarios, duration, repeat, connections):
    lines = [
        "Benchmark of %s, CPU %s, %d cores; %s." % (
            datetime.date.today().isoformat(), cpu_model(), os.cpu_count(),
            ", ".join("%s %s" % kv for kv in versions().items())),
        "",
        "wrk -t1 -c%d, %d s per run, median of %d runs; each server one process on CPU 0, wrk on CPU 1 "
        "(scenario w: lilush_http with 2 workers on both CPUs). Latency in ms." % (connections, duration, repeat),
        "",
        "| scenario | server | req/s | p50 | p99 | server CPU us/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for scenario in scenarios:
        for name in servers:
            r = results.get((scenario, name))
            if r:
                lines.append("| %s %s | %s | %.0f | %.2f | %.2f | %.1f | %d |" % (
                    scenario, SCENARIOS[scenario][0], name, r["rps"], r["p50"] or 0, r["p99"] or 0,
                    r["cpu_us"], r["errors"]))
    header = " | ".join("lilush_http / %s" % ("bare loop" if a == "bare" else a) for a in ANCHORS)
    for title, ratio in (("req/s, ours over theirs", lambda ours, theirs: ours["rps"] / theirs["rps"]),
                         ("server CPU us/req, theirs over ours (steadier on a busy machine)",
                          lambda ours, theirs: theirs["cpu_us"] / ours["cpu_us"])):
        lines += ["", "Ratios of %s:" % title, "", "| scenario | %s |" % header, "|---|" + "---:|" * len(ANCHORS)]
        for scenario in scenarios:
            ours = results.get((scenario, "lilush_http"))
            if not ours or (scenario == "w" and "CPU" in title):
                continue  # w: 2 workers' CPU against one process's says nothing
            cells = []
            for other in ANCHORS:
                theirs = results.get((scenario, other)) if scenario != "w" else results.get(("a", other))
                ok = theirs and theirs["rps"] and ours["cpu_us"]
                cells.append("%.2f" % ratio(ours, theirs) if ok else "-")
            lines.append("| %s %s | %s |" % (scenario, SCENARIOS[scenario][0], " | ".join(cells)))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per run (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default="abcdefgw")
    parser.add_argument("--output", default=os.path.join(HERE, "results.md"),
                        help="markdown file for the table ('-' for none)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    servers = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios if s in SCENARIOS]
    results = measure(servers, scenarios, args.duration, args.repeat, args.connections)
    text = table(results, servers, scenarios, args.duration, args.repeat, args.connections)
    print()
    print(text)
    if args.output != "-":
        with open(args.output, "w") as f:
            f.write("# Benchmark results\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
