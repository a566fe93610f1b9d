"""The ceiling of this stack: a gevent StreamServer loop that only finds the
blank line and sends a constant response (no parsing, no handler).

    python bench/bare.py PORT [close]

With ``close`` it answers the first request with ``Connection: close`` and
closes (the ceiling of scenario b); otherwise it keeps every connection open
and answers each request alike, pipelined ones in one write (a and e).
"""

import sys

from gevent.server import StreamServer

BODY = b"Hello, World!"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n" + BODY
CLOSE_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
                  b"Connection: close\r\n\r\n" + BODY)


def handle(sock, address):
    """Keep-alive: every complete head in what arrived gets the constant response."""
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


def handle_close(sock, address):
    """Connection: close: one response, then the server closes the socket (StreamServer
    closes it when this returns)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return
        buf += data
    sock.sendall(CLOSE_RESPONSE)


if __name__ == "__main__":
    mode = handle_close if sys.argv[2:] == ["close"] else handle
    StreamServer(("127.0.0.1", int(sys.argv[1])), mode, backlog=1024).serve_forever()
