"""HTTP/2 benchmark: h2load (-n 9000 -c 10 -m 10, prior knowledge and TLS) against lilush_http,
hypercorn, gunicorn 27 (gevent worker, --http-protocols h2,h1) and granian (--http 2), next to
lilush_http's own HTTP/1.1 keep-alive figure from wrk in the same run; then the memory of idle
HTTP/2 connections next to idle HTTP/1.1 ones.

Each server is one process pinned to CPU 0 and h2load (one thread) to CPU 1, as in bench/run.py,
whose helpers this reuses. Every figure is the median of --repeat runs.

    python bench/http2.py [--requests 9000] [--repeat 3] [--servers ...] [--modes prior,tls] [--idle 500]
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import run as bench
from common import rss_mb, start_server

SERVERS = ["lilush_http", "hypercorn", "gunicorn", "granian"]
MODES = {"prior": "h2c, prior knowledge", "tls": "h2 over TLS (ALPN)"}
BEFORE = [None]  # --before: the root of another lilush_http tree (with its .venv), served as "before"
ANCHORS = ("hypercorn", "gunicorn", "granian")
GOALS = {"hypercorn": 2.0, "gunicorn": 1.5}  # issue 23: at least 2x hypercorn, 1.5x gunicorn's gevent worker


def h2_command(name, port, tls):
    """The command line of one server speaking HTTP/2 (on a plain port: prior knowledge)."""
    cert, key = tls or (None, None)
    if name == "lilush_http":  # HTTP/2 is on by default
        return bench.server_command("lilush_http", "a", port, tls)
    if name == "before":  # lilush_http of another tree (--before), with that tree's interpreter
        command = bench.server_command("lilush_http", "a", port, tls)
        return [os.path.join(BEFORE[0], ".venv", "bin", "python")] + command[1:]
    if name == "hypercorn":
        command = [os.path.join(bench.BIN, "hypercorn"), "--bind", "127.0.0.1:%d" % port, "--workers", "1",
                   "--log-level", "warning", "--backlog", "1024", "bench.apps:asgi_app"]
        return command + (["--certfile", cert, "--keyfile", key] if tls else [])
    if name == "gunicorn":  # gevent worker; "both": prior knowledge, and HTTP/1.1 still answered
        return bench.server_command("gunicorn", "a", port, tls) + [
            "--http-protocols", "h2,h1", "--http2-cleartext", "both"]
    if name == "granian":
        return bench.server_command("granian", "a", port, tls) + ["--http", "2"]
    raise ValueError(name)


def url_of(port, tls, path="/"):
    return "%s://127.0.0.1:%d%s" % ("https" if tls else "http", port, path)


def h2load(url, requests, clients, streams, cpu="1", timeout=120):
    """One h2load run: its parsed figures (req/s, succeeded, failed) and its output."""
    command = ["h2load", "-n", str(requests), "-c", str(clients), "-m", str(streams), "-t", "1", url]
    if shutil.which("taskset"):
        command = ["taskset", "-c", cpu] + command
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout).stdout
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    protocol = re.search(r"Application protocol: (\S+)", out)
    return {"rps": float(rps.group(1)) if rps else 0.0, "succeeded": int(done.group(1)) if done else 0,
            "failed": int(done.group(2)) + int(done.group(3)) if done else requests,
            "protocol": protocol.group(1) if protocol else None, "output": out}


def launch(name, port, tls):
    """Start one server pinned to CPU 0 and wait until h2load gets an HTTP/2 answer from it."""
    command = h2_command(name, port, tls)
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0"] + command
    root = BEFORE[0] if name == "before" else bench.ROOT
    process = subprocess.Popen(command, cwd=root, env=dict(os.environ, PYTHONPATH=root),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError("%s exited with %s" % (name, process.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            probe = h2load(url_of(port, tls), 1, 1, 1, timeout=10)
            if probe["succeeded"] == 1 and probe["protocol"] in ("h2", "h2c"):
                return process
        except (OSError, subprocess.TimeoutExpired):
            pass
        if time.monotonic() > deadline:
            bench.stop(process)
            raise RuntimeError("%s did not answer HTTP/2" % name)
        time.sleep(0.2)


def measure(servers, modes, requests, repeat, log=print):
    """Each mode's servers all started, then h2load against each in turn, --repeat rounds
    (alternating, so a busy machine weighs on all alike): the median run of each."""
    tls = bench.make_certificate() if "tls" in modes else None
    results = {}
    for mode in modes:
        use_tls = tls if mode == "tls" else None
        processes = {}
        runs = {}
        try:
            for name in servers:
                port = bench.free_port()
                try:
                    processes[name] = (launch(name, port, use_tls), url_of(port, use_tls))
                except RuntimeError as e:
                    log("%s %-12s skipped: %s" % (mode, name, e))
            for process, url in processes.values():
                h2load(url, max(100, requests // 10), 10, 10)  # warm-up
            for _ in range(repeat):
                for name, (process, url) in processes.items():
                    cpu_before = bench.cpu_seconds(process.pid)
                    run = h2load(url, requests, 10, 10)
                    run["cpu_us"] = (bench.cpu_seconds(process.pid) - cpu_before) / max(1, run["succeeded"]) * 1e6
                    runs.setdefault(name, []).append(run)
        finally:
            for process, _ in processes.values():
                bench.stop(process)
        for name in processes:
            median = sorted(runs[name], key=lambda r: r["rps"])[len(runs[name]) // 2]
            median["runs"] = [r["rps"] for r in runs[name]]
            median["cpu_us"] = sorted(r["cpu_us"] for r in runs[name])[len(runs[name]) // 2]
            results[(mode, name)] = median
            log("%-5s %-12s %9.0f req/s  %6.1f us CPU/req  %d succeeded, %d failed (%s)" % (
                mode, name, median["rps"], median["cpu_us"], median["succeeded"], median["failed"], median["protocol"]))
    return results


def http11_figure(duration, repeat, log=print):
    """lilush_http's HTTP/1.1 keep-alive req/s from wrk (bench/run.py scenario a), same run."""
    if shutil.which("wrk") is None:
        return None
    results = bench.measure(["lilush_http"], ["a"], duration, repeat, 50, log=lambda line: log("h1    " + line))
    return results.get(("a", "lilush_http"))


