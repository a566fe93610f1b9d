"""A Flask application, served two ways:

    python flask_app.py                   serves it on http://127.0.0.1:8080
    lilush-http --wsgi flask_app:app      the command line imports it and serves it
"""

import os

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/")
def index():
    return "hello from Flask\n"


@app.route("/upload", methods=["POST"])
def upload():
    size = 0
    for block in iter(lambda: request.stream.read(65536), b""):  # chunked uploads too
        size += len(block)
    return jsonify(received=size)


if __name__ == "__main__":
    from lilush_http import server, wsgi

    port = int(os.environ.get("PORT", "8080"))
    srv, err = server.new({"ip": "127.0.0.1", "port": port}, wsgi.to_handle(app))
    if srv is None:
        raise SystemExit(err)
    srv.serve()
