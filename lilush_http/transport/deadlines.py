"""Phase deadlines for every connection, enforced by one greenlet per server.

A gevent socket timeout arms a timer on every read or write that has to wait,
which costs more than a whole request parse. Instead, a connection records its
deadline before it blocks (``Connection.deadline``), and this watcher wakes a
few times per shortest timeout, shuts down the sockets whose deadline has
passed (waking their readers or writers) and marks them expired, so the
connection ends with the phase's error ("request header timeout", ...).
Deadlines are never enforced early, and late by at most one tick.
"""

import gevent

from .connection import monotonic


class Deadlines:
    """Expires the connections, of the collections it is given, that are past
    their deadline; runs while any of them holds a connection (checked each tick)."""

    def __init__(self, *collections, tick=0.5):
        self.collections = collections  # sets of connections, or mappings whose values are connections
        self.tick = tick
        self._greenlet = None

    @staticmethod
    def tick_for(cfg):
        """A tick of a fifth of the shortest timeout, between 10 ms and half a second."""
        shortest = min(cfg["keepalive_idle_timeout"], cfg["request_header_timeout"],
                       cfg["request_body_timeout"], cfg["response_send_timeout"])
        return min(0.5, max(0.01, shortest / 5.0))

    def retune(self, cfg):
        """A new configuration: tick as its shortest timeout asks."""
        self.tick = self.tick_for(cfg)

    def start(self):
        """Make sure the watcher runs (call when a connection is added)."""
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self):
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self):
        # It looks after a tick, and ends only when a tick finds no connection: a
        # connection's greenlet runs before this one, and a watcher that looked first
        # would find it gone and end, to be spawned again for the next connection.
        try:
            while True:
                gevent.sleep(self.tick)
                if not any(self.collections):
                    break
                now = monotonic()
                for collection in self.collections:
                    conns = collection.values() if hasattr(collection, "values") else collection
                    for conn in list(conns):
                        deadline = conn.deadline
                        if deadline and now >= deadline:
                            conn.expire()
        finally:
            self._greenlet = None
