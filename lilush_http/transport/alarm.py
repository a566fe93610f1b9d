"""One timer for a greenlet's many short waits, each with its own deadline.

A ``gevent.Timeout`` per wait creates and cancels a timer every time, which a
WebSocket session would pay per message. An ``Alarm`` is armed once, for the
earliest deadline asked; when it rings it looks at the deadline of the wait in
progress (if any), wakes the waiter with ``Rang`` when that has passed, and
otherwise re-arms itself for it. Waits whose deadline only moves later (the
keep-alive deadline of a busy session) cost no timer at all.
"""

from time import monotonic

from gevent import get_hub, getcurrent

NEVER = float("inf")


class Rang(BaseException):
    """Thrown into the waiting greenlet when its deadline passed (a BaseException,
    like gevent.Timeout, so that no ``except Exception`` of the operation swallows it)."""


class Alarm:
    """``wait(operation, argument, deadline)``: ``operation(argument)``, interrupted
    by ``Rang`` if ``deadline`` (monotonic seconds) passes first; ``cancel()`` at the end."""

    __slots__ = ("_timer", "_rings_at", "_deadline", "_waiter")

    def __init__(self):
        self._timer = None
        self._rings_at = NEVER
        self._deadline = NEVER
        self._waiter = None

    def wait(self, operation, argument, deadline):
        if deadline < self._rings_at:
            self._arm(deadline)
        self._deadline = deadline
        self._waiter = getcurrent()
        try:
            return operation(argument)
        finally:
            self._waiter = None

    def cancel(self):
        """Stop the timer (the session is over)."""
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self._rings_at = NEVER

    def _arm(self, deadline):
        if self._timer is not None:
            self._timer.close()
        self._timer = get_hub().loop.timer(max(0.0, deadline - monotonic()), ref=False)
        self._timer.start(self._ring, update=True)
        self._rings_at = deadline

    def _ring(self):
        """The timer's callback, in the hub: wake the waiter whose deadline passed."""
        self._timer = None
        self._rings_at = NEVER
        waiter = self._waiter
        if waiter is None:  # nobody waits: the next wait arms the alarm again
            return
        if monotonic() < self._deadline:
            self._arm(self._deadline)
            return
        self._waiter = None
        waiter.throw(Rang)
