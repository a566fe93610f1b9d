"""Winding a server down when it stops, and stop() called from another thread.

``WindDown`` accepts what the kernel had queued, closes the listener, closes
idle connections, and waits (bounded) for the requests in flight; ``RemoteStop``
hands a stop() called from another thread to the serving thread's hub.
server.py decides when to stop; this module does the ending.
"""

import threading
import time

import gevent
from gevent.monkey import get_original

from .transport import listeners

# The OS thread's id even when monkeypatching made get_ident() per greenlet.
thread_id = get_original("_thread", "get_ident")
FIRST_REQUEST_GRACE = 1.0  # stopping: seconds a just-accepted connection gets to send its request


class WindDown:
    """Ends a server's connections: its registries of open connections (``connections``),
    admission (the TLS handshakes in progress), WebSocket ``sessions`` and ``deadlines``."""

    def __init__(self, connections, admission, sessions, deadlines):
        self.connections = connections
        self.admission = admission
        self.sessions = sessions
        self.deadlines = deadlines

    def run(self, server, listener, pool, deadline, idle_grace, handing_over):
        """Until ``deadline``: accept what the kernel queued (unless ``handing_over``),
        then close the listener (``server``, a StreamServer); close idle connections (idle
        ``idle_grace`` seconds; one waiting for its first request gets FIRST_REQUEST_GRACE);
        wait for every connection of ``pool`` to end. Then end sessions and whatever is left."""
        while True:
            now = time.monotonic()
            for conn in list(self.connections):
                # requests counts the head being waited for: 1 while waiting for the first
                if conn.idle and now - conn.idle_since >= (idle_grace if conn.requests > 1 else FIRST_REQUEST_GRACE):
                    conn.evict()
            self.admission.cut_handshakes(older_than=FIRST_REQUEST_GRACE)
            if server.started and (handing_over or now >= deadline or not listeners.queued(listener)):
                server.close()  # nothing queued is left to be reset by the last close
            if not server.started and pool.join(timeout=min(0.05, max(0, deadline - now))):
                break
            if now >= deadline:
                break
            if server.started:
                gevent.sleep(0.01)
        self.sessions.join(max(1.0, deadline - time.monotonic()))
        pool.kill(block=True, timeout=1)
        self.deadlines.stop()


class RemoteStop:
    """stop() called from another thread than the serving one: the call is handed
    to the serving thread's hub, and the caller waits until it is done."""

    def __init__(self, stop):
        self.thread = thread_id()
        self.waiting = None  # (arguments, threading.Event) of the stop asked for
        self.wakeup = gevent.get_hub().loop.async_()
        self.wakeup.start(lambda: gevent.spawn(stop, *self.waiting[0]))

    def elsewhere(self):
        return self.thread != thread_id()

    def request(self, timeout, idle_grace, drain_delay=0):
        done = threading.Event()
        self.waiting = ((timeout, idle_grace), done)
        self.wakeup.send()
        done.wait(timeout + drain_delay + 5)

    def done(self):
        """The stop finished (or serving ended): release a waiting caller."""
        if self.waiting is not None:
            self.waiting[1].set()
            self.waiting = None

    def close(self):
        self.wakeup.stop()
        self.wakeup.close()
        self.done()
