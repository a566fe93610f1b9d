"""Making room when every slot is taken and a client waits to be accepted.

While the pool is full and the listener's accept queue holds clients, one
greenlet looks at the open connections (and the TLS handshakes in progress) a
few times per ``min_rate_window`` and frees as many slots as clients wait, in
this order:

1. cut the clients making the least progress: a TLS handshake, a connection
   waiting for its first request, reading a request head or body, or reading
   its response, that moved fewer than ``min_rate`` bytes a second over an
   interval of ``min_rate_window`` seconds (or two round trips, if longer) of
   watching; so a fresh connection gets that long to send its ClientHello or its
   request. Progress is what the kernel counted (TCP_INFO bytes received /
   acknowledged), so bytes the server has not yet read count for the client,
   and the request path pays nothing for it. A request read in part gets its
   408, as at a deadline;
2. rotate the slots: ask the connections that were served most (busy, or
   between requests) to close after their next response, which carries
   ``Connection: close``, so the client, a proxy reusing connections too, knows
   before it sends another request on it;
3. only when that has not freed a slot: close a keep-alive connection idle
   longer than ``IDLE_REUSE_WINDOW`` (longest idle first). Closing a connection
   a proxy may be reusing at that moment loses the request it sends (nginx does
   not retry a POST), so this is the last resort.

Every cut and idle close is logged once at info with the reason and the
client's address; close requests, which rotate the slots many times a second
under keep-alive load, at debug, with an info line counting them once a second.
"""

import fcntl
import logging
import socket
import struct
import termios
from array import array
from contextlib import contextmanager
from itertools import chain

import _socket

import gevent
from gevent.socket import wait_read

from .. import metrics
from .connection import BODY, HANDLER, HANDSHAKE, HEAD, IDLE, SENDING, monotonic, shutdown
from .listeners import TCP_INFO_SIZE, queued

logger = logging.getLogger("lilush_http")

# tcpi_unacked (of a listener: its accept queue), tcpi_rtt (us), tcpi_bytes_acked, tcpi_bytes_received
TCP_INFO = struct.Struct("24xI40xI48xQQ")
SEND_BUFFER = 128 * 1024  # the kernel doubles it: 256 KB
WATCHED = (HANDSHAKE, IDLE, HEAD, BODY, SENDING)  # phases where the client owes progress
STAGE = {HANDLER: "response", SENDING: "response"}  # streaming alternates the two
# Seconds a keep-alive connection must have been idle before it may be closed to free a slot:
# longer than a busy proxy leaves a pooled upstream connection unused before reusing it.
IDLE_REUSE_WINDOW = 2.0


