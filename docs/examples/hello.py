"""A Lilush-style handler, served two ways:

    python hello.py                   serves it on http://127.0.0.1:8080
    lilush-http hello:handle          the command line imports it and serves it
"""

import os

from lilush_http import server


def handle(method, query, args, headers, body, ctx):
    if query == "/hello":
        return "Hello, %s!\n" % ctx["client_ip"], 200, {"content-type": "text/plain"}
    return "not here\n", 404, {"content-type": "text/plain"}


if __name__ == "__main__":  # python hello.py; lilush-http imports the module and skips this
    port = int(os.environ.get("PORT", "8080"))
    srv, err = server.new({"ip": "127.0.0.1", "port": port}, handle)
    if srv is None:
        raise SystemExit(err)
    srv.serve()  # blocks until Ctrl-C
