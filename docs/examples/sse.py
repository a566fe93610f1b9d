"""Server-Sent Events: a generator of events with a heartbeat.

    lilush-http sse:handle        then open http://127.0.0.1:8080/events
"""

import itertools
import json
import time

import gevent

STARTED = time.time()


def state():
    """What each event carries: here, how long the server has been up."""
    return {"uptime": round(time.time() - STARTED, 1)}


def handle(method, query, args, headers, body, ctx):
    if query == "/events":
        def events():
            for i in itertools.count():
                yield "id: %d\nevent: tick\ndata: %s\n\n" % (i, json.dumps(state()))
                gevent.sleep(1)
                yield ": heartbeat\n\n"  # a client that left is noticed at the next write
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
        return events(), 200, headers
    return "not here\n", 404, {"content-type": "text/plain"}
