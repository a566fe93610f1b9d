"""A static file handler: what ``lilush-http`` serves when no handler is named.

GET and HEAD only (405 otherwise), content types from the file name,
``index.html`` for directories (else a listing, unless turned off). Paths are
percent-decoded, then resolved with symlinks followed, and anything that lands
outside the root, or names a hidden (dot) file, is a 404.

``send_file`` is also for handlers: byte ranges (RFC 9110 section 14), the
validators ETag and Last-Modified with conditional requests (section 13),
precompressed ``FILE.br``/``FILE.gz`` siblings, and the body as a
``FileRange`` that the server sends with sendfile (bounded reads under TLS),
never the whole file in memory. The range and validator rules are plain
functions of values, tested without files or sockets.
"""

import html
import mimetypes
import os
import re
import secrets
import stat as statmodule
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote, unquote

from .compression import parse_accept_encoding
from .transport.connection import BLOCK_SIZE

TEXT = {"content-type": "text/plain; charset=utf-8"}
# Types the platform's mimetypes table may lack or get wrong (RFC 9239 for JavaScript).
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
         ".webp": "image/webp", ".avif": "image/avif", ".svg": "image/svg+xml", ".json": "application/json"}
# Precompressed siblings, in order of preference at equal weight.
SIBLINGS = (("br", ".br"), ("gzip", ".gz"))
MAX_RANGES = 16  # more in one request is abuse (RFC 9110 section 14.2): the whole file instead
INLINE_COMPRESSED = 256 * 1024  # files up to this size that get compressed are read whole (see below)
MIN_RANGE_GAP = 80  # ranges closer than a part header are abuse too (they cost more than they save)
_ENTITY_TAG = re.compile(r'(W/)?"[^"]*"')


def make_handle(root, listing=True, cache_control=None):
    """A Lilush-style handler serving the files under ``root``; ``listing`` false
    answers 404 for a directory without index.html; ``cache_control`` is sent
    with every file."""
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
                return inline_if_compressed(send_file(index, method, headers, cache_control), headers, ctx)
            if listing:
                return directory_listing(path, query), 200, {"content-type": "text/html; charset=utf-8"}
            return "404 Not Found\n", 404, TEXT
        if not os.path.isfile(path) or query.endswith("/"):  # 'file.txt/' names no directory
            return "404 Not Found\n", 404, TEXT
        return inline_if_compressed(send_file(path, method, headers, cache_control), headers, ctx)

    return handle


def inline_if_compressed(answer, headers, ctx):
    """A small whole file the server will compress, as bytes: the server then
    compresses it once and serves it from its cache, where a file body would be
    compressed again for every request."""
    content, status, response_headers = answer
    if (status != 200 or type(content) is not FileRange or content.length > INLINE_COMPRESSED
            or "content-encoding" in response_headers or not headers.get("accept-encoding")):
        return answer
    compression = ctx["cfg"]["compression"]
    kind = response_headers["content-type"].partition(";")[0]
    if not compression["enabled"] or kind not in compression["types"]:
        return answer
    try:
        return content.read(), status, response_headers
    finally:
        content.close()


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
    """The Content-Type for a file name; text types get charset=utf-8."""
    kind = TYPES.get(os.path.splitext(path)[1].lower())
    if kind is None:
        kind, encoding = mimetypes.guess_type(path)
        if kind is None or encoding is not None:
            return "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        return kind + "; charset=utf-8"
    return kind


# -- sending a file --------------------------------------------------------------------


