"""Server configuration: the defaults of the Lua original, a deep merge, and checks.

``validate`` returns an error message naming the key, or None; it never raises,
so ``configure`` can hand a bad config back as ``(None, err)``.
"""

import copy
import difflib
import ipaddress
import os

from . import metrics, redis_client
from .forwarding import check_trusted_proxies
from .log import LEVELS

# TLS 1.2 suites of Mozilla's "intermediate" profile: ECDHE/DHE with AES-GCM or ChaCha20-Poly1305
# (AEAD only; no CBC, so no LUCKY13). TLS 1.3 suites are not set by this list.
MOZILLA_INTERMEDIATE = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                        "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")

DEFAULTS = {
    "ip": "127.0.0.1",
    "port": 8080,
    "backlog": 256,
    "unix_socket": None,
    "unix_socket_mode": None,
    "fd": None,
    "reuse_port": False,
    "trusted_proxies": ["127.0.0.1", "::1"],
    "proxy_protocol": False,
    "workers": 1,
    "connection_limit": 1024,  # Lilush: 64; see docs/reliability-notes.rst for why
    "requests_per_connection": 512,
    "max_body_size": 5 * 1024 * 1024,
    "request_line_limit": 8 * 1024,
    "max_headers": 100,
    "keepalive_idle_timeout": 15,
    "request_header_timeout": 10,
    "request_body_timeout": 30,
    "response_send_timeout": 30,
    "tls_handshake_timeout": 10,
    "tls_ciphers": MOZILLA_INTERMEDIATE,
    "drain_delay": 0,
    "min_rate": 500,
    "min_rate_window": 0.1,
    "connections_per_ip": 0,
    "compression": {
        "enabled": True,
        "min_size": 4096,
        "level": 6,
        "cache_size": 16 * 1024 * 1024,
        "types": [
            "text/html", "text/plain", "text/css", "text/javascript",
            "image/svg+xml", "application/json", "application/rss+xml",
        ],
    },
    "log_level": "access",
    "log_headers": ["referer", "x-real-ip", "user-agent"],
    "access_log": None,
    "access_log_format": "json",
    "error_log": None,
    "ssl": None,
    "redis": None,
    "websocket": {
        "max_message_size": 1024 * 1024,
        "session_limit": 1024,
        "ping_interval": 20,
        "pong_timeout": 10,
        "send_timeout": 10,
        "close_timeout": 5,
        "compression": True,
    },
    "metrics": None,
    "http2": True,
    "http2_max_concurrent_streams": 100,
    "http2_max_resets": 100,
}