class Admission:
    """Frees slots for waiting clients; ``start`` when the pool becomes full."""

    def __init__(self, connections, cfg):
        self.connections = connections  # the server's set of open Connections
        self.cfg = cfg
        self._greenlet = None
        self._watched = {}  # conn -> (stage, first seen, kernel byte count then)
        self._released = {}  # conn -> when it was asked to close after its response
        self._per_ip = {}  # client address -> open connections, with connections_per_ip set
        self.handshakes = set()  # Handshake: accepted TLS sockets still in their handshake
        self._asked = 0  # connections asked to close since the last log line about it
        self._asked_logged = 0.0

    def admit(self, client_ip):
        """Count a new connection against ``connections_per_ip``; False when over it."""
        cap = self.cfg["connections_per_ip"]
        if not cap:
            return True
        count = self._per_ip.get(client_ip, 0)
        if count >= cap:
            logger.info("connection from %s refused: connections_per_ip %d reached", client_ip, cap)
            return False
        self._per_ip[client_ip] = count + 1
        return True

    def leave(self, client_ip):
        """Undo ``admit`` when an admitted connection ends."""
        count = self._per_ip.get(client_ip)
        if count is not None:
            if count > 1:
                self._per_ip[client_ip] = count - 1
            else:
                del self._per_ip[client_ip]

    @contextmanager
    def handshaking(self, sock, client_ip):
        """While the block runs (a TLS handshake on ``sock``), the connection is watched
        as a client owing its first bytes: cut when slow and the pool is full."""
        handshake = Handshake(sock, client_ip)
        self.handshakes.add(handshake)
        try:
            yield handshake
        finally:
            handshake.closed = True
            self.handshakes.discard(handshake)

    def cut_handshakes(self, older_than=0.0):
        """End the handshakes in progress for ``older_than`` seconds or more (the server stops)."""
        now = monotonic()
        for handshake in list(self.handshakes):
            if now - handshake.since >= older_than:
                handshake.cut()

    def start(self, pool, listener, sock):
        """Call on each accept: make sure the watcher runs while ``pool`` is full; a
        connection accepted then gets a bounded kernel send buffer (``SEND_BUFFER``),
        so a slow reader ties up little memory and its cut costs little."""
        if pool.full():
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            except OSError:
                pass
            if self._greenlet is None:
                self._greenlet = gevent.spawn(self._run, pool, listener)

    def stop(self):
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self, pool, listener):
        try:
            fd = listener.fileno()
            while pool.full():
                wait_read(fd)  # a client waits to be accepted
                if not pool.full():
                    break
                self.make_room(waiting_clients(listener))
                gevent.sleep(min(0.05, max(0.005, self.cfg["min_rate_window"] / 5.0)))
        except (OSError, ValueError):  # the listener closed under us: the server stops
            pass
        finally:
            self._report_asked(0, monotonic(), at_once=True)
            # Kept for the next time the pool is full (often the next moment): a
            # connection watched long enough is judged then without a new wait.
            self._watched = {c: seen for c, seen in self._watched.items() if not c.closed}
            self._released = {c: t for c, t in self._released.items() if not c.closed}
            self._greenlet = None

    def make_room(self, waiting):
        """Free up to ``waiting`` slots; returns how many were cut, released, evicted."""
        now = monotonic()
        slow, releasable, idle = self._survey(now)
        released = {c: t for c, t in self._released.items() if not c.closed}
        self._released = released
        cut = 0
        slow.sort(key=lambda entry: entry[0])
        for rate, conn, elapsed, moved in slow[:waiting]:
            logger.info("slow client %s cut to free a slot: %d bytes in %.2f s while %s, under min_rate %d bytes/s",
                        conn.client_ip, moved, elapsed, PHASE_WORDS[conn.phase], self.cfg["min_rate"])
            metrics.record_slow_client_cut(conn.phase.value)
            conn.cut()
            cut += 1
        window = self.cfg["min_rate_window"]
        need = waiting - cut - sum(1 for t in released.values() if now - t < window)
        releasable.sort(key=lambda c: c.requests, reverse=True)  # the most served give way first
        asked = 0
        for conn in releasable[:max(0, need)]:
            logger.debug("connection from %s asked to close after its response (%s, %d requests) to free a slot",
                         conn.client_ip, conn.phase.value, conn.requests)
            conn.request_close()
            metrics.record_reclaim("close_requested")
            released[conn] = now
            asked += 1
        self._report_asked(asked, now)
        need -= asked
        evicted = 0
        if need > 0:
            idle.sort(key=lambda c: c.idle_since)
            for conn in idle[:need]:
                logger.info("idle keep-alive connection from %s closed after %.1f s to free a slot",
                            conn.client_ip, now - conn.idle_since)
                conn.evict()
                metrics.record_reclaim("idle")
                evicted += 1
        return cut, asked, evicted

    def _report_asked(self, asked, now, at_once=False):
        """Log at info, at most once a second, how many connections were asked to
        close (under keep-alive load the slots rotate many times a second)."""
        self._asked += asked
        if self._asked and (at_once or now - self._asked_logged >= 1.0):
            logger.info("%d connections asked to close after their response to free a slot each for waiting"
                        " clients (the most served first)", self._asked)
            self._asked = 0
            self._asked_logged = now

    def _survey(self, now):
        """The open connections sorted for make_room: (slow: (rate, conn, seconds watched,
        bytes moved), releasable: served and keeping up, idle: past IDLE_REUSE_WINDOW)."""
        window = self.cfg["min_rate_window"]
        floor = self.cfg["min_rate"]
        watched = {}
        slow, releasable, idle = [], [], []
        for conn in chain(self.connections, self.handshakes):
            phase = conn.phase
            if conn.closed or conn.expired:
                continue
            served = conn.requests > 1 or phase is not IDLE  # requests counts the head being waited for
            if phase is IDLE and served:  # between two requests of a keep-alive connection
                if now - conn.idle_since >= max(window, IDLE_REUSE_WINDOW) and not unread(conn.sock):
                    idle.append(conn)
                elif not conn.close_requested:
                    releasable.append(conn)
                continue
            if phase not in WATCHED:
                if not conn.close_requested:
                    releasable.append(conn)
                continue
            counts = tcp_counts(conn.sock)
            if counts is None:
                continue
            rtt, acked, received = counts
            count = acked if phase is SENDING else received
            stage = (conn.requests, STAGE.get(phase, phase))
            seen = self._watched.get(conn)
            if seen is None or seen[0] != stage:
                seen = (stage, now, count)
            elapsed = now - seen[1]
            rate = (count - seen[2]) / elapsed if elapsed > 0 else 0.0
            if elapsed >= max(window, 2 * rtt):
                if rate < floor and (phase is SENDING or not unread(conn.sock)):
                    slow.append((rate, conn, elapsed, count - seen[2]))
                    watched[conn] = seen
                    continue
                # Kept up over this interval: the next is judged on its own, so a
                # burst (a kernel buffer filled at once) buys no credit for later.
                seen = (stage, now, count)
            watched[conn] = seen
            if served and conn.requests and not conn.close_requested:
                releasable.append(conn)
        self._watched = watched
        return slow, releasable, idle