class FileRange:
    """``length`` bytes of an open file from ``offset``: a body the server sends with
    sendfile on plain sockets and in bounded reads under TLS. Owns the descriptor."""

    __slots__ = ("fd", "offset", "length", "position")

    def __init__(self, fd, offset, length):
        self.fd = fd
        self.offset = offset
        self.length = length
        self.position = offset

    def fileno(self):
        return self.fd

    def tell(self):
        return self.position

    def read(self, size=-1):
        left = self.offset + self.length - self.position
        data = os.pread(self.fd, left if size < 0 else min(size, left), self.position) if left > 0 else b""
        self.position += len(data)
        return data

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class MultipartRanges:
    """The ``multipart/byteranges`` body of several ranges, read in bounded blocks."""

    def __init__(self, fd, parts, closing):
        self.fd = fd
        self.parts = parts  # [(part header bytes, start, stop)]
        self.closing = closing

    def __iter__(self):
        for header, start, stop in self.parts:
            yield header
            while start < stop:
                data = os.pread(self.fd, min(BLOCK_SIZE, stop - start), start)
                if not data:
                    return  # the file shrank: the server sees the short body and ends the connection
                start += len(data)
                yield data
        yield self.closing

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def send_file(path, method="GET", headers=None, cache_control=None):
    """``(content, status, headers)`` serving the file at ``path`` to a request with
    this ``method`` and ``headers``: 200, 206 for ranges, 304/412 from validators,
    416 for an unsatisfiable range, 404 if it is not a readable regular file.

    A ``FILE.br`` or ``FILE.gz`` beside it is sent instead, with Content-Encoding,
    when the request's Accept-Encoding takes that coding (ranges then count the
    encoded bytes). ``cache_control``, when given, goes on every answer but 404.
    """
    headers = headers or {}
    opened = _open(path, headers.get("accept-encoding"))
    if opened is None:
        return "404 Not Found\n", 404, TEXT
    fd, stat, coding, varies = opened
    try:
        size = stat.st_size
        ctype = content_type(path)
        tag = etag(stat)
        modified = int(stat.st_mtime)
        meta = {"etag": tag, "last-modified": formatdate(modified, usegmt=True)}
        if cache_control:
            meta["cache-control"] = cache_control
        if varies:
            meta["vary"] = "Accept-Encoding"
        if coding:
            meta["content-encoding"] = coding  # on a 304 too: no coding is to be added on the fly
        status = precondition(method, headers, tag, modified)
        if status == 304:
            os.close(fd)
            return None, 304, dict(meta, **{"content-type": ctype})
        if status == 412:
            os.close(fd)
            return "412 Precondition Failed\n", 412, TEXT
        meta["accept-ranges"] = "bytes"
        ranges = requested_ranges(method, headers, size, tag, modified)
        if ranges is None:
            return FileRange(fd, 0, size), 200, dict(meta, **{"content-type": ctype})
        if not ranges:
            os.close(fd)
            return "416 Range Not Satisfiable\n", 416, dict(TEXT, **{"content-range": "bytes */%d" % size})
        if len(ranges) == 1:
            start, stop = ranges[0]
            meta.update({"content-type": ctype, "content-range": "bytes %d-%d/%d" % (start, stop - 1, size),
                         "content-length": str(stop - start)})
            return FileRange(fd, start, stop - start), 206, meta
        body, length, boundary = multipart(fd, ranges, size, ctype)
        meta.update({"content-type": "multipart/byteranges; boundary=" + boundary, "content-length": str(length)})
        return body, 206, meta
    except BaseException:
        os.close(fd)
        raise


def _open(path, accept_encoding):
    """(descriptor, stat, coding or None, whether siblings exist) of what to send,
    or None when ``path`` is not a readable regular file."""
    fd = _open_regular(path)
    if fd is None:
        return None
    stat = os.fstat(fd)
    chosen = None
    found = False
    weights = parse_accept_encoding(accept_encoding) if accept_encoding else {}
    for coding, suffix in SIBLINGS:
        try:
            sibling = os.lstat(path + suffix)  # a symlink is not followed: it could point out of the root
        except OSError:
            continue
        if not statmodule.S_ISREG(sibling.st_mode):
            continue
        found = True
        q = weights.get(coding, weights.get("*", 0.0))
        if q > 0 and (chosen is None or q > chosen[0]):
            chosen = (q, coding, path + suffix)
    if chosen is not None:
        other = _open_regular(chosen[2])
        if other is not None:
            os.close(fd)
            return other, os.fstat(other), chosen[1], True
    return fd, stat, None, found