# What each key means, one entry per dotted key of DEFAULTS (reStructuredText). The
# settings reference (docs/settings.rst) is generated from DEFAULTS, validate()'s message
# for a wrong value, the CLI's flags and this table; tests/test_docs.py fails on a key
# without a meaning here.
MEANINGS = {
    "ip": "Bind address: IPv4, IPv6 or ``localhost``.",
    "port": "Bind port; ``0`` lets the system pick a free one (``srv.address`` tells which).",
    "backlog": "Listen backlog: connections the kernel queues before the server accepts them.",
    "unix_socket": "Listen on this unix socket path instead of ``ip``/``port``; a stale socket "
                   "file is replaced, a live one is a bind error. Removed on stop.",
    "unix_socket_mode": "Mode of the unix socket file, an octal string such as ``\"0660\"``, set "
                        "before anyone can connect.",
    "fd": "Serve the already-bound listening socket inherited as this descriptor "
          "(``listen()`` is called on it again with ``backlog``).",
    "reuse_port": "``SO_REUSEPORT``: another instance may bind the same port (hand-overs).",
    "trusted_proxies": "Addresses or CIDRs (``\"*\"`` for all) whose ``X-Real-IP``, "
                       "``X-Forwarded-For``, ``X-Forwarded-Proto``, ``Forwarded`` and PROXY "
                       "headers are believed. Peers on a unix socket are always trusted.",
    "proxy_protocol": "Every connection starts with a PROXY protocol v1 or v2 header from a "
                      "trusted peer; a connection without one is closed.",
    "workers": "Processes serving the port; above 1, ``serve()`` supervises forked workers.",
    "connection_limit": "Connections served at once (the gevent pool size; Lilush's default is 64). "
                        "When all are taken and clients wait, slow clients are cut and slots rotate "
                        "(see :doc:`robustness`).",
    "requests_per_connection": "The response to this request on a connection carries "
                               "``Connection: close``.",
    "max_body_size": "Request body cap in bytes, Content-Length and chunked (413); enforced as "
                     "a streamed body is read.",
    "request_line_limit": "Longest request line (414) or header line (431), in bytes.",
    "max_headers": "Most header lines (or trailer lines) in a request (431).",
    "keepalive_idle_timeout": "Seconds to wait for the next request on an open connection.",
    "request_header_timeout": "Deadline for the whole request head once it has started (408).",
    "request_body_timeout": "Deadline for the whole body (408); for a streamed body, each wait "
                            "for the client's bytes.",
    "response_send_timeout": "Deadline for writing one response.",
    "tls_handshake_timeout": "Deadline for the server-side TLS handshake.",
    "tls_ciphers": "OpenSSL cipher list of the TLS 1.2 suites offered; the default is Mozilla's "
                   "\"intermediate\" AEAD-only list (no CBC suites, so no LUCKY13). TLS 1.3 suites are "
                   "not affected. A list that selects no suite is refused by ``configure``.",
    "drain_delay": "Seconds to keep serving after SIGTERM/SIGINT (``stop()``), every response with "
                   "``Connection: close``, before the stop itself; ``0``: stop at once. For load "
                   "balancers that take a moment to stop sending (see :doc:`deploying`).",
    "min_rate": "Bytes a second below which, with every slot taken and a client waiting, a "
                "client sending its request or reading its response is cut.",
    "min_rate_window": "How long (or two round trips, if longer) a connection is watched before "
                       "``min_rate`` applies: a fresh connection's chance to send its request.",
    "connections_per_ip": "Most open connections per client address; more get 503. ``0``: "
                          "no cap.",
    "compression.enabled": "Compress eligible responses (gzip, deflate, br) when the client "
                           "asks for it.",
    "compression.min_size": "Bodies smaller than this many bytes are sent as they are.",
    "compression.level": "Compression level, 0 to 9 (zlib's scale; mapped onto ISA-L's when "
                         "``isal`` is installed).",
    "compression.cache_size": "Bytes of compressed bodies kept for reuse (a body enters on its "
                              "second sight); ``0`` turns the cache off.",
    "compression.types": "Content types eligible for compression (parameters ignored).",
    "log_level": "``debug``, ``access`` (one line per request), ``info``, ``warn`` or "
                 "``error``.",
    "log_headers": "Request headers copied into each access log entry.",
    "access_log": "Access log file, ``\"-\"`` for stderr; unset: the ``lilush_http.access`` "
                  "logger (the CLI's default is ``\"-\"``). Reopened on SIGUSR1.",
    "access_log_format": "``json`` (one object per line) or ``combined`` (Apache/nginx, for "
                         "GoAccess).",
    "error_log": "File for the server's own messages, ``\"-\"`` for stderr; unset: Python's "
                 "logging setup.",
    "ssl": "TLS: ``{\"default\": {\"cert\", \"key\"}, \"hosts\": {name: {\"cert\", "
           "\"key\"}}}``; the client's SNI name picks the host's pair (see :doc:`tls`).",
    "redis": "A Redis client for handlers as ``ctx[\"redis\"]``: ``{host, port, db, password, "
             "unix_socket, timeout, max_connections}``, or ``url``, or ``sentinels`` and "
             "``service_name`` (see :ref:`redis`).",
    "websocket.max_message_size": "Largest WebSocket message, reassembled and inflated "
                                  "(else close 1009).",
    "websocket.session_limit": "WebSocket sessions at once, counted apart from "
                               "``connection_limit`` (else 503).",
    "websocket.ping_interval": "Ping a peer silent this many seconds (while the handler waits "
                               "in ``receive``).",
    "websocket.pong_timeout": "Then close with 1011 if it still sends nothing this long.",
    "websocket.send_timeout": "Deadline for a frame to leave; a peer that stops reading is "
                              "cut.",
    "websocket.close_timeout": "Wait this long for the peer's close frame in the closing "
                               "handshake.",
    "websocket.compression": "Accept permessage-deflate (RFC 7692) when the client offers it.",
    "metrics": "Serve Prometheus metrics on ``{\"ip\", \"port\"}`` (defaults "
               "``127.0.0.1``, ``9101``), a listener apart (see :ref:`metrics`).",
    "http2": "Serve HTTP/2 too: TLS listeners offer ALPN ``h2`` before ``http/1.1``, plain "
             "listeners take the prior-knowledge preface (see :doc:`http2`). ``false`` serves "
             "HTTP/1.1 only (``--no-http2``).",
    "http2_max_concurrent_streams": "SETTINGS_MAX_CONCURRENT_STREAMS: the streams one HTTP/2 "
                                    "connection may have open at once; a stream over it is refused "
                                    "with RST_STREAM REFUSED_STREAM, the connection goes on.",
    "http2_max_resets": "Streams an HTTP/2 client may reset before their response ended, within "
                        "10 seconds (more in a burst), before its connection gets GOAWAY "
                        "ENHANCE_YOUR_CALM (Rapid Reset, CVE-2023-44487).",
}

