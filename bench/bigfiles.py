"""Memory scenario for big files and big bodies, against one lilush_http process:

(a) ``--clients`` connections each GET a ``--file-mb`` static file and read it
    slowly (16 KiB per client every 0.1 s) for ``--seconds``: the server's RSS
    added (the file goes out with sendfile, never into memory), every byte read
    checked against the file;
(b) one ``--upload-mb`` upload through a Flask app that copies
    ``request.stream`` to a file: the server's peak RSS added, and the sha256 of
    what was sent, what the app hashed and what landed on disk.

    python bench/bigfiles.py [--clients 1000] [--file-mb 20] [--seconds 10] [--upload-mb 1024]
"""

import argparse
import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time

from common import rss_mb, start_server
from idle import raise_fd_limit

FLASK_APP = '''
import hashlib, os
import flask

app = flask.Flask("upload")


@app.route("/upload", methods=["POST"])
def upload():
    h = hashlib.sha256()
    size = 0
    with open(os.path.join(os.path.dirname(__file__), "uploaded.bin"), "wb") as out:
        while True:
            block = flask.request.stream.read(256 * 1024)
            if not block:
                break
            h.update(block)
            out.write(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}
'''


class PeakRSS:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` in MB."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = rss_mb(pid)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.peak


def slow_readers(port, count, data, seconds):
    """(clients that got a correct 200 head, bytes read and checked, mismatches)."""
    request = b"GET /big.bin HTTP/1.1\r\nHost: bench\r\n\r\n"
    state = {}
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a slow reader's small window
        sock.sendall(request)
        sock.setblocking(False)
        state[sock] = [b"", 0]  # head bytes until the blank line, then body bytes checked
    deadline = time.monotonic() + seconds
    mismatches = 0
    while time.monotonic() < deadline:
        for sock, st in state.items():
            try:
                piece = sock.recv(16384)
            except BlockingIOError:
                continue
            if st[0] is not None:
                st[0] += piece
                end = st[0].find(b"\r\n\r\n")
                if end < 0:
                    continue
                if not st[0].startswith(b"HTTP/1.1 200 "):
                    mismatches += 1
                piece = st[0][end + 4:]
                st[0] = None
            if data[st[1]:st[1] + len(piece)] != piece:
                mismatches += 1
            st[1] += len(piece)
        time.sleep(0.1)
    heads = sum(1 for st in state.values() if st[0] is None)
    read = sum(st[1] for st in state.values())
    for sock in state:
        sock.close()
    return heads, read, mismatches


def static_scenario(args, workdir):
    root = os.path.join(workdir, "root")
    os.mkdir(root)
    data = os.urandom(1024 * 1024) * args.file_mb  # the content does not matter, only its size
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(data)
    process, port, _ = start_server(workdir, {"connection_limit": args.clients + 100}, "static",
                                    args=("--root", root))
    try:
        time.sleep(0.5)
        before = rss_mb(process.pid)
        peak = PeakRSS(process.pid)
        heads, read, mismatches = slow_readers(port, args.clients, data, args.seconds)
        after = peak.stop()
    finally:
        process.terminate()
        process.wait(10)
    print("(a) %d slow readers of a %d MB file for %s s (connection_limit %d): server RSS %.1f MB -> peak %.1f MB,"
          " added %.1f MB" % (args.clients, args.file_mb, args.seconds, args.clients + 100, before, after,
                              after - before))
    print("    heads received: %d of %d; body bytes read and checked: %d; mismatches: %d"
          % (heads, args.clients, read, mismatches))
    return after - before, mismatches == 0 and heads == args.clients


def upload_scenario(args, workdir):
    app_dir = os.path.join(workdir, "app")
    os.mkdir(app_dir)
    with open(os.path.join(app_dir, "app.py"), "w") as f:
        f.write(FLASK_APP)
    size = args.upload_mb * 1024 * 1024
    config = {"max_body_size": size + 1, "request_body_timeout": 60, "response_send_timeout": 60}
    process, port, _ = start_server(app_dir, config, "upload", args=("--wsgi", "app:app"))
    try:
        time.sleep(0.5)
        before = rss_mb(process.pid)
        peak = PeakRSS(process.pid)
        started = time.monotonic()
        sent = hashlib.sha256()
        block = bytearray(os.urandom(1024 * 1024))
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n"
                         b"Content-Type: application/octet-stream\r\n\r\n" % size)
            for i in range(args.upload_mb):
                block[:8] = i.to_bytes(8, "big")  # every megabyte differs
                sent.update(block)
                sock.sendall(block)
            answer = b""
            while b"}" not in answer:
                piece = sock.recv(65536)
                if not piece:
                    break
                answer += piece
        took = time.monotonic() - started
        after = peak.stop()
    finally:
        process.terminate()
        process.wait(10)
    on_disk = hashlib.sha256()
    with open(os.path.join(app_dir, "uploaded.bin"), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            on_disk.update(chunk)
    import json
    reply = json.loads(answer.partition(b"\r\n\r\n")[2])
    ok = reply["sha256"] == sent.hexdigest() == on_disk.hexdigest() and reply["size"] == size
    print("(b) a %d MB upload through Flask's request.stream to a file in %.1f s: server RSS %.1f MB -> peak %.1f MB,"
          " added %.1f MB" % (args.upload_mb, took, before, after, after - before))
    print("    sha256 sent %s, hashed by the app %s, on disk %s: %s"
          % (sent.hexdigest()[:16], reply["sha256"][:16], on_disk.hexdigest()[:16], "match" if ok else "MISMATCH"))
    return after - before, ok


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--file-mb", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--upload-mb", type=int, default=1024)
    args = parser.parse_args()
    raise_fd_limit(args.clients * 3 + 200)
    workdir = tempfile.mkdtemp(prefix="lilush-bigfiles-")
    try:
        _, static_ok = static_scenario(args, workdir)
        _, upload_ok = upload_scenario(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not (static_ok and upload_ok):
        raise SystemExit("bigfiles: a check failed")


if __name__ == "__main__":
    main()