def _open_regular(path):
    """A read-only descriptor of the regular file ``path``, or None (non-blocking
    open: a FIFO must not hang the server)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if statmodule.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def multipart(fd, ranges, size, ctype):
    """(MultipartRanges body, its length, boundary) for several ranges."""
    boundary = secrets.token_hex(12)
    parts = []
    length = 0
    for start, stop in ranges:
        header = ("\r\n--%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n"
                  % (boundary, ctype, start, stop - 1, size)).encode("ascii")
        parts.append((header, start, stop))
        length += len(header) + stop - start
    closing = ("\r\n--%s--\r\n" % boundary).encode("ascii")
    return MultipartRanges(fd, parts, closing), length + len(closing), boundary


# -- validators and ranges, sans-I/O ---------------------------------------------------


def etag(stat):
    """A strong entity-tag from the file's identity (inode, size, mtime), not its content."""
    return '"%x-%x-%x"' % (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def precondition(method, headers, tag, modified):
    """RFC 9110 section 13.2.2: 412 or 304 when a precondition says so, else None.

    ``tag`` is the current ETag, ``modified`` the Last-Modified time in whole seconds.
    """
    if_match = headers.get("if-match")
    if if_match is not None:
        if not tag_matches(if_match, tag, strong=True):
            return 412
    else:
        since = parse_date(headers.get("if-unmodified-since"))
        if since is not None and modified > since:
            return 412
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if tag_matches(if_none_match, tag, strong=False):
            return 304 if method in ("GET", "HEAD") else 412
    elif method in ("GET", "HEAD"):
        since = parse_date(headers.get("if-modified-since"))
        if since is not None and modified <= since:
            return 304
    return None


def tag_matches(value, tag, strong):
    """Whether ``tag`` is in the If-Match/If-None-Match ``value`` (``*`` matches any);
    strong comparison needs both tags strong, weak ignores ``W/``."""
    if value.strip(" \t") == "*":
        return True
    if strong and tag.startswith("W/"):
        return False
    opaque = tag[2:] if tag.startswith("W/") else tag
    for match in _ENTITY_TAG.finditer(value):
        weak, candidate = match.group(1), match.group(0)
        if weak:
            if strong:
                continue
            candidate = candidate[2:]
        if candidate == opaque:
            return True
    return False


def parse_date(value):
    """An HTTP date as a POSIX timestamp, or None if absent or invalid."""
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, OverflowError):
        return None


def requested_ranges(method, headers, size, tag, modified):
    """The ranges a GET asks for, given If-Range: None (send the whole file),
    [] (unsatisfiable: 416) or a list of (start, stop) byte offsets."""
    value = headers.get("range")
    if value is None or method != "GET":
        return None
    if_range = headers.get("if-range")
    if if_range is not None:
        if_range = if_range.strip(" \t")
        if if_range.startswith('"') or if_range.startswith("W/"):
            if not (if_range == tag and not tag.startswith("W/")):  # strong comparison
                return None
        elif parse_date(if_range) != modified:  # a date must equal Last-Modified exactly
            return None
    return parse_ranges(value, size)


def parse_ranges(value, size):
    """A Range header (RFC 9110 section 14.1.2) against a representation of ``size``
    bytes: None when it is to be ignored (not bytes, malformed, or abusive: more
    than MAX_RANGES, overlapping, or nearly touching ranges), [] when no range
    is satisfiable, else the ranges as (start, stop) in the order asked."""
    unit, equals, spec = value.partition("=")
    if not equals or unit.strip(" \t").lower() != "bytes":
        return None
    ranges = []
    seen = 0
    for part in spec.split(","):
        part = part.strip(" \t")
        if not part:
            continue
        seen += 1
        if seen > MAX_RANGES:
            return None
        first, dash, last = part.partition("-")
        if not dash or not (_digits(first) or first == "") or not (_digits(last) or last == ""):
            return None
        if not first:
            if not last:
                return None
            suffix = int(last)
            if suffix == 0 or size == 0:
                continue  # unsatisfiable
            ranges.append((max(0, size - suffix), size))
            continue
        start = int(first)
        if last and int(last) < start:
            return None  # invalid: the whole field is ignored
        if start >= size:
            continue
        ranges.append((start, min(size, int(last) + 1) if last else size))
    if not seen:
        return None
    if len(ranges) > 1:
        ordered = sorted(ranges)
        if any(b[0] < a[1] + MIN_RANGE_GAP for a, b in zip(ordered, ordered[1:])):
            return None
    return ranges


def _digits(text):
    return 0 < len(text) <= 18 and text.isascii() and text.isdigit()


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
