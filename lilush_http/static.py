"""A static file handler: what ``lilush-http`` serves when no handler is named.

GET and HEAD only (405 otherwise), content types from the file name,
``index.html`` for directories (else a listing), ``If-Modified-Since`` answered
with 304. Paths are percent-decoded, then resolved with symlinks followed, and
anything that lands outside the root, or names a hidden (dot) file, is a 404.
"""

import html
import mimetypes
import os
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote, unquote

TEXT = {"content-type": "text/plain; charset=utf-8"}


def make_handle(root, listing=True):
    """A Lilush-style handler serving the files under ``root``."""
    root = os.path.realpath(root)

    def handle(method, query, args, headers, body, ctx):
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed\n", 405, dict(TEXT, allow="GET, HEAD")
        path = resolve(root, query)
        if path is None:
            return "404 Not Found\n", 404, TEXT
        if os.path.isdir(path):
            if not query.endswith("/"):
                # One leading slash: '//host/dir/' would be a protocol-relative URL,
                # an open redirect to another host.
                location = "/" + query.lstrip("/") + "/" + ("?" + args if args else "")
                return "", 301, {"location": location}
            index = os.path.join(path, "index.html")
            if os.path.isfile(index):
                return send_file(index, headers)
            if listing:
                return directory_listing(path, query), 200, {"content-type": "text/html; charset=utf-8"}
            return "404 Not Found\n", 404, TEXT
        if not os.path.isfile(path) or query.endswith("/"):  # 'file.txt/' names no directory
            return "404 Not Found\n", 404, TEXT
        return send_file(path, headers)

    return handle


def resolve(root, query):
    """The real path under ``root`` that the URL path names, or None if it escapes
    the root, is hidden, or is not a valid path."""
    try:
        decoded = unquote(query, errors="strict")
    except UnicodeDecodeError:
        return None
    if "\x00" in decoded or "\\" in decoded:
        return None
    parts = [p for p in decoded.split("/") if p and p != "."]
    if any(p == ".." or p.startswith(".") for p in parts):
        return None
    path = os.path.realpath(os.path.join(root, *parts))
    if path != root and not path.startswith(root + os.sep):
        return None  # a symlink pointing out of the root
    return path


def content_type(path):
    kind, encoding = mimetypes.guess_type(path)
    if kind is None or encoding is not None:
        return "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        return kind + "; charset=utf-8"
    return kind


def send_file(path, headers):
    try:
        stat = os.stat(path)
        modified = int(stat.st_mtime)
        since = headers.get("if-modified-since")
        if since:
            try:
                if int(parsedate_to_datetime(since).timestamp()) >= modified:
                    return None, 304, {"last-modified": formatdate(modified, usegmt=True)}
            except (TypeError, ValueError):
                pass
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return "404 Not Found\n", 404, TEXT
    return data, 200, {"content-type": content_type(path), "last-modified": formatdate(modified, usegmt=True)}


def directory_listing(path, query):
    names = sorted(n for n in os.listdir(path) if not n.startswith("."))
    title = html.escape(unquote(query))
    items = []
    for name in names:
        slash = "/" if os.path.isdir(os.path.join(path, name)) else ""
        items.append('<li><a href="%s%s">%s%s</a></li>' % (quote(name), slash, html.escape(name), slash))
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of %s</title></head>\n"
            "<body><h1>Index of %s</h1>\n<ul>\n%s\n</ul>\n<p>lilush_http</p></body></html>\n"
            % (title, title, "\n".join(items)))
