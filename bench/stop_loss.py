"""SIGTERM under load loses nothing: clients opening a new connection per request
(GETs and 10 KB POSTs in turn) through a stop of the CLI, with 1 and 2 workers;
the deterministic repro (the worker stopped with SIGSTOP while 10 GETs queue,
then SIGTERM to the supervisor, then SIGCONT); and nginx with its default
``proxy_pass`` in front through SIGTERM restarts. Every attempt must be answered
in full or refused at connect; exits 1 when one was reset or closed unanswered.

    python bench/stop_loss.py [--stops 4] [--clients 8] [--workers 1,2] [--restarts 4]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time

from common import free_port, nginx_log, process_tree, start_nginx, start_server

APP = '''
def handle(method, query, args, headers, body, ctx):
    if body is not None:
        return "%d bytes" % len(body), 200, {}
    return "Hi there!", 200, {}
'''
BODY = b"x" * 10240
GET = b"GET / HTTP/1.1\r\nHost: stop\r\n\r\n"
POST = b"POST / HTTP/1.1\r\nHost: stop\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
EXPECTED = {GET: b"Hi there!", POST: b"%d bytes" % len(BODY)}


def attempt(port, request, timeout=10):
    """One request on a new connection: "ok", "refused" (at connect), "502" (from a
    proxy), or what went wrong ("reset", "closed unanswered", "short", ...)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return "connect failed: %s" % exc
    data = b""
    try:
        with sock:
            sock.sendall(request)
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
    except ConnectionResetError:
        return "reset" if not data else "reset mid-response"
    except OSError as exc:
        return "error: %s" % exc
    if not data:
        return "closed unanswered"
    if data.startswith(b"HTTP/1.1 502 "):
        return "502"
    if data.startswith(b"HTTP/1.1 200 ") and data.endswith(EXPECTED[request]):
        return "ok"
    return "short"


def client_loop(port, outcomes, lock, until):
    """Requests (GET, POST, GET, ...) until ``until()`` is true or the server refuses."""
    requests = (GET, POST)
    count = 0
    while not until():
        result = attempt(port, requests[count % 2])
        count += 1
        with lock:
            outcomes[result] = outcomes.get(result, 0) + 1
        if result == "refused":
            return


def stop_under_load(work, workers, clients, index):
    """One server, ``clients`` looping clients, SIGTERM after a second: the outcomes."""
    server, port, _ = start_server(work, {"workers": workers}, "stop%d-%d" % (workers, index))
    outcomes, lock = {}, threading.Lock()
    threads = [threading.Thread(target=client_loop, args=(port, outcomes, lock, lambda: False))
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    server.send_signal(signal.SIGTERM)
    server.wait(30)
    for thread in threads:
        thread.join(30)
    return outcomes


def stopped_worker_repro(work, queued=10):
    """SIGSTOP the worker, queue ``queued`` GETs, SIGTERM the supervisor, SIGCONT:
    how many of them were answered, and what happened to the others."""
    server, port, _ = start_server(work, {}, "repro")
    worker = process_tree(server.pid)[1]
    os.kill(worker, signal.SIGSTOP)
    socks = []
    for _ in range(queued):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(GET)
        socks.append(sock)
    server.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    os.kill(worker, signal.SIGCONT)
    outcomes = {}
    for sock in socks:
        data = b""
        try:
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
                if data.endswith(b"Hi there!"):
                    break
            result = "ok" if data.endswith(b"Hi there!") else "closed unanswered"
        except ConnectionResetError:
            result = "reset"
        except OSError as exc:
            result = "error: %s" % exc
        sock.close()
        outcomes[result] = outcomes.get(result, 0) + 1
    server.wait(30)
    return outcomes


def behind_nginx(work, restarts, clients):
    """nginx (default proxy_pass, a new upstream connection per request) in front of
    a server restarted ``restarts`` times with SIGTERM: client outcomes and what
    nginx logged."""
    app_port, port = free_port(), free_port()
    nginx = start_nginx(work, port, "proxy_pass http://127.0.0.1:%d;" % app_port)
    outcomes, lock = {}, threading.Lock()
    done = threading.Event()
    try:
        server, _, _ = start_server(work, {}, "nginx-app0", port=app_port)
        threads = [threading.Thread(target=client_loop, args=(port, outcomes, lock, done.is_set))
                   for _ in range(clients)]
        for thread in threads:
            thread.start()
        for index in range(1, restarts + 1):
            time.sleep(1.0)
            server.send_signal(signal.SIGTERM)
            server.wait(30)
            server, _, _ = start_server(work, {}, "nginx-app%d" % index, port=app_port)
        time.sleep(1.0)
        done.set()
        for thread in threads:
            thread.join(30)
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    finally:
        done.set()
        nginx.terminate()
        nginx.wait(10)
    log = nginx_log(work)
    reasons = {"reset by peer": log.count("reset by peer"), "prematurely closed": log.count("prematurely closed"),
               "refused": log.count("(111: Connection refused)")}
    return outcomes, reasons


def lost(outcomes):
    return sum(n for result, n in outcomes.items() if result not in ("ok", "refused", "502"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=4, help="stops per worker count")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--restarts", type=int, default=4, help="restarts behind nginx (0: none)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="lilush-stoploss-")
    with open(os.path.join(work, "app.py"), "w") as f:
        f.write(APP)
    failures = 0
    print("| run | attempts | answered | refused at connect | reset or closed unanswered | details |")
    print("|---|---:|---:|---:|---:|---|")
    for workers in [int(w) for w in args.workers.split(",")]:
        for index in range(args.stops):
            outcomes = stop_under_load(work, workers, args.clients, index)
            failures += lost(outcomes)
            print("| SIGTERM, %d worker(s), %d clients, stop %d | %d | %d | %d | %d | %s |" % (
                workers, args.clients, index + 1, sum(outcomes.values()), outcomes.get("ok", 0),
                outcomes.get("refused", 0), lost(outcomes), json.dumps(outcomes, sort_keys=True)), flush=True)
    outcomes = stopped_worker_repro(work)
    failures += lost(outcomes)
    print("| worker SIGSTOPped, 10 GETs queued, SIGTERM, SIGCONT | 10 | %d | - | %d | %s |" % (
        outcomes.get("ok", 0), lost(outcomes), json.dumps(outcomes, sort_keys=True)), flush=True)
    if args.restarts and (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        outcomes, reasons = behind_nginx(work, args.restarts, args.clients)
        failures += lost(outcomes) + reasons["reset by peer"] + reasons["prematurely closed"]
        print("| nginx default proxy_pass, %d SIGTERM restarts, %d clients | %d | %d | %d x 502 | %d | "
              "nginx log: %s; clients: %s |" % (
                  args.restarts, args.clients, sum(outcomes.values()), outcomes.get("ok", 0), outcomes.get("502", 0),
                  lost(outcomes), json.dumps(reasons), json.dumps(outcomes, sort_keys=True)))
    shutil.rmtree(work, ignore_errors=True)
    print("stop_loss: %s" % ("OK" if not failures else "FAILED: %d attempts lost" % failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
