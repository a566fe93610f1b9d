"""The accept step: one accepted socket up to the protocol driver that serves it.

TCP_NODELAY, admission (slot watching when the pool is full), the PROXY
header from a trusted proxy, the per-address cap (before any TLS work), the
TLS handshake with SNI and ALPN (watched by admission like a client owing its
first request), the connection registry; then ``pick_driver`` chooses
HTTP/2 (ALPN ``h2``, or the prior-knowledge preface on a plain connection)
or HTTP/1.1, the one place where a protocol is chosen.
"""

import logging
import socket
import traceback

from .. import forwarding, metrics
from ..protocols import http1, http2
from . import tls
from .connection import ConnectionEnded, Transport
from .proxy import read_proxy_header

logger = logging.getLogger("lilush_http")


def alpn_offered(cfg):
    """The protocols TLS offers through ALPN, in order of preference (h2 unless ``http2`` is off)."""
    return ("h2", "http/1.1") if http2.AVAILABLE and cfg["http2"] else ("http/1.1",)


def pick_driver(conn, alpn, cfg):
    """The driver for ``conn``: HTTP/2 for ALPN ``h2`` or, on a plain connection, a
    client opening with the HTTP/2 preface (left in the buffer); else HTTP/1.1."""
    if http2.AVAILABLE and cfg["http2"] and (
            alpn == "h2" or (alpn is None and not conn.tls
                             and conn.starts_with(http2.PREFACE, cfg["keepalive_idle_timeout"]))):
        return http2.serve
    return http1.serve


def set_nodelay(sock):
    """Turn TCP_NODELAY on for ``sock``; True when it was on already (inherited from
    the listener, so later sockets of this listener need not be asked)."""
    try:
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
            return True
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # not TCP (a unix socket)
    return False


class Acceptor:
    """The StreamServer handler of one Server. ``host`` is the server's view for
    drivers (``settings``, ``stopping``); the sets are the server's registries."""

    def __init__(self, host, connections, admission, deadlines, sessions):
        self.host = host
        self.connections = connections  # open transports (stop, drain, deadlines, metrics, admission)
        self.admission = admission  # it also watches the TLS handshakes in progress
        self.deadlines = deadlines
        self.sessions = sessions
        self.pool = self.listener = None
        self.nodelay_inherited = False  # accepted sockets come with TCP_NODELAY from the listener

    def open(self, pool, listener):
        """Serving starts: the pool the connection greenlets run in, the listener.
        TCP_NODELAY goes on the listener: Linux gives it to every accepted socket,
        which then needs no setsockopt of its own (see ``serve``)."""
        self.pool = pool
        self.listener = listener
        self.nodelay_inherited = False
        try:
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # a unix socket

    def serve(self, sock, address):
        """One connection's greenlet: admit, PROXY, TLS, drive the protocol, close."""
        if not self.nodelay_inherited:
            self.nodelay_inherited = set_nodelay(sock)
        self.admission.start(self.pool, self.listener, sock)
        settings = self.host.settings
        client_ip = address[0] if isinstance(address, tuple) else forwarding.UNIX_PEER
        if settings.cfg["proxy_protocol"]:
            client_ip = self._proxy_header(sock, client_ip, settings)
            if client_ip is None:
                sock.close()
                return
        if not self.admission.admit(client_ip):  # before any TLS work is spent on it
            self._refuse(sock, client_ip, settings)
            return
        try:
            self._serve_admitted(sock, client_ip, settings)
        finally:
            self.admission.leave(client_ip)

    def _serve_admitted(self, sock, client_ip, settings):
        """TLS, the Transport and its registration, the protocol driver; then close."""
        sni = alpn = None
        if settings.certificates is not None:
            sock, sni, alpn = self._handshake(sock, client_ip, settings)
            if sock is None:
                return
        conn = Transport(sock, sni, settings.certificates is not None, client_ip, self.sessions, alpn)
        self.connections.add(conn)
        self.deadlines.start()
        try:
            pick_driver(conn, alpn, settings.cfg)(conn, self.host, client_ip)
        except ConnectionEnded:  # gone (or silent) before its first bytes told the protocol
            pass
        except Exception:
            logger.error("connection from %s failed:\n%s", client_ip, traceback.format_exc())
        finally:
            self.connections.discard(conn)
            recorder = self.host.settings.recorder
            if recorder is not None:
                recorder.count_received(conn.take_received())
            conn.close()

    @staticmethod
    def _refuse(sock, client_ip, settings):
        """Over connections_per_ip: a plain connection gets a 503; a TLS one is closed
        before its handshake (a response would need one)."""
        if settings.certificates is not None:
            sock.close()
            return
        conn = Transport(sock, client_ip=client_ip)
        http1.error_reply(conn, 503, "too many connections from %s" % client_ip)
        conn.close()

    def _proxy_header(self, sock, peer, settings):
        """The client address of the PROXY header a trusted proxy must send, or None."""
        if not settings.trusted[peer]:
            logger.debug("connection from %s: not a trusted proxy, no PROXY header accepted", peer)
            return None
        try:
            return read_proxy_header(sock, peer, settings.cfg["request_header_timeout"])
        except (forwarding.ProxyHeaderError, OSError) as exc:
            logger.debug("connection from %s: %s", peer, exc)
            return None

    def _handshake(self, sock, client_ip, settings):
        """(TLS socket, SNI, ALPN), or (None, None, None) when the handshake failed."""
        # Watched by admission as a client owing its first bytes: cut when slow and the pool is full.
        with self.admission.handshaking(sock, client_ip):
            try:
                return settings.certificates.handshake(sock, settings.cfg["tls_handshake_timeout"])
            except tls.HandshakeFailed as exc:
                logger.debug("connection from %s: %s", client_ip, exc)
                metrics.record_tls_handshake_failure()
                if exc.plain_http is not None:  # a readable 400 instead of a reset
                    conn = Transport(exc.plain_http)
                    http1.error_reply(conn, 400, "Plain HTTP request sent to a TLS port")
                    conn.close()
                sock.close()
                return None, None, None
