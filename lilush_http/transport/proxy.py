"""Reading the PROXY protocol header (v1 or v2) that opens a connection from a
trusted proxy: peeked and taken from the raw socket, before TLS, no further
than the header itself (forwarding.py parses it, sans-I/O)."""

import socket
import time

from .. import forwarding


def read_proxy_header(sock, peer, timeout):
    """The client address of the header on ``sock`` (``peer`` when it names none),
    read within ``timeout`` seconds; raises forwarding.ProxyHeaderError or OSError."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise forwarding.ProxyHeaderError("no complete PROXY header in time")
        sock.settimeout(remaining)
        peeked = sock.recv(forwarding.proxy_header_wanted(data) - len(data), socket.MSG_PEEK)
        if not peeked:
            raise forwarding.ProxyHeaderError("closed before the PROXY header ended")
        header = forwarding.parse_proxy_header(data + peeked)
        if header is not None:
            size = header.size - len(data)
            while size > 0:  # take exactly the header; what follows is HTTP or TLS
                size -= len(sock.recv(size))
            return header.source or peer
        data += sock.recv(len(peeked))  # all of it is header: consume, then wait for more