POSITIVE_INTS = ("backlog", "workers", "connection_limit", "requests_per_connection", "request_line_limit", "max_headers",
                 "http2_max_concurrent_streams", "http2_max_resets")
POSITIVE_NUMBERS = ("keepalive_idle_timeout", "request_header_timeout", "request_body_timeout",
                    "response_send_timeout", "tls_handshake_timeout", "min_rate_window")


def defaults():
    """A fresh, independent copy of the default config."""
    return copy.deepcopy(DEFAULTS)


def merge(base, override):
    """``base`` with ``override`` merged in, key by key for nested dicts; inputs untouched."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _is_int(value):
    return type(value) is int


def _is_number(value):
    return type(value) in (int, float)


def validate(cfg):
    """The first problem found in ``cfg``, as a message naming the key, or None."""
    ip = cfg["ip"]
    if not isinstance(ip, str) or not ip:
        return "ip: expected an address string, got %r" % (ip,)
    try:
        ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        if ip != "localhost":
            return "ip: %r is not an IPv4 or IPv6 address" % (ip,)
    port = cfg["port"]
    if not _is_int(port) or not 0 <= port <= 65535:
        return "port: expected an integer from 0 to 65535, got %r" % (port,)
    for key in POSITIVE_INTS:
        if not _is_int(cfg[key]) or cfg[key] < 1:
            return "%s: expected a positive integer, got %r" % (key, cfg[key])
    for key in ("max_body_size", "min_rate", "connections_per_ip"):
        if not _is_int(cfg[key]) or cfg[key] < 0:
            return "%s: expected an integer >= 0, got %r" % (key, cfg[key])
    for key in POSITIVE_NUMBERS:
        if not _is_number(cfg[key]) or not cfg[key] > 0:
            return "%s: expected a positive number of seconds, got %r" % (key, cfg[key])
    if not _is_number(cfg["drain_delay"]) or not cfg["drain_delay"] >= 0:
        return "drain_delay: expected a number of seconds >= 0, got %r" % (cfg["drain_delay"],)
    if not isinstance(cfg["tls_ciphers"], str) or not cfg["tls_ciphers"]:
        return "tls_ciphers: expected an OpenSSL cipher list string, got %r" % (cfg["tls_ciphers"],)
    if cfg["log_level"] not in LEVELS:
        return "log_level: expected one of %s, got %r" % (", ".join(sorted(LEVELS)), cfg["log_level"])
    log_headers = cfg["log_headers"]
    if not isinstance(log_headers, (list, tuple)) or not all(isinstance(h, str) for h in log_headers):
        return "log_headers: expected a list of header names, got %r" % (log_headers,)
    for key in ("access_log", "error_log"):
        if cfg[key] is not None and (not isinstance(cfg[key], str) or not cfg[key]):
            return "%s: expected a file path or \"-\" (stderr), got %r" % (key, cfg[key])
    if cfg["access_log_format"] not in ("json", "combined"):
        return "access_log_format: expected json or combined, got %r" % (cfg["access_log_format"],)
    err = _validate_listener(cfg) or check_trusted_proxies(cfg["trusted_proxies"])
    if err:
        return err
    return (_validate_compression(cfg["compression"]) or _validate_ssl(cfg["ssl"])
            or redis_client.validate(cfg["redis"]) or _validate_websocket(cfg["websocket"])
            or metrics.validate(cfg["metrics"]))


def unknown_keys(config, defaults=DEFAULTS, prefix=""):
    """Warnings for the keys of ``config`` that the server does not know, each naming
    the closest known key (ssl and redis tables are checked by their own validation)."""
    warnings = []
    for key, value in config.items():
        if key not in defaults:
            close = difflib.get_close_matches(str(key), [str(k) for k in defaults], 1, 0.6)
            warnings.append("unknown config key %r%s" % (prefix + str(key),
                            " (did you mean %r?)" % (prefix + close[0]) if close else ""))
        elif isinstance(value, dict) and isinstance(defaults[key], dict):
            warnings += unknown_keys(value, defaults[key], prefix + key + ".")
    return warnings


def flat(table=DEFAULTS, prefix=""):
    """``(dotted key, default)`` for every setting, nested tables spelled out."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from flat(value, prefix + key + ".")
        else:
            yield prefix + key, value