class Handshake:
    """An accepted TLS socket in its handshake, as make_room sees a connection: a
    client owing its first bytes (phase "handshake"), cut by shutting it down."""

    __slots__ = ("fd", "client_ip", "closed", "since")
    phase = HANDSHAKE
    requests = 0
    expired = False
    close_requested = False

    def __init__(self, sock, client_ip):
        self.fd = sock.fileno()  # the TLS socket takes the descriptor over
        self.client_ip = client_ip
        self.closed = False
        self.since = monotonic()

    @property
    def sock(self):
        return self  # what tcp_counts and unread ask: getsockopt and fileno

    def fileno(self):
        return self.fd

    def getsockopt(self, *args):
        sock = _socket.socket(fileno=self.fd)
        try:
            return sock.getsockopt(*args)
        finally:
            sock.detach()

    def cut(self):
        shutdown(self.fd, socket.SHUT_RDWR)  # the handshake fails at once


PHASE_WORDS = {HANDSHAKE: "in its TLS handshake", IDLE: "waiting for its first request", HEAD: "sending a request head",
               BODY: "sending a request body", SENDING: "reading a response"}


def waiting_clients(listener):
    """How many connections wait in the listener's accept queue (Linux), at least 1."""
    return max(1, queued(listener) or 1)


def tcp_counts(sock):
    """(round-trip time in seconds, bytes the client acknowledged, bytes received from
    it) per the kernel, or None."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
        _, rtt, acked, received = TCP_INFO.unpack_from(info)
        return rtt / 1e6, acked, received
    except (OSError, struct.error, AttributeError, ValueError):
        return None


def unread(sock):
    """Whether bytes from the client wait in the kernel, unread by the server."""
    buf = array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    except (OSError, ValueError):
        return False
    return buf[0] > 0
