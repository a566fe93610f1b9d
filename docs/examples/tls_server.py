"""TLS with a default certificate and one per host name (SNI).

    python tls_server.py        serves https://127.0.0.1:8443 with the files under tls/
"""

import os

from lilush_http import server

CONFIG = {
    "ip": "127.0.0.1",
    "port": int(os.environ.get("PORT", "8443")),
    "ssl": {
        "default": {"cert": "tls/default.pem", "key": "tls/default.key"},
        "hosts": {
            "example.com": {"cert": "tls/example.com.pem", "key": "tls/example.com.key"},
            "*.example.org": {"cert": "tls/example.org.pem", "key": "tls/example.org.key"},
        },
    },
}


def handle(method, query, args, headers, body, ctx):
    greeting = "Hello over %s, %s\n" % (ctx["scheme"], ctx["sni"])  # sni: None without SNI
    return greeting, 200, {"content-type": "text/plain"}


if __name__ == "__main__":
    srv, err = server.new(CONFIG, handle)
    if srv is None:
        raise SystemExit(err)  # e.g. "ssl.default.cert: file not found: tls/default.pem"
    srv.serve()
