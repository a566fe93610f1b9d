"""The Lilush ``http.server`` API on gevent: new, configure, serve, process_request.

A ``gevent.server.StreamServer`` with a ``gevent.pool.Pool(connection_limit)``
hands each accepted socket to a greenlet that loops ``process_request`` for as
long as the connection is kept alive. Failures are returned Lua-style as
``(None, "message")``, never raised.
"""

import io
import logging
import os
import socket
import stat as statmodule
import threading
import time
import traceback
import weakref

import gevent
from gevent.event import Event
from gevent.monkey import get_original
from gevent.pool import Pool
from gevent.server import StreamServer

from . import config as configuration
from . import forwarding, listeners, metrics, redis_client, tls, websocket
from .access import AccessLog, access_logger
from .body import BodyReader, BodyReadError
from .admission import Admission
from .compression import Policy, StreamEncoder
from .connection import Connection, ConnectionEnded, StreamFailed
from .deadlines import Deadlines
from .log import ACCESS, LEVELS, Logger, ensure_output, use_error_log
from .request import HTTPError, Limits
from .response import ResponseError, body_allowed, error_response, render, render_stream_head
from .static import FileRange

logger = logging.getLogger("lilush_http")

FIXED_CONTENT = (str, bytes, bytearray, memoryview)
# What a handler may raise that becomes a 500: also sys.exit() and a stray
# GeneratorExit, which must not end the serving loop (GreenletExit, the kill of
# a connection on shutdown, is not caught).
HANDLER_FAULTS = (Exception, SystemExit, GeneratorExit)
# The OS thread's id even when monkeypatching made get_ident() per greenlet.
thread_id = get_original("_thread", "get_ident")
FILE_BLOCK = 256 * 1024
DRAIN_IDLE = 1.0  # draining for a reload: seconds an idle keep-alive client gets to send one more request
FIRST_REQUEST_GRACE = 1.0  # stopping: seconds a just-accepted connection gets to send its request


def sample_handle(method, query, args, headers, body, ctx):
    """The handler used when none is given, as in Lilush."""
    return "Hi there!", 200, {}


def new(config=None, handle=None):
    """Create a server: ``(server, None)``, or ``(None, err)`` when the config is wrong."""
    if handle is not None and not callable(handle):
        return None, "handle: expected a function, got %r" % (handle,)
    server = Server(handle or sample_handle)
    ok, err = server.configure(config or {})
    if not ok:
        return None, err
    return server, None


