"""The pool of connection greenlets: gevent's Pool, with ``connection_limit`` slots,
its per-connection path (spawn, full, the discard at the end) folded into one
call each.

gevent's Pool spreads those over five to fifteen pure-Python calls per
connection (``spawn`` -> ``start`` -> ``add`` -> ``Group.add``, ``full`` ->
``free_count`` -> ``__len__``, ...), which on a Connection: close load cost
more than the handler. Same semaphore, same sets, same events: StreamServer
(which waits on ``_semaphore`` for a free slot), ``join``, ``kill`` and
``discard`` work on it as on a Pool.
"""

from gevent.pool import Pool, PoolFull


class ConnectionPool(Pool):
    """A gevent Pool of ``size`` greenlets whose hot methods make no nested calls."""

    def spawn(self, *args, **kwargs):
        """Start a greenlet running ``args[0](*args[1:], **kwargs)`` in a free slot
        (waiting for one, as Pool.spawn does)."""
        greenlet = self.greenlet_class(*args, **kwargs)
        if not self._semaphore.acquire():
            raise PoolFull()
        greenlet.rawlink(self._discard)
        self.greenlets.add(greenlet)
        self._empty_event.clear()
        greenlet.start()
        return greenlet

    def full(self):
        """No slot is free: spawn would wait."""
        return self.size is not None and len(self.greenlets) >= self.size

    def _discard(self, greenlet):
        """A greenlet ended (or left the pool): its slot is free."""
        greenlets = self.greenlets
        greenlets.discard(greenlet)
        self.dying.discard(greenlet)
        if not greenlets:
            self._empty_event.set()
        self._semaphore.release()
