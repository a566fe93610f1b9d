"""Making room when every slot is taken and a client waits to be accepted.

While the pool is full and the listener's accept queue holds clients, one
greenlet looks at the open connections a few times per ``min_rate_window`` and
frees as many slots as clients wait, in this order:

1. cut the clients making the least progress: a connection waiting for its
   first request, reading a request head or body, or reading its response, that
   moved fewer than ``min_rate`` bytes a second over an interval of
   ``min_rate_window`` seconds (or two round trips, if longer) of watching; so
   a fresh connection gets that long to send its request. Progress is what the
   kernel counted (TCP_INFO bytes received / acknowledged), so bytes the server
   has not yet read count for the client, and the request path pays nothing for
   it. A request read in part gets its 408, as at a deadline;
2. ask busy connections to close after their response: it carries
   ``Connection: close``, so the client (a proxy reusing connections too) knows;
3. when that has not freed a slot within ``min_rate_window``, close the
   connection idle longest between requests (as nginx does).

Every cut, close request and idle close is logged once at info with the reason
and the client's address.
"""

import fcntl
import logging
import socket
import struct
import termios
from array import array

import gevent
from gevent.socket import wait_read

from .. import metrics
from .connection import BODY, HANDLER, HEAD, IDLE, SENDING, monotonic

logger = logging.getLogger("lilush_http")

TCP_INFO_SIZE = 136
# tcpi_unacked (of a listener: its accept queue), tcpi_rtt (us), tcpi_bytes_acked, tcpi_bytes_received
TCP_INFO = struct.Struct("24xI40xI48xQQ")
SEND_BUFFER = 128 * 1024  # the kernel doubles it: 256 KB
WATCHED = (IDLE, HEAD, BODY, SENDING)  # phases where the client owes progress
STAGE = {HANDLER: "response", SENDING: "response"}  # streaming alternates the two


class Admission:
    """Frees slots for waiting clients; ``start`` when the pool becomes full."""

    def __init__(self, connections, cfg):
        self.connections = connections  # the server's set of open Connections
        self.cfg = cfg
        self._greenlet = None
        self._watched = {}  # conn -> (stage, first seen, kernel byte count then)
        self._released = {}  # conn -> when it was asked to close after its response
        self._per_ip = {}  # client address -> open connections, with connections_per_ip set

    def admit(self, conn):
        """Count ``conn`` against its address's ``connections_per_ip``; False when over it."""
        cap = self.cfg["connections_per_ip"]
        if not cap:
            return True
        ip = conn.client_ip
        count = self._per_ip.get(ip, 0)
        if count >= cap:
            logger.info("connection from %s refused with a 503: connections_per_ip %d reached", ip, cap)
            return False
        self._per_ip[ip] = count + 1
        return True

    def leave(self, conn):
        """Undo ``admit`` when an admitted connection ends."""
        count = self._per_ip.get(conn.client_ip)
        if count is not None:
            if count > 1:
                self._per_ip[conn.client_ip] = count - 1
            else:
                del self._per_ip[conn.client_ip]

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
            # Kept for the next time the pool is full (often the next moment): a
            # connection watched long enough is judged then without a new wait.
            self._watched = {c: seen for c, seen in self._watched.items() if not c.closed}
            self._released = {c: t for c, t in self._released.items() if not c.closed}
            self._greenlet = None

    def make_room(self, waiting):
        """Free up to ``waiting`` slots; returns how many were cut, released, evicted."""
        now = monotonic()
        window = self.cfg["min_rate_window"]
        floor = self.cfg["min_rate"]
        slow, busy, idle = self._survey(now, window, floor)
        released = {c: t for c, t in self._released.items() if not c.closed}
        self._released = released

        cut = 0
        slow.sort(key=lambda entry: entry[0])
        for rate, conn, elapsed, moved in slow[:waiting]:
            logger.info("slow client %s cut to free a slot: %d bytes in %.2f s while %s, under min_rate %d bytes/s",
                        conn.client_ip, moved, elapsed, PHASE_WORDS[conn.phase], floor)
            metrics.record_slow_client_cut(conn.phase.value)
            conn.cut()
            cut += 1
        need = waiting - cut - sum(1 for t in released.values() if now - t < window)
        asked = 0
        for conn in busy[:max(0, need)]:
            logger.info("connection from %s asked to close after its response (%s) to free a slot",
                        conn.client_ip, conn.phase.value)
            conn.request_close()
            metrics.record_reclaim("close_requested")
            released[conn] = now
            asked += 1
        need -= asked
        evicted = 0
        if need > 0:
            idle = [c for c in idle if now - c.idle_since >= window and not unread(c.sock)]
            idle.sort(key=lambda c: c.idle_since)
            for conn in idle[:need]:
                logger.info("idle keep-alive connection from %s closed after %.1f s to free a slot",
                            conn.client_ip, now - conn.idle_since)
                conn.evict()
                metrics.record_reclaim("idle")
                evicted += 1
        return cut, asked, evicted


    def _survey(self, now, window, floor):
        """The connections as (slow: (rate, conn, seconds, bytes), busy, idle), updating
        what is watched: a rate is judged over ``window`` seconds (two round trips at least)."""
        watched = {}
        slow = []
        busy = []
        idle = []
        for conn in self.connections:
            phase = conn.phase
            if conn.closed or conn.expired:
                continue
            if phase is IDLE and conn.requests:
                idle.append(conn)
                continue
            if phase not in WATCHED:
                if not conn.close_requested:
                    busy.append(conn)
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
                else:
                    # Kept up over this interval: the next is judged on its own, so a
                    # burst (a kernel buffer filled at once) buys no credit for later.
                    seen = (stage, now, count)
                    if phase is not IDLE and not conn.close_requested:
                        busy.append(conn)  # it may finish its response and close
            watched[conn] = seen
        self._watched = watched
        return slow, busy, idle

PHASE_WORDS = {IDLE: "waiting for its first request", HEAD: "sending a request head",
               BODY: "sending a request body", SENDING: "reading a response"}


def waiting_clients(listener):
    """How many connections wait in the listener's accept queue (Linux), else 1."""
    try:
        info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
        return max(1, TCP_INFO.unpack_from(info)[0])
    except (OSError, struct.error, AttributeError):
        return 1


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
