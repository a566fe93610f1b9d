"""A TLS handshake flood against one lilush_http process at the default config:
connections that say nothing, or send half a ClientHello, kept at a count (each
one the server closes is replaced at once) or opened at a rate and held, while
curl asks for a page on a new connection every half second. Prints, per attack,
how many probes were answered and their latency (goal: all, each under 1 s).

    python bench/tls_flood.py [--connections 1000] [--duration 15] [--modes silent,half,rate]
"""

import argparse
import json
import os
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import time

from common import curl_probe, fd_count, percentile, print_table, start_server

APP = '''
def handle(method, query, args, headers, body, ctx):
    return "Hi there!", 200, {}
'''
MODES = {  # name -> what the attacker does
    "silent": "%d connections that send nothing (each closed one replaced)",
    "half": "%d connections that send half a ClientHello (each closed one replaced)",
    "rate": "8 silent connections a second, each held 11 s",
}


def client_hello():
    """The bytes of a real ClientHello, as Python's ssl module would send them."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="flood.test")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def attack(port, mode, count, seconds, per_second=None, hold=None):
    """Keep ``count`` attack connections open for ``seconds`` (or open ``per_second``
    a second, each closed after ``hold`` s). Returns how many were opened."""
    payload = client_hello()[:200] if mode == "half" else b""  # a ClientHello is ~500 bytes
    selector = selectors.DefaultSelector()
    opened = {}  # socket -> when
    total = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        now = time.monotonic()
        wanted = count if per_second is None else int((now - started) * per_second) - total
        budget = 200  # new connections per round, so the loop also notices closes
        while (len(opened) < count if per_second is None else wanted > 0) and budget:
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            selector.register(sock, selectors.EVENT_WRITE if payload else selectors.EVENT_READ)
            opened[sock] = now
            total += 1
            budget -= 1
            wanted -= 1
        for key, events in selector.select(0.01):
            sock = key.fileobj
            if events & selectors.EVENT_WRITE:
                try:
                    sock.send(payload)
                except OSError:
                    pass
                selector.modify(sock, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:  # the server closed it: replaced next round
                selector.unregister(sock)
                sock.close()
                del opened[sock]
        if hold is not None:
            for sock, when in list(opened.items()):
                if now - when > hold:
                    selector.unregister(sock)
                    sock.close()
                    del opened[sock]
    for sock in opened:
        sock.close()
    return total


def run_mode(mode, port, pid, args):
    """One attack with probes; its table row."""
    here = os.path.abspath(__file__)
    attacker = subprocess.Popen([sys.executable, here, "--attacker", mode, "--port", str(port),
                                 "--connections", str(args.connections), "--duration", str(args.duration)],
                                stdout=subprocess.PIPE, text=True)
    probes = []
    peak_fds = fd_count(pid)
    try:
        time.sleep(min(2.0, args.duration / 4))  # the flood builds up first
        while attacker.poll() is None and len(probes) < args.probes:
            probes.append(curl_probe("https://127.0.0.1:%d/" % port))
            peak_fds = max(peak_fds, fd_count(pid))
            time.sleep(0.5)
    finally:
        out, _ = attacker.communicate(timeout=args.duration + 30)
    times = [t for ok, t in probes]
    answered = sum(1 for ok, t in probes if ok)
    label = MODES[mode] % args.connections if "%d" in MODES[mode] else MODES[mode]
    return "| %s | %s | %d/%d | %d | %.3f | %.3f | %.3f | %d |" % (
        label, out.strip() or "?", answered, len(probes), sum(1 for t in times if t >= 1.0),
        percentile(times, 0.5), percentile(times, 0.99), max(times) if times else float("nan"), peak_fds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=15, help="seconds per attack")
    parser.add_argument("--probes", type=int, default=20, help="at most this many probes per attack")
    parser.add_argument("--modes", default="silent,half,rate")
    parser.add_argument("--config", default="{}", help="server config overrides as JSON (default: none)")
    parser.add_argument("--attacker", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attacker:
        if args.attacker == "rate":
            total = attack(args.port, "silent", 10 ** 6, args.duration, per_second=8, hold=11)
        else:
            total = attack(args.port, args.attacker, args.connections, args.duration)
        print(total)
        return 0
    if shutil.which("curl") is None:
        print("curl is not installed")
        return 2
    work = __import__("tempfile").mkdtemp(prefix="lilush-tlsflood-")
    with open(os.path.join(work, "app.py"), "w") as f:
        f.write(APP)
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", "/CN=127.0.0.1", "-days", "2", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    server, port, log_path = start_server(work, json.loads(args.config), "tlsflood",
                                          extra=("--tls-cert", cert, "--tls-key", key))
    rows = []
    try:
        curl_probe("https://127.0.0.1:%d/" % port)  # warm up
        for mode in args.modes.split(","):
            rows.append(run_mode(mode, port, server.pid, args))
            print("  done: " + rows[-1], flush=True)
            time.sleep(1)
    finally:
        server.terminate()
        server.wait(20)
    print_table("TLS handshake flood, %g s per attack, curl probe every 0.5 s; config %s" % (
        args.duration, args.config), ("attack", "attack connections opened", "probes answered", "probes >= 1 s",
                                      "probe p50 s", "probe p99 s", "probe max s", "server fds peak"), rows, log_path)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
