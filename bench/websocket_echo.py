"""WebSocket echo benchmark: messages/s, p99 latency and server CPU per message,
for 64-byte and 64 KB messages with 50 clients, against lilush_http,
gevent-websocket on pywsgi and the websockets library's asyncio server.

    python bench/websocket_echo.py [--duration 5] [--clients 50] [--servers lilush_http,...]

Each server is one process on CPU 0; the clients (gevent, raw sockets, one
pre-built masked frame each, no compression offered) run in this process on
CPU 1. A client sends a message, waits for its echo, and repeats.
"""

import argparse
import os
import socket as stdsocket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SERVERS = ("lilush_http", "gevent-websocket", "websockets")
SIZES = (64, 64 * 1024)
HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


# -- the servers (run as ``websocket_echo.py --serve NAME PORT``) --------------------------

def serve_lilush(port):
    from gevent import monkey
    monkey.patch_all()
    from lilush_http import server, websocket

    def handle(method, query, args, headers, body, ctx):
        ws, err = websocket.upgrade(method, headers, ctx)
        if ws is not None:
            for message in ws:
                ws.send(message)
        return None, None, None
    srv, err = server.new({"port": port, "log_level": "warn", "connection_limit": 1000, "backlog": 1024}, handle)
    srv.serve()


def serve_gevent_websocket(port):
    from gevent import monkey
    monkey.patch_all()
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.handler import WebSocketHandler

    def app(environ, start_response):
        ws = environ["wsgi.websocket"]
        while True:
            message = ws.receive()
            if message is None:
                break
            ws.send(message)
        return []
    WSGIServer(("127.0.0.1", port), app, handler_class=WebSocketHandler, log=None, backlog=1024).serve_forever()


def serve_websockets(port):
    import asyncio
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        async with serve(echo, "127.0.0.1", port, max_size=None, compression=None):
            await asyncio.get_running_loop().create_future()
    asyncio.run(main())


SERVE = {"lilush_http": serve_lilush, "gevent-websocket": serve_gevent_websocket, "websockets": serve_websockets}


# -- the clients ------------------------------------------------------------------------

def client_frame(size):
    """A masked binary frame of ``size`` bytes (mask 0: the payload goes as it is)."""
    if size < 126:
        head = bytes([0x82, 0x80 | size])
    elif size < 65536:
        head = bytes([0x82, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big")
    return head + b"\0\0\0\0" + b"x" * size


def echo_client(port, frame, size, until, latencies):
    from gevent import socket
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
    sock.sendall(HANDSHAKE)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    assert buf.startswith(b"HTTP/1.1 101"), buf[:100]
    buf = buf.split(b"\r\n\r\n", 1)[1]
    header = 2 if size < 126 else 4 if size < 65536 else 10
    expected = header + size
    while time.monotonic() < until:
        started = time.perf_counter()
        sock.sendall(frame)
        while len(buf) < expected:
            data = sock.recv(262144)
            if not data:
                raise RuntimeError("server closed")
            buf += data
        buf = buf[expected:]
        latencies.append(time.perf_counter() - started)
    sock.sendall(b"\x88\x82\0\0\0\0\x03\xe8")  # a close frame, 1000
    sock.close()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_scenario(port, pid, size, clients, duration):
    import gevent
    latencies = []
    frame = client_frame(size)
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    greenlets = [gevent.spawn(echo_client, port, frame, size, started + duration, latencies) for _ in range(clients)]
    gevent.joinall(greenlets, raise_error=True)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    latencies.sort()
    count = len(latencies)
    return {"msgs": count / elapsed, "p50": latencies[count // 2] * 1000,
            "p99": latencies[min(count - 1, int(count * 0.99))] * 1000, "cpu_us": cpu / max(1, count) * 1e6}


def start(name):
    with stdsocket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, os.path.abspath(__file__), "--serve", name, str(port)]
    if os.cpu_count() and os.cpu_count() > 1:
        command = ["taskset", "-c", "0"] + command
    process = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            stdsocket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    raise SystemExit("%s did not start" % name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, metavar=("NAME", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario; the median is reported")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args(argv)
    if args.serve:
        SERVE[args.serve[0]](int(args.serve[1]))
        return 0
    from gevent import monkey
    monkey.patch_all()
    if os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {1})
    servers = [s for s in args.servers.split(",") if s]
    rows = {}
    for name in servers:
        process, port = start(name)
        try:
            for size in SIZES:
                runs = [run_scenario(port, process.pid, size, args.clients, args.duration) for _ in range(args.repeat)]
                rows[name, size] = sorted(runs, key=lambda r: r["msgs"])[len(runs) // 2]
        finally:
            process.terminate()
            process.wait(10)
    print("WebSocket echo, %d clients, %.0f s per run, median of %d; server on CPU 0, clients on CPU 1. "
          "Latency in ms.\n" % (args.clients, args.duration, args.repeat))
    print("| message | server | messages/s | p50 | p99 | server CPU us/msg |")
    print("|---|---|---:|---:|---:|---:|")
    for size in SIZES:
        for name in servers:
            r = rows[name, size]
            print("| %s | %s | %.0f | %.2f | %.2f | %.1f |" % (_label(size), name, r["msgs"], r["p50"], r["p99"],
                                                              r["cpu_us"]))
    others = [s for s in servers if s != "lilush_http"]
    if "lilush_http" in servers and others:
        print("\n| message | " + " | ".join("lilush_http / %s msgs/s (CPU/msg)" % o for o in others) + " |")
        print("|---|" + "---:|" * len(others))
        for size in SIZES:
            ours = rows["lilush_http", size]
            cells = ["%.2f (%.2f)" % (ours["msgs"] / rows[o, size]["msgs"], rows[o, size]["cpu_us"] / ours["cpu_us"])
                     for o in others]
            print("| %s | %s |" % (_label(size), " | ".join(cells)))
    return 0


def _label(size):
    return "%d B" % size if size < 1024 else "%d KB" % (size // 1024)


if __name__ == "__main__":
    raise SystemExit(main())
