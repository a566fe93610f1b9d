"""The ceiling of this stack: a gevent StreamServer loop that only finds the
blank line and sends a constant response (no parsing, no handler)."""

import sys

from gevent.server import StreamServer

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"


def handle(sock, address):
    buf = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buf += data
        count = buf.count(b"\r\n\r\n")
        if count:
            buf = buf[buf.rfind(b"\r\n\r\n") + 4:]
            sock.sendall(RESPONSE * count)


if __name__ == "__main__":
    StreamServer(("127.0.0.1", int(sys.argv[1])), handle, backlog=1024).serve_forever()
