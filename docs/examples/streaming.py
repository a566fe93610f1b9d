"""Streamed responses: a generator sent chunk by chunk, and a file sent with sendfile.

    lilush-http streaming:handle
"""

import gevent


def handle(method, query, args, headers, body, ctx):
    if query == "/count":
        def count():
            for i in range(5):
                yield "line %d\n" % i
                gevent.sleep(0.2)  # the client has each line as soon as it is yielded
        return count(), 200, {"content-type": "text/plain"}
    if query == "/download":
        return open(__file__, "rb"), 200, {"content-type": "application/octet-stream"}
    return "not here\n", 404, {"content-type": "text/plain"}