# -- idle connections ---------------------------------------------------------------------------

def open_http11(port, count):
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        data = b""
        while b"Hi there!" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("closed by the server")
            data += chunk
        sockets.append(sock)
    return sockets


# A prior-knowledge request by hand, so that the figure is the server's alone (no client library):
# the preface, empty SETTINGS, then HEADERS on stream 1 with GET, http, / and :authority "bench".
H2_REQUEST = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0\0\0\x04\0\0\0\0\0"
              + b"\0\0\x0a\x01\x05\0\0\0\x01" + b"\x82\x86\x84\x01\x05bench")
SETTINGS_ACK = b"\0\0\0\x04\x01\0\0\0\0"


def open_http2(port, count):
    """``count`` HTTP/2 connections (prior knowledge), each with one request answered, left open."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(H2_REQUEST)
        buffer, ended = b"", False
        while not ended:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("closed by the server")
            buffer += chunk
            while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                length, kind, flags = int.from_bytes(buffer[:3], "big"), buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                buffer = buffer[9 + length:]
                if kind == 4 and not flags & 1:
                    sock.sendall(SETTINGS_ACK)
                ended = ended or (stream == 1 and kind in (0, 1) and flags & 1)
        sockets.append(sock)
    return sockets


def idle_memory(count, log=print):
    """KB of server RSS per idle connection, HTTP/1.1 and HTTP/2: {protocol: KB}."""
    app_dir = tempfile.mkdtemp(prefix="lilush-h2idle-")
    config = {"connection_limit": 2 * count + 100, "keepalive_idle_timeout": 600}
    server, port, _ = start_server(app_dir, config, "idle", args=("lilush_http.server:sample_handle",))
    figures = {}
    try:
        for opener in (open_http11, open_http2):  # warm both paths up before the baseline
            try:
                [sock.close() for sock in opener(port, 5)]
            except (RuntimeError, OSError):
                pass
        time.sleep(0.5)
        for protocol, opener in (("HTTP/1.1", open_http11), ("HTTP/2", open_http2)):
            before = rss_mb(server.pid)
            try:
                sockets = opener(port, count)
            except (RuntimeError, OSError) as e:
                log("idle %-8s not served: %s" % (protocol, e))
                continue
            time.sleep(0.5)
            after = rss_mb(server.pid)
            figures[protocol] = (after - before) * 1024 / count
            log("idle %-8s %d connections: server RSS %.1f -> %.1f MB, %.1f KB per connection" % (
                protocol, count, before, after, figures[protocol]))
            for sock in sockets:
                sock.close()
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(20)
        shutil.rmtree(app_dir, ignore_errors=True)
    return figures


def versions():
    """bench/run.py's versions, with hypercorn, h2 and h2load's."""
    from importlib import metadata
    found = bench.versions()
    for package in ("hypercorn", "h2"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        found["h2load"] = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.split()[-1]
    except (OSError, IndexError):
        pass
    return found


def table(results, h1, idle, servers, modes, requests, repeat):
    lines = [
        "HTTP/2 benchmark of %s, CPU %s, %d cores; %s." % (
            time.strftime("%Y-%m-%d"), bench.cpu_model(), os.cpu_count(),
            ", ".join("%s %s" % kv for kv in versions().items())),
        "",
        "h2load -n %d -c 10 -m 10 -t 1, median of %d runs; each server one process on CPU 0, h2load on CPU 1; "
        "the 13-byte hello." % (requests, repeat),
        "",
        "| mode | server | req/s | server CPU us/req | failed |",
        "|---|---|---:|---:|---:|",
    ]
    for mode in modes:
        for name in servers:
            r = results.get((mode, name))
            if r:
                lines.append("| %s | %s | %.0f | %.1f | %d |" % (MODES[mode], name, r["rps"], r["cpu_us"], r["failed"]))
    if h1:
        lines.append("| HTTP/1.1 keep-alive (wrk -c50, scenario a) | lilush_http | %.0f | %.1f | %d |" % (
            h1["rps"], h1["cpu_us"], h1["errors"]))
    lines += ["", "Ratios, lilush_http over the others (req/s; goals: %s):" % ", ".join(
        "%.1fx %s" % (v, k) for k, v in GOALS.items()), "",
        "| mode | %s |" % " | ".join("lilush_http / %s" % a for a in ANCHORS), "|---|" + "---:|" * len(ANCHORS)]
    for mode in modes:
        ours = results.get((mode, "lilush_http"))
        if not ours:
            continue
        cells = []
        for other in ANCHORS:
            theirs = results.get((mode, other))
            cells.append("%.2f" % (ours["rps"] / theirs["rps"]) if theirs and theirs["rps"] else "-")
        lines.append("| %s | %s |" % (MODES[mode], " | ".join(cells)))
    if h1 and results.get(("prior", "lilush_http")):
        lines += ["", "lilush_http HTTP/2 (prior knowledge) / its HTTP/1.1 keep-alive: %.2f" % (
            results[("prior", "lilush_http")]["rps"] / h1["rps"])]
    if idle:
        lines += ["", "Idle connections (lilush_http, one request answered on each, then left open): " + "; ".join(
            "%s %.1f KB" % kv for kv in idle.items()) + " of server RSS per connection."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=9000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--modes", default="prior,tls")
    parser.add_argument("--before", help="another lilush_http tree (its .venv used) measured as server 'before', "
                        "in turn with this one")
    parser.add_argument("--h1-duration", type=int, default=5, help="seconds of each wrk run for the HTTP/1.1 figure")
    parser.add_argument("--idle", type=int, default=500, help="idle connections of each protocol (0: skip)")
    parser.add_argument("--output", default=os.path.join(bench.HERE, "results-http2.md"),
                        help="markdown file for the table ('-' for none)")
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None:
        print("h2load is not installed (apt-get install nghttp2-client)", file=sys.stderr)
        return 2
    servers = [s for s in args.servers.split(",") if s in SERVERS]
    if args.before:
        BEFORE[0] = os.path.abspath(args.before)
        servers.append("before")
    modes = [m for m in args.modes.split(",") if m in MODES]
    results = measure(servers, modes, args.requests, args.repeat)
    h1 = http11_figure(args.h1_duration, args.repeat) if "lilush_http" in servers and args.h1_duration else None
    idle = idle_memory(args.idle) if args.idle else None
    text = table(results, h1, idle, servers, modes, args.requests, args.repeat)
    print()
    print(text)
    if args.output != "-":
        with open(args.output, "w") as f:
            f.write("# HTTP/2 benchmark results\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
