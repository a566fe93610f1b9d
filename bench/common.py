"""What the long-running bench scripts share: a ``lilush-http`` server started
from an application directory in a subprocess, and figures read off /proc."""

import json
import os
import re
import shutil
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


NGINX_CONF = """
worker_processes 1;
error_log %(dir)s/nginx-error.log;
pid %(dir)s/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    %(upstream)s
    server {
        listen 127.0.0.1:%(port)d;
        location / { %(location)s }
    }
}
"""


def start_nginx(work, port, location, upstream=""):
    """nginx (``-p work``, its error log in ``work/nginx-error.log``, emptied first)
    proxying loopback ``port`` as ``location`` says; the process once it listens."""
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF % {"dir": work, "port": port, "location": location, "upstream": upstream})
    if os.path.exists(os.path.join(work, "nginx-error.log")):
        os.unlink(os.path.join(work, "nginx-error.log"))
    nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", work, "-c",
                              os.path.join(work, "nginx.conf"), "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return nginx
        except OSError:
            if time.monotonic() > deadline or nginx.poll() is not None:
                nginx.kill()
                raise SystemExit("nginx did not start")
            time.sleep(0.05)


def nginx_log(work):
    with open(os.path.join(work, "nginx-error.log")) as f:
        return f.read()


def curl_probe(url, timeout=10):
    """(answered with a 200, seconds) of curl asking for ``url`` on a new connection."""
    out = subprocess.run(["curl", "-sk", "-o", "/dev/null", "--max-time", str(timeout), "-w",
                          "%{http_code} %{time_total}", url],
                         capture_output=True, text=True, timeout=timeout + 5).stdout.split()
    return (len(out) == 2 and out[0] == "200"), float(out[1]) if len(out) == 2 else float(timeout)


def print_table(title, header, rows, log_path):
    """A markdown table of ``rows`` under ``title``, then the server log's slot summary."""
    print(title)
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print(row)
    print(slot_summary(read_log(log_path)))


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
