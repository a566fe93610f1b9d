"""The access log: one line per request, as JSON (the default) or in the combined
format of Apache and nginx (which GoAccess reads), written to a file, stderr
("-"), or, when ``access_log`` is not set, the ``lilush_http.access`` logger.
"""

import json
import logging
import time

from .log import ACCESS, open_file

access_logger = logging.getLogger("lilush_http.access")

FORMATS = ("json", "combined")
REQUEST_LINE_LIMIT = 200  # bytes of a refused request's raw line that are logged


class Clock:
    """The current time in both log formats, formatted once per second."""

    __slots__ = ("second", "iso", "offset", "common")

    def __init__(self):
        self.second = None

    def _update(self, second):
        local = time.localtime(second)
        offset = time.strftime("%z", local)
        self.second = second
        self.iso = time.strftime("%Y-%m-%dT%H:%M:%S", local)
        self.offset = offset[:3] + ":" + offset[3:]
        self.common = time.strftime("%d/%b/%Y:%H:%M:%S ", local) + offset

    def iso8601(self, now):
        """``2026-11-26T00:01:25.123+00:00``"""
        second = int(now)
        if second != self.second:
            self._update(second)
        return "%s.%03d%s" % (self.iso, int((now - second) * 1000), self.offset)

    def clf(self, now):
        """``26/Nov/2026:00:01:25 +0000`` (the common log format's time)"""
        second = int(now)
        if second != self.second:
            self._update(second)
        return self.common


def escape(raw):
    """Bytes a client sent as log-safe text: printable ASCII stays, the rest (and ``"``, ``\\``) as ``\\xHH``."""
    return "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else "\\x%02x" % b for b in raw)


def request_line(raw):
    """The first line of a refused request's raw head, cut to 200 bytes and escaped."""
    return escape(raw.split(b"\n", 1)[0].rstrip(b"\r")[:REQUEST_LINE_LIMIT])


def _quote(value):
    """A header value inside the combined format's double quotes."""
    if value is None:
        return "-"
    if value.isprintable() and '"' not in value and "\\" not in value and value.isascii():
        return value
    return escape(value.encode("utf-8", "surrogateescape"))


class AccessLog:
    """Writes the access entries of one server config."""

    def __init__(self, fmt, headers, file):
        self.json = fmt == "json"
        self.headers = tuple(headers)
        self.file = file  # a log.LogFile, or None for the logging module
        self.clock = Clock()

    @classmethod
    def build(cls, cfg):
        """``(AccessLog, None)`` for a validated config, or ``(None, err)`` when the file cannot be opened."""
        file = None
        if cfg["access_log"] is not None:
            file, err = open_file(cfg["access_log"])
            if err:
                return None, "access_log: %s" % err
        return cls(cfg["access_log_format"], cfg["log_headers"], file), None

    def log(self, request, client_ip, status, size, started, forwarded_real_ip, raw_head=None, trusted=False):
        """Write the entry of one request (``request`` is None when its head could not
        be parsed: ``raw_head`` holds what arrived). What the client forwarded
        (X-Forwarded-For, X-Real-IP) is logged only from a ``trusted`` proxy."""
        now = time.time()
        duration = round(time.perf_counter() - started, 6) if started else 0.0
        headers = request.headers if request is not None else {}
        if self.json:
            line = self._json(now, duration, request, headers, client_ip, status, size,
                              forwarded_real_ip if trusted else None, raw_head, trusted)
        else:
            line = self._combined(now, request, headers, client_ip, status, size, raw_head)
        if self.file is not None:
            self.file.write((line + "\n").encode("utf-8", "backslashreplace"))
        else:
            access_logger.log(ACCESS, "%s", line)

    def _json(self, now, duration, request, headers, client_ip, status, size, forwarded_real_ip, raw_head, trusted):
        entry = {"time": self.clock.iso8601(now), "duration": duration, "vhost": headers.get("host", "-"),
                 "client_ip": client_ip}
        if request is not None:
            entry["method"] = request.method
            entry["target"] = request.target
            entry["protocol"] = request.version
        else:
            entry["request"] = request_line(raw_head or b"")
        entry["status"] = status
        entry["size"] = size
        forwarded_for = headers.get("x-forwarded-for") if trusted else None
        if forwarded_for is not None:
            entry["forwarded_for"] = forwarded_for
        if forwarded_real_ip is not None:
            entry["forwarded_real_ip"] = forwarded_real_ip
        for name in self.headers:
            value = headers.get(name)
            if value is not None:
                entry[name] = value
        return json.dumps(entry, separators=(",", ":"))

    def _combined(self, now, request, headers, client_ip, status, size, raw_head):
        if request is not None:
            line = "%s %s %s" % (request.method, _quote(request.target), request.version)
        else:
            line = request_line(raw_head or b"")
        return '%s - - [%s] "%s" %d %d "%s" "%s"' % (
            client_ip, self.clock.clf(now), line, status, size,
            _quote(headers.get("referer")), _quote(headers.get("user-agent")))
