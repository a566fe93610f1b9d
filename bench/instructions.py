"""User-space instructions the server runs per request, under callgrind.

Unlike req/s and CPU time, this count does not change when the machine is
busy, so two trees can be compared on a loaded machine:

    python bench/instructions.py [--scenarios abdef] [--servers lilush_http,bare] [--requests 800]

The server (bench/run.py's command line for it) runs under
``valgrind --tool=callgrind``; after a warm-up the counters are zeroed
(``callgrind_control -z``), ``--requests`` requests are sent by ``--clients``
threads over raw sockets, and the dump's total is divided by the count.
Kernel time (system calls, TCP) is not counted.
"""

import argparse
import glob
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench import run  # noqa: E402

GET = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
CLOSE = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
POST = (b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 65536\r\n\r\n" + b"x" * 65536)
DEPTH = 16  # scenario e: requests per pipelined write


def read_responses(sock, count, pending=b""):
    """Read ``count`` responses with a Content-Length; returns what came after them."""
    data = pending
    while count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15:head.find(b"\r\n", start) if head.find(b"\r\n", start) > 0
                              else len(head)]) if start >= 0 else 0
            if len(data) >= end + 4 + length:
                data = data[end + 4 + length:]
                count -= 1
                continue
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("server closed with %d responses owed" % count)
        data += chunk
    return data


def connect(port, tls):
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    if tls:
        sock = ssl._create_unverified_context().wrap_socket(sock)
    return sock


def client(scenario, port, count):
    """Send ``count`` requests of one scenario (one connection, or one per request for b)."""
    if scenario == "b":
        for _ in range(count):
            with connect(port, False) as sock:
                sock.sendall(CLOSE)
                while sock.recv(65536):
                    pass
        return
    with connect(port, scenario == "f") as sock:
        rest = b""
        if scenario == "e":
            for _ in range(count // DEPTH):
                sock.sendall(GET * DEPTH)
                rest = read_responses(sock, DEPTH, rest)
            return
        request = POST if scenario == "d" else GET
        for _ in range(count):
            sock.sendall(request)
            rest = read_responses(sock, 1, rest)


def send_all(scenario, port, requests, clients):
    """``requests`` requests from ``clients`` threads; the number sent, or an error."""
    share = requests // clients
    failures = []

    def one_client():
        try:
            client(scenario, port, share)
        except OSError as exc:
            failures.append(exc)
    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError("%d clients failed, first: %r" % (len(failures), failures[0]))
    return share * clients


def callgrind(command, pids):
    subprocess.run(["callgrind_control", command] + [str(pid) for pid in pids], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def dumped_total(directory, pids, before):
    """Wait for each process's new dump; the sum of their Ir totals, and the dumps."""
    deadline = time.monotonic() + 60
    total = 0
    files = []
    for pid in pids:
        while True:
            dumps = set(glob.glob(os.path.join(directory, "callgrind.out.%d.*" % pid))) - before
            if dumps or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not dumps:
            raise RuntimeError("process %d wrote no dump" % pid)
        time.sleep(0.5)  # the dump is written in full before the next look
        files.append(max(dumps, key=os.path.getmtime))
        with open(files[-1]) as f:
            total += next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))
    return total, files


SERVE = """
import json, sys
from lilush_http import cli
cli.untrack_greenlet_tree()
from gevent import monkey
monkey.patch_all()
from bench import apps
from lilush_http import server
srv, err = server.new(json.loads(sys.argv[1]), apps.hello)
srv.serve()
"""


def server_command(name, scenario, port, tls):
    """bench/run.py's command, but lilush_http runs in this one process (the CLI
    forks its worker, which callgrind_control cannot reach), set up as the CLI's worker is."""
    if name != "lilush_http":
        return run.server_command(name, scenario, port, tls)
    config = {"log_level": "error", "connection_limit": 1024, "backlog": 1024, "port": port}
    if tls:
        config["ssl"] = {"default": {"cert": tls[0], "key": tls[1]}}
    return [sys.executable, "-c", SERVE, json.dumps(config)]


def measure(name, scenario, requests, clients, warmup, tls, keep=None):
    port = run.free_port()
    command = server_command(name, scenario, port, tls)
    if command is None:
        return None
    directory = tempfile.mkdtemp(prefix="lilush-callgrind-")
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=%s/callgrind.out.%%p" % directory]
    process = subprocess.Popen(valgrind + command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        run.wait_until_serving("%s://127.0.0.1:%d/" % ("https" if tls else "http", port), process, timeout=300)
        send_all(scenario, port, warmup, clients)
        pids = [process.pid]
        callgrind("-z", pids)
        sent = send_all(scenario, port, requests, clients)
        before = set(glob.glob(os.path.join(directory, "callgrind.out.*")))
        callgrind("-d", pids)
        # A worker blocked in epoll_wait takes the command when it next runs: wake it
        # with one more request like those measured (a keep-alive GET after a pipelined
        # batch), which every server answers (a part of its cost may count: under 0.2 %).
        waker = threading.Thread(target=send_all, args=("a" if scenario == "e" else scenario, port, 2, 2))
        waker.start()
        total, files = dumped_total(directory, pids, before)
        waker.join()
        if keep is not None:  # the measured dump, for callgrind_annotate
            os.makedirs(keep, exist_ok=True)
            shutil.copy(files[0], os.path.join(keep, "callgrind.%s.%s.out" % (name, scenario)))
        return total / sent
    finally:
        run.stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="abdef")
    parser.add_argument("--servers", default="lilush_http,bare")
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--keep", metavar="DIR",
                        help="copy each measured dump to DIR/callgrind.SERVER.SCENARIO.out (callgrind_annotate it)")
    args = parser.parse_args(argv)
    tls = run.make_certificate() if "f" in args.scenarios else None
    print("| scenario | server | instructions/request |")
    print("|---|---|---:|")
    for scenario in args.scenarios:
        for name in args.servers.split(","):
            count = measure(name, scenario, args.requests, args.clients, args.warmup,
                            tls if scenario == "f" else None, args.keep)
            if count is not None:
                print("| %s %s | %s | %s |" % (scenario, run.SCENARIOS[scenario][0], name, format(round(count), ",")),
                      flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
