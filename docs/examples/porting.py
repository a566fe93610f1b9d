"""Lilush handler idioms in Python, one path each (porting.lua beside it is the Lua).

    lilush-http porting:handle
"""

import os
from urllib.parse import parse_qs

from lilush_http import server


def handle(method, query, args, headers, body, ctx):
    # [hello]
    if query == "/hello":
        return "Hello!", 200, {"content-type": "text/plain"}
    # [/hello]
    # [args]
    if query == "/greet":
        name = parse_qs(args).get("name", ["stranger"])[0]  # args is the raw query string
        return "Hello, %s!" % name, 200, {"content-type": "text/plain"}
    # [/args]
    # [headers]
    if query == "/whoami":
        agent = headers.get("user-agent", "-")  # names are lower-case, as in Lua
        return "%s %s" % (ctx["client_ip"], agent), 200, {"content-type": "text/plain"}
    # [/headers]
    # [body]
    if query == "/echo" and method == "POST":
        size = len(body or b"")  # bytes, or None without a body (nil in Lua)
        return "got %d bytes" % size, 200, {"content-type": "text/plain"}
    # [/body]
    # [cookies]
    if query == "/login":
        return "welcome", 200, {"set-cookie": ["session=abc; HttpOnly", "theme=dark"]}
    # [/cookies]
    # [cfg-logger]
    if query == "/limits":
        ctx["logger"].log({"event": "limits asked", "ip": ctx["client_ip"]}, "info")
        return "max body %d" % ctx["cfg"]["max_body_size"], 200, {"content-type": "text/plain"}
    # [/cfg-logger]
    # [short-return]
    if query == "/ok":
        return "ok", 200  # no headers, as trailing nils in Lua (a bare "ok" is not a tuple: 500)
    # [/short-return]
    # [socket]
    if query == "/raw":
        ctx["client"].sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nraw")
        return None, None, None  # answered on the socket: nothing more is written
    # [/socket]
    return "not here", 404, {"content-type": "text/plain"}


# [serve]
if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    srv, err = server.new({"ip": "127.0.0.1", "port": port}, handle)
    if srv is None:
        raise SystemExit(err)
    srv.serve()
# [/serve]