class Server:
    """An HTTP/1.1 server; ``cfg`` is the merged config, the same dict handlers see as ctx["cfg"]."""

    def __init__(self, handle):
        self.handle = handle
        self._stream_body = getattr(handle, "stream_body", False)  # body.streamed_body opted in
        self.cfg = configuration.defaults()
        self.logger = Logger(logger)
        self.redis = None
        self._limits = Limits.from_config(self.cfg)
        self._compression = Policy(self.cfg["compression"])
        self._trusted = forwarding.TrustedProxies(self.cfg["trusted_proxies"])
        self._certificates = None  # tls.Certificates when ssl is configured
        self._server = None
        self._listener = None
        self._listening = None  # the listeners.Listener while serving (its name for the start line)
        self._exposition = None  # the metrics listener (metrics.Exposition) while serving with metrics on
        self._pool = None
        self._connections = set()
        self._admission = Admission(self._connections, self.cfg)
        self._stopping = False
        self._handing_over = False  # stopping for a reload (drain): the listener stays with the new workers
        self._stopped = None
        self._loop_thread = None
        self._stop_async = None  # wakes the serving thread's hub when stop() comes from elsewhere
        self._stop_request = None  # (timeout, threading.Event) of such a stop()
        self._metrics = None  # metrics.Recorder of this process while serving with metrics on
        self._direct = weakref.WeakKeyDictionary()  # sockets passed to process_request by callers
        self._websockets = websocket.Sessions()
        self._deadlines = Deadlines(self._connections, self._direct, tick=Deadlines.tick_for(self.cfg))
        self._access = AccessLog.build(self.cfg)[0]
        self._supervisor = None  # a supervisor.Supervisor while serve() runs workers
        ensure_output(logger)

    # -- configuration ---------------------------------------------------------

    def configure(self, config):
        """Deep-merge ``config`` into the current one and check every value.

        Returns ``(True, None)``, or ``(None, err)`` leaving the current config as it was.
        """
        if not isinstance(config, dict):
            return None, "config: expected a table, got %r" % (config,)
        try:
            merged = configuration.merge(self.cfg, config)
        except Exception as exc:  # e.g. a value deepcopy cannot copy
            return None, "config: %s" % exc
        err = configuration.validate(merged)
        if err:
            return None, err
        certificates, err = tls.build(merged["ssl"], merged["tls_ciphers"])
        if err:
            return None, err
        if merged["redis"] != self.cfg["redis"]:  # a new pool only when the settings change
            redis, err = redis_client.build(merged["redis"])
            if err:
                return None, err
            self.redis = redis
        access, err = AccessLog.build(merged)
        if err:
            return None, err
        _, err = use_error_log(logger, merged["error_log"])
        if err:
            return None, err
        self._access = access
        # New connections use the new certificates; open ones keep theirs.
        self._certificates = certificates
        self.cfg.clear()
        self.cfg.update(merged)
        self._limits = Limits.from_config(self.cfg)
        self._compression = Policy(self.cfg["compression"])
        self._trusted = forwarding.TrustedProxies(self.cfg["trusted_proxies"])
        self._deadlines.tick = Deadlines.tick_for(self.cfg)
        logger.setLevel(LEVELS[self.cfg["log_level"]])
        return True, None

    # -- serving -----------------------------------------------------------------

    @property
    def address(self):
        """The bound ``(ip, port)`` while serving (port 0 in the config gives a free one),
        the path of a unix socket, else None."""
        if self._listener is None:
            return None
        name = self._listener.getsockname()
        return name[:2] if isinstance(name, tuple) else name

    def serve(self, app=None):
        """Bind, listen and serve until ``stop``; returns ``(None, None)`` then, or ``(None, err)``.

        With ``workers`` above 1, or an ``app`` (the CLI's: what workers import
        and SIGHUP reloads, see supervisor.py), this process becomes a supervisor
        that forks the workers sharing the socket; otherwise it serves itself.
        """
        cfg = self.cfg
        listening, err = listeners.listen(cfg)
        if err:
            return None, err
        listener = listening.sock
        listeners.reserve_descriptors(cfg["connection_limit"])
        if cfg["metrics"] is not None:  # bound before any fork, so a busy port is this call's error
            self._exposition, err = metrics.listen(cfg["metrics"])
            if err:
                listening.close()
                return None, err
        self._listening = listening
        self._begin(listener)
        try:
            if app is not None or cfg["workers"] > 1:
                from .supervisor import Supervisor
                self._supervisor = Supervisor(self, app)
                err = self._supervisor.run(listener)
            else:
                self._serve_on(listener)
        finally:
            self._supervisor = None
            self._end()
            listening.close()
            self._listening = None
            if self._exposition is not None:
                self._exposition.close()
                self._exposition = None
        return None, err

    def serve_worker(self, listener, ready):
        """In a forked worker: serve on the inherited ``listener`` until stopped,
        calling ``ready()`` once accepting."""
        self._supervisor = None
        self._begin(listener)
        try:
            self._serve_on(listener, ready)
        finally:
            self._end()

    def log_serving(self, workers=None):
        """The start line (the CLI's tests and users wait for it)."""
        logger.info("lilush_http serving on %s://%s (connection_limit %d%s)",
                    "https" if self._certificates else "http", self._listening.name,
                    self.cfg["connection_limit"], ", %d workers" % workers if workers and workers > 1 else "")

    def _begin(self, listener):
        self._listener = listener
        self._stopping = False
        self._handing_over = False
        self._stopped = Event()
        self._loop_thread = thread_id()
        self._stop_async = gevent.get_hub().loop.async_()
        self._stop_async.start(lambda: gevent.spawn(self.stop, *self._stop_request[0]))

    def _end(self):
        self._stop_async.stop()
        self._stop_async.close()
        self._stop_async = None
        self._listener = None
        if self._stop_request is not None:  # a supervisor's stop() from another thread
            self._stop_request[1].set()
            self._stop_request = None

    def _serve_on(self, listener, ready=None):
        """Accept on ``listener`` in this process until stopped."""
        self._pool = self._websockets.pool = Pool(self.cfg["connection_limit"])
        self._server = StreamServer(listener, self._serve_connection, spawn=self._pool)
        if self.cfg["metrics"] is not None:
            self._metrics = metrics.Recorder(self)
            self._metrics.start()
            if self._exposition is not None:  # serving in this process: its metrics are the sum
                self._exposition.start(self._metrics)
        self._server.start()
        if ready is None:
            self.log_serving()
        else:
            ready()
        self._stopped.wait()
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None

    def stop(self, timeout=5, idle_grace=0):
        """Stop accepting, close idle keep-alive connections, let requests in flight
        finish (their responses carry ``Connection: close``) for up to ``timeout``
        seconds, then end the rest. May be called from another thread.

        Before that, for ``drain_delay`` seconds (config), it goes on serving with
        ``Connection: close`` on every response. New connections are then refused
        in every process sharing the listener at once, and those the kernel has
        already queued are accepted and served before the listener closes.

        ``idle_grace`` (draining for a reload): an idle connection is closed only once
        idle that long, so a client sending its next request just now is answered."""
        if self._listener is None:
            return
        if self._loop_thread != thread_id():
            done = threading.Event()
            self._stop_request = ((timeout, idle_grace), done)
            self._stop_async.send()
            done.wait(timeout + self.cfg["drain_delay"] + 5)
            return
        if self._stopping:
            return
        self._stopping = True  # from now on every response says Connection: close
        server = self._server
        if self._supervisor is not None:  # it sends the workers SIGTERM and collects them
            self._supervisor.wake()
            return
        if server is None:
            return
        handing_over = self._handing_over  # a reload: the new workers accept on the same socket
        if self.cfg["drain_delay"] and not handing_over:
            logger.info("stopping in %g s (drain_delay); until then responses say Connection: close",
                        self.cfg["drain_delay"])
            gevent.sleep(self.cfg["drain_delay"])
        if not handing_over:
            listeners.stop_listening(self._listener)
        self._admission.stop()
        self._websockets.close_all()  # 1001 Going Away
        deadline = time.monotonic() + timeout
        self._finish(server, deadline, idle_grace, handing_over)
        self._websockets.join(max(1.0, deadline - time.monotonic()))
        self._pool.kill(block=True, timeout=1)
        self._deadlines.stop()
        self._server = None
        logger.info("lilush_http stopped")
        self._stopped.set()
        if self._stop_request is not None:
            self._stop_request[1].set()
            self._stop_request = None

    def _finish(self, server, deadline, idle_grace, handing_over):
        """Until ``deadline``: accept what the kernel queued (unless ``handing_over``),
        then close the listener; close idle connections; wait for the pool to empty.
        A connection still waiting for its first request gets FIRST_REQUEST_GRACE."""
        listener = self._listener
        while True:
            now = time.monotonic()
            for conn in list(self._connections):
                # requests counts the head being waited for: 1 while waiting for the first
                if conn.idle and now - conn.idle_since >= (idle_grace if conn.requests > 1 else FIRST_REQUEST_GRACE):
                    conn.evict()
            self._admission.cut_handshakes(older_than=FIRST_REQUEST_GRACE)
            if server.started and (handing_over or now >= deadline or not listeners.queued(listener)):
                server.close()  # nothing queued is left to be reset by the last close
            if not server.started and self._pool.join(timeout=min(0.05, max(0, deadline - now))):
                break
            if now >= deadline:
                break
            if server.started:
                gevent.sleep(0.01)

    def drain(self):
        """Stop as for a reload (SIGQUIT in a worker): idle clients get DRAIN_IDLE seconds,
        and the listener is left to the new workers at once."""
        self._handing_over = True
        self.stop(idle_grace=DRAIN_IDLE)

    def _serve_connection(self, sock, address):
        """One connection's greenlet: loop process_request, then close the socket."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self._admission.start(self._pool, self._listener, sock)
        client_ip = address[0] if isinstance(address, tuple) else forwarding.UNIX_PEER
        if self.cfg["proxy_protocol"]:
            client_ip = self._read_proxy_header(sock, client_ip)
            if client_ip is None:
                sock.close()
                return
        if not self._admission.admit(client_ip):  # before any TLS work is spent on it
            self._refuse_connection(sock, client_ip)
            return
        try:
            sni = None
            tls_on = self._certificates is not None
            if tls_on:
                sock, sni = self._handshake(sock, client_ip)
                if sock is None:
                    return
            conn = (Connection if self._metrics is None else metrics.CountingConnection)(sock, sni, tls_on)
            conn.sessions = self._websockets
            conn.client_ip = client_ip
            self._serve_requests(conn, client_ip)
        finally:
            self._admission.leave(client_ip)

    def _serve_requests(self, conn, client_ip):
        """Loop process_request on an accepted connection until it ends, then close it."""
        self._connections.add(conn)
        self._deadlines.start()
        limit = self.cfg["requests_per_connection"]
        count = 0
        try:
            while count < limit:
                count += 1
                state, err = self.process_request(conn, client_ip, count, self.redis)
                if state != "keep-alive":
                    if err and err != "closed":
                        logger.debug("connection from %s ended: %s", client_ip, err)
                    break
                if self._stopping:
                    break
        except Exception:
            logger.error("connection from %s failed:\n%s", client_ip, traceback.format_exc())
        finally:
            self._connections.discard(conn)
            if self._metrics is not None:
                self._metrics.connection_closed(conn)
            conn.close()

    def _handshake(self, sock, client_ip):
        """The TLS handshake, watched by admission as a client owing its first bytes:
        (TLS socket, SNI name), or (None, None) when it failed (the socket is closed)."""
        certificates = self._certificates
        with self._admission.handshaking(sock, client_ip):
            try:
                return certificates.handshake(sock, self.cfg["tls_handshake_timeout"])
            except tls.HandshakeFailed as exc:
                logger.debug("connection from %s: %s", client_ip, exc)
                metrics.record_tls_handshake_failure()
                sock.close()
                return None, None

    def _refuse_connection(self, sock, client_ip):
        """Over connections_per_ip: a plain connection gets a 503; a TLS one is closed
        before its handshake (a response would need one)."""
        if self._certificates is not None:
            sock.close()
            return
        conn = Connection(sock)
        conn.linger = True
        self._send_quietly(conn, error_response(503, "too many connections from %s" % client_ip))
        conn.close()

    def _read_proxy_header(self, sock, peer):
        """The client address of the PROXY protocol header (v1 or v2) that must
        open a connection from a trusted proxy, read under the header deadline
        and no further than the header; None when it is missing or malformed."""
        if not self._trusted[peer]:
            logger.debug("connection from %s: not a trusted proxy, no PROXY header accepted", peer)
            return None
        deadline = time.monotonic() + self.cfg["request_header_timeout"]
        data = b""
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise forwarding.ProxyHeaderError("no complete PROXY header in time")
                sock.settimeout(remaining)
                peeked = sock.recv(forwarding.proxy_header_wanted(data) - len(data), socket.MSG_PEEK)
                if not peeked:
                    raise forwarding.ProxyHeaderError("closed before the PROXY header ended")
                header = forwarding.parse_proxy_header(data + peeked)
                if header is not None:
                    size = header.size - len(data)
                    while size > 0:  # take exactly the header; what follows is HTTP or TLS
                        size -= len(sock.recv(size))
                    return header.source or peer
                data += sock.recv(len(peeked))  # all of it is header: consume, then wait for more
        except (forwarding.ProxyHeaderError, OSError) as exc:
            logger.debug("connection from %s: %s", peer, exc)
            return None

    # -- one request ---------------------------------------------------------------

    def process_request(self, client, client_ip, count, redis_module=None):
        """Read one request from ``client``, run the handler, send the response.

        Returns ``("keep-alive" | "close", None)``, or ``(None, err)`` when the
        connection must end: "closed", "keepalive timeout", "request header
        timeout", "request body timeout", "response send timeout", or what was
        wrong with the request (after answering it with a 4xx/5xx).
        """
        conn = client if isinstance(client, Connection) else self._connection_for(client)
        cfg = self.cfg
        limits = self._limits
        request = None
        try:
            request = conn.read_head(cfg["keepalive_idle_timeout"], cfg["request_header_timeout"], limits)
            started = time.perf_counter()
            body = ((BodyReader(conn, request, cfg["request_body_timeout"], limits) if self._stream_body
                     else conn.read_body(request, cfg["request_body_timeout"], limits))
                    if request.content_length is not None or request.chunked else None)
        except HTTPError as exc:
            return self._refuse(conn, client_ip, request, exc.status, exc.message)
        except ConnectionEnded as exc:
            if exc.phase_started and exc.message.endswith("timeout"):
                self._send_quietly(conn, error_response(408, exc.message))
            return None, exc.message

        headers = request.headers
        forwarded_real_ip = headers.get("x-real-ip")
        headers["x-client-ip"] = client_ip
        real_ip = client_ip
        scheme = "https" if conn.tls else "http"
        trusted = self._trusted[client_ip]
        if trusted:  # a proxy (or a client on a trusted address): believe what it forwards
            if forwarded_real_ip is not None or "x-forwarded-for" in headers or "forwarded" in headers:
                real_ip = forwarding.client_address(headers, client_ip, self._trusted)
            if "x-forwarded-proto" in headers:
                scheme = forwarding.forwarded_scheme(headers, scheme)
        headers["x-real-ip"] = real_ip
        method = request.method
        ctx = {"logger": self.logger, "client": conn, "cfg": cfg, "client_ip": real_ip,
               "redis": redis_module, "count": count, "sni": conn.sni, "version": request.version,
               "scheme": scheme}
        keep_alive = request.keep_alive and count < cfg["requests_per_connection"]
        size = None  # bytes sent, once a response has gone out
        try:
            result = self.handle(method, request.query, request.args, headers, body, ctx)
            if conn.upgraded is not None:
                return self._end_session(conn, request, real_ip, started, forwarded_real_ip, trusted, False)
            keep_alive = keep_alive and not (self._stopping or conn.close_requested)
            if type(result) is tuple and len(result) == 3:
                content, status, response_headers = result
            elif type(result) is tuple and 1 <= len(result) <= 2:
                content, status, response_headers = result + (None,) * (3 - len(result))
            else:
                raise ResponseError("handler returned %r; expected a tuple (content, status, headers)"
                                    % (type(result).__name__ if result is not None else None,))
            if content is None and status is None and response_headers is None:
                if conn.closed or conn.sock.fileno() < 0:  # the handler closed the socket
                    return None, "closed"
                return "keep-alive", None  # the handler answered on the socket itself
            if status is None:
                status = 200
            elif type(status) is int and 100 <= status < 200:
                keep_alive = False  # after an informational final answer, HTTP cannot go on
            if type(body) is BodyReader:
                streamed = not (content is None or isinstance(content, FIXED_CONTENT))
                keep_alive = body.before_response(keep_alive, streamed)
            if content is None or isinstance(content, FIXED_CONTENT):
                data, keep_alive = render(status, response_headers, content, keep_alive,
                                          request.version == "HTTP/1.0", method == "HEAD",
                                          headers.get("accept-encoding"), self._compression)
            else:
                data = None
                size, keep_alive = self._send_streamed(conn, request, content, status,
                                                       response_headers, keep_alive)
        except ConnectionEnded as exc:
            if conn.upgraded is not None:
                return self._end_session(conn, request, real_ip, started, forwarded_real_ip, trusted, True)
            return None, exc.message
        except StreamFailed as exc:
            logger.error("%s %s: %s", method, request.query, exc.message)
            if exc.started:  # too late for a 500: end the connection, the client sees the truncation
                return None, exc.message
            status, data, keep_alive = self._server_error(keep_alive, request)
        except ResponseError as exc:
            logger.error("%s %s: %s", method, request.query, exc)
            status, data, keep_alive = self._server_error(keep_alive, request)
        except BodyReadError:
            data = None  # answered below
        except HANDLER_FAULTS:
            logger.error("handler failed on %s %s:\n%s", method, request.query, traceback.format_exc())
            if conn.upgraded is not None:
                return self._end_session(conn, request, real_ip, started, forwarded_real_ip, trusted, True)
            status, data, keep_alive = self._server_error(keep_alive, request)

        if type(body) is BodyReader and body.error is not None and size is None:
            # The body broke its limit or its framing, or the client left: no response made then holds.
            if body.error.status is None:
                return None, body.error.message
            return self._refuse(conn, client_ip, request, body.error.status, body.error.message)
        if data is not None:
            try:
                conn.send_response(data, cfg["response_send_timeout"], keep_alive and client is conn)
            except ConnectionEnded as exc:
                return None, exc.message
            size = len(data)
        if type(body) is BodyReader and not body.done:
            keep_alive = keep_alive and body.drain()
            conn.linger = not keep_alive  # closing: drain (bounded) so the response is not reset away
        if access_logger.isEnabledFor(ACCESS):
            self._access.log(request, real_ip, status, size, started, forwarded_real_ip, trusted=trusted)
        if self._metrics is not None:
            self._metrics.request(conn, method, status, size, started)
        return ("keep-alive" if keep_alive else "close"), None

    def _send_streamed(self, conn, request, content, status, response_headers, keep_alive):
        """Send an iterable or file body as it is produced: (bytes sent, keep_alive).

        Files of known size go out with sendfile when nothing needs encoding;
        everything else is chunked (HTTP/1.1) or closed-delimited (HTTP/1.0).
        ``content.close()`` is called in every case, also when the client left.
        """
        try:
            size = None
            if hasattr(content, "read"):
                size = content.length if type(content) is FileRange else _file_size(content)
                chunks = _read_blocks(content)
            else:
                try:
                    chunks = iter(content)
                except TypeError:
                    raise ResponseError("handler returned content of type %s; expected str, bytes, "
                                        "None, an iterable or a file" % type(content).__name__) from None
            timeout = self.cfg["response_send_timeout"]
            head_only = request.method == "HEAD"
            head, keep_alive, chunked, coding, length = render_stream_head(
                status, response_headers, keep_alive, request.version == "HTTP/1.0", head_only,
                request.headers.get("accept-encoding"), self._compression, size)
            if head_only or not body_allowed(status):
                conn.sendall(head, timeout)
                return len(head), keep_alive
            if size is not None and length == size and coding is None and not conn.tls:
                return conn.send_file(head, content, size, timeout), keep_alive
            encoder = StreamEncoder(coding, self._compression.level) if coding else None
            return conn.send_stream(head, chunks, chunked, length, encoder, timeout), keep_alive
        finally:
            close = getattr(content, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    logger.error("closing the response body failed:\n%s", traceback.format_exc())

    def _end_session(self, conn, request, client_ip, started, forwarded_real_ip, trusted, failed):
        """The handler of an upgraded connection returned (or raised: ``failed``): close
        the session, log it (status 101, bytes sent, the session's duration), end the connection."""
        session = conn.upgraded
        session.end(failed)
        if access_logger.isEnabledFor(ACCESS):
            self._access.log(request, client_ip, 101, session.bytes_sent, started, forwarded_real_ip, trusted=trusted)
        return None, "upgraded"

    def _server_error(self, keep_alive, request):
        data, keep_alive = render(500, {"content-type": "text/plain; charset=utf-8"},
                                  "500 Internal Server Error\n", keep_alive,
                                  request.version == "HTTP/1.0", request.method == "HEAD")
        return 500, data, keep_alive

    def _refuse(self, conn, client_ip, request, status, message):
        """Answer a request that cannot be served, then end the connection."""
        head = request is not None and request.method == "HEAD"
        data = error_response(status, message, head)
        conn.linger = True
        self._send_quietly(conn, data)
        logger.debug("refused request from %s: %d %s", client_ip, status, message)
        if request is not None and not self._trusted[client_ip]:
            request.headers["x-real-ip"] = client_ip  # what the client claims stays out of the log
        if access_logger.isEnabledFor(ACCESS):
            self._access.log(request, client_ip, status, len(data), None, None, conn.refused_head)
        if self._metrics is not None:
            self._metrics.request(conn, request.method if request is not None else "-", status, len(data), None)
        return None, message

    def _send_quietly(self, conn, data):
        try:
            conn.sendall(data, 1.0)
        except ConnectionEnded:
            pass

    def _connection_for(self, sock):
        """The Connection (with its buffer) for a socket passed in by a direct caller."""
        conn = self._direct.get(sock)
        if conn is None:
            conn = self._direct[sock] = Connection(sock)
        self._deadlines.start()
        return conn


def _file_size(f):
    """Bytes left from the position of a plain file object (whose fileno() holds
    what read() returns, unlike e.g. gzip.open's), or None."""
    if not isinstance(f, (io.FileIO, io.BufferedReader)):
        return None
    try:
        stat = os.fstat(f.fileno())
        if not statmodule.S_ISREG(stat.st_mode):
            return None
        return max(0, stat.st_size - f.tell())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _read_blocks(f):
    while True:
        block = f.read(FILE_BLOCK)
        if not block:
            return
        yield block
