"""SLOT for the HTTP/2 driver (branch http2 fills it; see /work/coord/contract.md).

``serve(conn, host, client_ip)`` has the signature of protocols.http1.serve: it
gets the Transport (registered, admitted; the connection preface may already
be in its buffer), the server's ConnectionHost view (``settings``,
``stopping``) and the client address, serves streams through
``exchange.run`` until the connection ends, and returns; the accept step
closes the transport. ``AVAILABLE`` turns true when the driver is here: the
accept step then offers ALPN ``h2`` and looks for the prior-knowledge preface.
"""

AVAILABLE = False
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def serve(conn, host, client_ip):
    raise NotImplementedError("HTTP/2 is not in this build")
