"""A handler that calls a blocking library (requests) while other clients are served.

    BACKEND_URL=http://127.0.0.1:9000/ python blocking.py
"""

from gevent import monkey; monkey.patch_all()  # noqa: E702  first, before any other import

import os  # noqa: E402

import requests  # noqa: E402

from lilush_http import server  # noqa: E402

BACKEND = os.environ.get("BACKEND_URL", "http://127.0.0.1:9000/")


def handle(method, query, args, headers, body, ctx):
    answer = requests.get(BACKEND, timeout=10)  # waits in this greenlet only
    return answer.content, answer.status_code, {"content-type": "text/plain"}


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    srv, err = server.new({"ip": "127.0.0.1", "port": port}, handle)
    if srv is None:
        raise SystemExit(err)
    srv.serve()
