"""What the long-running bench scripts share: a ``lilush-http`` server started
from an application directory in a subprocess, and figures read off /proc."""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
START = re.compile(r" serving on \S+:(\d+) ")


def start_server(app_dir, config, name="server", args=("app:handle",), log_level="info", extra=(), port=0):
    """``python -m lilush_http ARGS`` in ``app_dir`` on ``port`` (0: a free one), its
    log in ``app_dir/NAME.log``; returns (process, port, log path) once it serves."""
    config_path = os.path.join(app_dir, "%s.json" % name)
    with open(config_path, "w") as f:
        json.dump(config, f)
    log_path = os.path.join(app_dir, "%s.log" % name)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "lilush_http", *args, "--port", str(port),
                                    "--config", config_path, "--log-level", log_level, *extra],
                                   cwd=app_dir, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = START.search(read_log(log_path))
        if match:
            return process, int(match.group(1)), log_path
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise SystemExit("%s did not start:\n%s" % (name, read_log(log_path)))


def start_app(source, config, name):
    """``source`` written as app.py to a new temporary directory and served there
    (``app:handle``); returns (directory, process, port, log path)."""
    work = tempfile.mkdtemp(prefix="lilush-%s-" % name)
    with open(os.path.join(work, "app.py"), "w") as f:
        f.write(source)
    return (work,) + start_server(work, config, name)


def slot_summary(log):
    """What the server's log says it did to free slots (admission.py), and how loud it was."""
    asked = sum(int(n) for n in re.findall(r"(\d+) connections asked to close", log))
    return "slow clients cut: %d, asked to close: %d, idle closed: %d; log lines at WARNING or above: %d" % (
        log.count("slow client "), asked, log.count("idle keep-alive connection"), len(loud_lines(log)))


def free_port():
    """A loopback port free just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, fraction):
    """The value at ``fraction`` (0.99: p99) of ``values``, nan when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def read_log(log_path):
    with open(log_path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def loud_lines(text):
    """Log lines at WARNING or above, and tracebacks."""
    return [line for line in text.splitlines()
            if " WARNING " in line or " ERROR " in line or "Traceback" in line or " CRITICAL " in line]


def process_tree(pid):
    """``pid`` and its descendants: the CLI is a supervisor whose workers serve."""
    pids = [pid]
    for parent in pids:
        try:
            with open("/proc/%d/task/%d/children" % (parent, parent)) as f:
                pids += [int(child) for child in f.read().split()]
        except OSError:
            pass
    return pids


def rss_mb(pid):
    """Resident memory of ``pid`` and its workers, in MB."""
    total = 0
    for member in process_tree(pid):
        try:
            with open("/proc/%d/status" % member) as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total / 1024.0


def fd_count(pid):
    """Open descriptors of ``pid`` and its workers."""
    total = 0
    for member in process_tree(pid):
        try:
            total += len(os.listdir("/proc/%d/fd" % member))
        except OSError:
            pass
    return total


def run_workers(targets, progress, every=10):
    """Run each callable of ``targets`` in a thread until all end, printing
    ``progress()`` every ``every`` seconds; returns the seconds it took."""
    started = time.monotonic()
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    last = started
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.2)
        if time.monotonic() - last > every:
            last = time.monotonic()
            print("  ... " + progress(), flush=True)
    return time.monotonic() - started