def _validate_listener(cfg):
    """unix_socket, unix_socket_mode, fd, reuse_port and proxy_protocol."""
    path = cfg["unix_socket"]
    if path is not None and (not isinstance(path, str) or not path):
        return "unix_socket: expected a file path, got %r" % (path,)
    mode = cfg["unix_socket_mode"]
    if mode is not None:
        if not isinstance(mode, str) or not mode or any(c not in "01234567" for c in mode) or len(mode) > 4:
            return "unix_socket_mode: expected an octal mode string like \"0660\", got %r" % (mode,)
    fd = cfg["fd"]
    if fd is not None and (not _is_int(fd) or fd < 0):
        return "fd: expected a descriptor number >= 0, got %r" % (fd,)
    for key in ("reuse_port", "proxy_protocol", "http2"):
        if type(cfg[key]) is not bool:
            return "%s: expected true or false, got %r" % (key, cfg[key])
    return None


def _validate_compression(comp):
    if not isinstance(comp, dict):
        return "compression: expected a table, got %r" % (comp,)
    if type(comp.get("enabled")) is not bool:
        return "compression.enabled: expected true or false, got %r" % (comp.get("enabled"),)
    if not _is_int(comp.get("min_size")) or comp["min_size"] < 0:
        return "compression.min_size: expected an integer >= 0, got %r" % (comp.get("min_size"),)
    if not _is_int(comp.get("level")) or not 0 <= comp["level"] <= 9:
        return "compression.level: expected an integer from 0 to 9, got %r" % (comp.get("level"),)
    if not _is_int(comp.get("cache_size")) or comp["cache_size"] < 0:
        return "compression.cache_size: expected a number of bytes >= 0, got %r" % (comp.get("cache_size"),)
    types = comp.get("types")
    if not isinstance(types, (list, tuple)) or not all(isinstance(t, str) for t in types):
        return "compression.types: expected a list of content types, got %r" % (types,)
    return None


def _validate_websocket(ws):
    if not isinstance(ws, dict):
        return "websocket: expected a table, got %r" % (ws,)
    for key in ("max_message_size", "session_limit"):
        if not _is_int(ws.get(key)) or ws[key] < 1:
            return "websocket.%s: expected a positive integer, got %r" % (key, ws.get(key))
    for key in ("ping_interval", "pong_timeout", "send_timeout", "close_timeout"):
        if not _is_number(ws.get(key)) or not ws[key] > 0:
            return "websocket.%s: expected a positive number of seconds, got %r" % (key, ws.get(key))
    if type(ws.get("compression")) is not bool:
        return "websocket.compression: expected true or false, got %r" % (ws.get("compression"),)
    return None


def _validate_ssl(ssl):
    """The shape of the ssl table and that each named file exists (contexts: tls.py)."""
    if ssl is None:
        return None
    if not isinstance(ssl, dict):
        return "ssl: expected a table with default and hosts, got %r" % (ssl,)
    unknown = set(ssl) - {"default", "hosts"}
    if unknown:
        return "ssl: unknown key %r (expected default and hosts)" % sorted(unknown)[0]
    if not isinstance(ssl.get("default"), dict):
        return "ssl.default: a default {cert, key} pair is required"
    hosts = ssl.get("hosts") or {}
    if not isinstance(hosts, dict):
        return "ssl.hosts: expected a table of host names, got %r" % (hosts,)
    pairs = [("ssl.default", ssl["default"])]
    pairs += [("ssl.hosts[%r]" % name, pair) for name, pair in hosts.items()]
    for where, pair in pairs:
        if not isinstance(pair, dict):
            return "%s: expected {cert, key}, got %r" % (where, pair)
        for part in ("cert", "key"):
            path = pair.get(part)
            if not isinstance(path, str) or not path:
                return "%s.%s: a file path is required" % (where, part)
            if not os.path.isfile(path):
                return "%s.%s: file not found: %s" % (where, part, path)
    return None
