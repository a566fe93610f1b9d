"""The same application for every server under test: a 13-byte hello, a 100 KB
HTML page (gzip when accepted), the same page made anew on every request
(/dynamic: no cache can help), and a POST that answers the body's length."""

import itertools
import zlib

HELLO = b"Hello, World!"
PAGE = ("<!DOCTYPE html><html><head><title>bench</title></head><body>\n" + "".join(
    "<p class=\"row\">Row %d: the quick brown fox jumps over the lazy dog, %d times.</p>\n" % (i, i * 7)
    for i in range(1400)) + "</body></html>\n").encode()[:100 * 1024]


_serial = itertools.count()


def dynamic_page():
    """PAGE with a serial number in front: a different 100 KB body every time."""
    return b"<!-- %d -->" % next(_serial) + PAGE


def gzip_body(data):
    encoder = zlib.compressobj(6, zlib.DEFLATED, 31)
    return encoder.compress(data) + encoder.flush()


# -- lilush_http (compression is the server's, from its config) -----------------

def hello(method, query, args, headers, body, ctx):
    if method == "POST":
        return str(len(body or b"")), 200, {"content-type": "text/plain"}
    if query == "/page":
        return PAGE, 200, {"content-type": "text/html"}
    if query == "/dynamic":
        return dynamic_page(), 200, {"content-type": "text/html"}
    return HELLO, 200, {"content-type": "text/plain"}


# -- WSGI: gevent.pywsgi and gunicorn -k gevent -----------------------------------

def wsgi_app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        data = str(len(environ["wsgi.input"].read(size))).encode()
        headers = [("Content-Type", "text/plain")]
    elif environ["PATH_INFO"] in ("/page", "/dynamic"):
        data = PAGE if environ["PATH_INFO"] == "/page" else dynamic_page()
        headers = [("Content-Type", "text/html"), ("Vary", "Accept-Encoding")]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            data = gzip_body(data)
            headers.append(("Content-Encoding", "gzip"))
    else:
        data = HELLO
        headers = [("Content-Type", "text/plain")]
    headers.append(("Content-Length", str(len(data))))
    start_response("200 OK", headers)
    return [data]


# -- ASGI: uvicorn ------------------------------------------------------------------

async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain")]
    if scope["method"] == "POST":
        size = 0
        more = True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        data = str(size).encode()
    elif scope["path"] == "/dynamic":  # compressed by GZipMiddleware (asgi_gzip_app)
        data = dynamic_page()
        headers = [(b"content-type", b"text/html")]
    elif scope["path"] == "/page":
        data = PAGE
        headers = [(b"content-type", b"text/html"), (b"vary", b"Accept-Encoding")]
        if any(k == b"accept-encoding" and b"gzip" in v for k, v in scope["headers"]):
            data = gzip_body(data)
            headers.append((b"content-encoding", b"gzip"))
    else:
        data = HELLO
    headers.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def asgi_gzip_app(scope, receive, send):
    """asgi_app behind Starlette's GZipMiddleware, at the level lilush_http uses (6)."""
    global _gzip_app
    if _gzip_app is None:
        from starlette.middleware.gzip import GZipMiddleware
        _gzip_app = GZipMiddleware(asgi_app, minimum_size=4096, compresslevel=6)
    await _gzip_app(scope, receive, send)


_gzip_app = None
