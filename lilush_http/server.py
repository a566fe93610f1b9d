"""The Lilush ``http.server`` API on gevent: new, configure, serve, process_request.

A ``gevent.server.StreamServer`` with a ``gevent.pool.Pool(connection_limit)``
hands each accepted socket to a greenlet that loops ``process_request`` for as
long as the connection is kept alive. Failures are returned Lua-style as
``(None, "message")``, never raised.
"""

import io
import logging
import os
import signal
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
from gevent.socket import wait_read

from . import config as configuration
from . import metrics, redis_client, tls
from .compression import Policy, StreamEncoder
from .connection import Connection, ConnectionEnded, StreamFailed, shutdown
from .deadlines import Deadlines
from .log import ACCESS, LEVELS, Logger, ensure_output
from .request import HTTPError, Limits
from .response import ResponseError, body_allowed, error_response, render, render_stream_head

logger = logging.getLogger("lilush_http")
access_logger = logging.getLogger("lilush_http.access")

FIXED_CONTENT = (str, bytes, bytearray, memoryview)
# What a handler may raise that becomes a 500: also sys.exit() and a stray
# GeneratorExit, which must not end the serving loop (GreenletExit, the kill of
# a connection on shutdown, is not caught).
HANDLER_FAULTS = (Exception, SystemExit, GeneratorExit)
# The OS thread's id even when monkeypatching made get_ident() per greenlet.
thread_id = get_original("_thread", "get_ident")
FILE_BLOCK = 256 * 1024


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
        self.cfg = configuration.defaults()
        self.logger = Logger(logger)
        self.redis = None
        self._limits = Limits.from_config(self.cfg)
        self._compression = Policy(self.cfg["compression"])
        self._certificates = None  # tls.Certificates when ssl is configured
        self._server = None
        self._listener = None
        self._pool = None
        self._connections = set()
        self._handshaking = set()  # descriptors of accepted sockets still in the TLS handshake
        self._room_maker = None
        self._waiting = False  # a client waits in the backlog while every slot is taken
        self._stopping = False
        self._stopped = None
        self._loop_thread = None
        self._stop_async = None  # wakes the serving thread's hub when stop() comes from elsewhere
        self._stop_request = None  # (timeout, threading.Event) of such a stop()
        self._metrics = None  # metrics.Recorder of this process while serving with metrics on
        self._direct = weakref.WeakKeyDictionary()  # sockets passed to process_request by callers
        self._deadlines = Deadlines(self._connections, self._direct, tick=Deadlines.tick_for(self.cfg))
        self._access = Logger(access_logger)
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
        certificates, err = tls.build(merged["ssl"])
        if err:
            return None, err
        if merged["redis"] != self.cfg["redis"]:  # a new pool only when the settings change
            redis, err = redis_client.build(merged["redis"])
            if err:
                return None, err
            self.redis = redis
        # New connections use the new certificates; open ones keep theirs.
        self._certificates = certificates
        self.cfg.clear()
        self.cfg.update(merged)
        self._limits = Limits.from_config(self.cfg)
        self._compression = Policy(self.cfg["compression"])
        self._deadlines.tick = Deadlines.tick_for(self.cfg)
        logger.setLevel(LEVELS[self.cfg["log_level"]])
        return True, None

    # -- serving -----------------------------------------------------------------

    @property
    def address(self):
        """The bound ``(ip, port)`` while serving (port 0 in the config gives a free one), else None."""
        if self._listener is None:
            return None
        return self._listener.getsockname()[:2]

    def serve(self):
        """Bind, listen and serve until ``stop``; returns ``(None, None)`` then, or ``(None, err)``.

        With ``workers`` above 1 this process becomes a supervisor: it binds once,
        forks the workers that share the socket, restarts one that dies, and on
        ``stop`` (SIGTERM in the CLI) stops them gracefully and returns.
        """
        cfg = self.cfg
        ip, port = cfg["ip"], cfg["port"]
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        try:
            listener = StreamServer.get_listener((ip.strip("[]"), port), cfg["backlog"], family)
        except OSError as exc:
            return None, "failed to bind %s:%s: %s" % (ip, port, exc.strerror or exc)
        exposition = None
        if cfg["metrics"] is not None:
            exposition, err = metrics.listen(cfg["metrics"])
            if err:
                listener.close()
                return None, err
        self._listener = listener
        self._stopping = False
        self._stopped = Event()
        self._loop_thread = thread_id()
        self._stop_async = gevent.get_hub().loop.async_()
        self._stop_async.start(lambda: gevent.spawn(self.stop, self._stop_request[0]))
        bound = listener.getsockname()
        logger.info("lilush_http serving on %s://%s:%d (connection_limit %d%s)",
                    "https" if self._certificates else "http",
                    bound[0] if ":" not in bound[0] else "[%s]" % bound[0], bound[1],
                    cfg["connection_limit"], ", %d workers" % cfg["workers"] if cfg["workers"] > 1 else "")
        try:
            if cfg["workers"] > 1:
                self._supervise(listener, cfg["workers"], exposition)
            else:
                self._serve_on(listener, exposition)
        finally:
            if exposition is not None:
                exposition.close()
            self._stop_async.stop()
            self._stop_async.close()
            self._stop_async = None
            listener.close()
            self._listener = None
        return None, None

    def _serve_on(self, listener, exposition=None):
        """Accept on ``listener`` in this process until stopped (and serve this
        process's metrics on ``exposition``)."""
        self._pool = Pool(self.cfg["connection_limit"])
        self._server = StreamServer(listener, self._serve_connection, spawn=self._pool)
        if self.cfg["metrics"] is not None:
            self._metrics = metrics.Recorder(self)
            self._metrics.start()
            if exposition is not None:
                exposition.start(self._metrics)
        self._server.start()
        self._stopped.wait()
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None

    def _supervise(self, listener, count, exposition=None):
        """Fork ``count`` workers on the shared listener and keep that many alive
        (and serve the sum of their metrics on ``exposition``)."""
        if exposition is not None:
            metrics.prepare_multiprocess()
            exposition.start()
        try:
            self._keep_workers(listener, count, exposition)
        finally:
            if exposition is not None:
                metrics.finish_multiprocess()

    def _keep_workers(self, listener, count, exposition):
        workers = {}  # pid -> start time
        while True:
            while not self._stopping and len(workers) < count:
                pid = gevent.fork()
                if pid == 0:
                    _die_with_parent()
                    try:
                        if exposition is not None:
                            exposition.close()  # the supervisor's; forked along
                        self._serve_on(listener)
                    finally:
                        os._exit(0)
                workers[pid] = time.monotonic()
                logger.debug("worker %d started", pid)
            if not workers:
                break
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if self._stopping:
                    for pid in workers:
                        _signal(pid, signal.SIGTERM)
                self._stopped.wait(0.2)
                continue
            started = workers.pop(pid, None)
            if exposition is not None:
                metrics.worker_ended(pid)
            if started is not None and not self._stopping:
                logger.warning("worker %d ended (%s); starting another", pid, _exit_reason(status))
                if time.monotonic() - started < 1:
                    gevent.sleep(1)  # a worker that dies at once: do not spin

    def stop(self, timeout=5):
        """Stop accepting, close idle keep-alive connections, let requests in flight
        finish (their responses carry ``Connection: close``) for up to ``timeout``
        seconds, then end the rest. May be called from another thread."""
        if self._listener is None:
            return
        if self._loop_thread != thread_id():
            done = threading.Event()
            self._stop_request = (timeout, done)
            self._stop_async.send()
            done.wait(timeout + 5)
            return
        if self._stopping:
            return
        self._stopping = True
        server = self._server
        if server is None:  # a supervisor: _supervise sends the workers SIGTERM and collects them
            self._stopped.set()
            return
        server.close()
        if self._room_maker is not None:
            self._room_maker.kill(block=False)
        for conn in list(self._connections):
            if conn.idle:
                conn.evict()
        for fd in list(self._handshaking):
            shutdown(fd, socket.SHUT_RDWR)  # the handshake fails at once
        self._pool.join(timeout=timeout)
        self._pool.kill(block=True, timeout=1)
        self._deadlines.stop()
        self._server = None
        logger.info("lilush_http stopped")
        self._stopped.set()
        if self._stop_request is not None:
            self._stop_request[1].set()
            self._stop_request = None

    def _serve_connection(self, sock, address):
        """One connection's greenlet: loop process_request, then close the socket."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self._pool.full() and self._room_maker is None:
            self._room_maker = gevent.spawn(self._make_room)
        client_ip = address[0] if isinstance(address, tuple) else str(address)
        certificates = self._certificates
        sni = None
        if certificates is not None:
            fd = sock.fileno()  # the TLS socket takes the descriptor over
            self._handshaking.add(fd)
            try:
                sock, sni = certificates.handshake(sock, self.cfg["tls_handshake_timeout"])
            except tls.HandshakeFailed as exc:
                logger.debug("connection from %s: %s", client_ip, exc)
                metrics.record_tls_handshake_failure()
                sock.close()
                return
            finally:
                self._handshaking.discard(fd)
        conn = (Connection if self._metrics is None else metrics.CountingConnection)(
            sock, sni, certificates is not None)
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
                if self._stopping or (self._waiting and not conn.buf):
                    # Make room for a client waiting in the backlog (or shut down):
                    # this connection would only sit idle now.
                    self._waiting = False
                    break
        except Exception:
            logger.error("connection from %s failed:\n%s", client_ip, traceback.format_exc())
        finally:
            self._connections.discard(conn)
            if self._metrics is not None:
                self._metrics.connection_closed(conn)
            conn.close()

    def _make_room(self):
        """While every slot is taken: when a new client is waiting to be accepted, close
        the connection that has been idle longest (as nginx does), or, when all
        are busy, have the next one to finish a request close instead of idling."""
        try:
            listener = self._server.socket.fileno()
            while not self._stopping and self._pool.full():
                self._waiting = False
                wait_read(listener)
                if not self._pool.full():
                    break
                idle = [c for c in self._connections if c.idle]
                if idle:
                    min(idle, key=lambda c: c.idle_since).evict()
                else:
                    self._waiting = True
                gevent.sleep(0.05)
        except Exception:  # the listener closed under us: stop() is running
            pass
        finally:
            self._waiting = False
            self._room_maker = None

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
            body = (conn.read_body(request, cfg["request_body_timeout"], limits)
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
        if forwarded_real_ip is None:
            headers["x-real-ip"] = client_ip
        method = request.method
        ctx = {"logger": self.logger, "client": conn, "cfg": cfg, "client_ip": client_ip,
               "redis": redis_module, "count": count, "sni": conn.sni, "version": request.version}
        keep_alive = request.keep_alive and count < cfg["requests_per_connection"]
        conn.phase = "handler"
        try:
            result = self.handle(method, request.query, request.args, headers, body, ctx)
            keep_alive = keep_alive and not self._stopping
            if type(result) is tuple and len(result) == 3:
                content, status, response_headers = result
            elif type(result) is tuple and 1 <= len(result) <= 2:
                content, status, response_headers = result + (None,) * (3 - len(result))
            else:
                raise ResponseError("handler returned %r; expected a tuple (content, status, headers)"
                                    % (type(result).__name__ if result is not None else None,))
            if content is None and status is None and response_headers is None:
                return "keep-alive", None  # the handler answered on the socket itself
            if status is None:
                status = 200
            elif type(status) is int and 100 <= status < 200:
                keep_alive = False  # after an informational final answer, HTTP cannot go on
            conn.phase = "sending"
            if content is None or isinstance(content, FIXED_CONTENT):
                data, keep_alive = render(status, response_headers, content, keep_alive,
                                          request.version == "HTTP/1.0", method == "HEAD",
                                          headers.get("accept-encoding"), self._compression)
            else:
                data = None
                size, keep_alive = self._send_streamed(conn, request, content, status,
                                                       response_headers, keep_alive)
        except ConnectionEnded as exc:
            return None, exc.message
        except StreamFailed as exc:
            logger.error("%s %s: %s", method, request.query, exc.message)
            if exc.started:  # too late for a 500: end the connection, the client sees the truncation
                return None, exc.message
            status, data, keep_alive = self._server_error(keep_alive, request)
        except ResponseError as exc:
            logger.error("%s %s: %s", method, request.query, exc)
            status, data, keep_alive = self._server_error(keep_alive, request)
        except HANDLER_FAULTS:
            logger.error("handler failed on %s %s:\n%s", method, request.query, traceback.format_exc())
            status, data, keep_alive = self._server_error(keep_alive, request)

        if data is not None:
            try:
                conn.sendall(data, cfg["response_send_timeout"])
            except ConnectionEnded as exc:
                return None, exc.message
            size = len(data)
        if access_logger.isEnabledFor(ACCESS):
            self._log_access(request, client_ip, status, size, started, forwarded_real_ip)
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
                size = _file_size(content)
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
        if access_logger.isEnabledFor(ACCESS):
            self._log_access(request, client_ip, status, len(data), None, None)
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

    def _log_access(self, request, client_ip, status, size, started, forwarded_real_ip):
        headers = request.headers if request is not None else {}
        entry = {
            "vhost": headers.get("host", "-"),
            "client_ip": client_ip,
            "method": request.method if request is not None else "-",
            "query": request.query if request is not None else "-",
            "status": status,
            "size": size,
            "time": round(time.perf_counter() - started, 6) if started else 0,
        }
        forwarded_for = headers.get("x-forwarded-for")
        if forwarded_for is not None:
            entry["forwarded_for"] = forwarded_for
        if forwarded_real_ip is not None:
            entry["forwarded_real_ip"] = forwarded_real_ip
        for name in self.cfg["log_headers"]:
            value = headers.get(name)
            if value is not None:
                entry[name] = value
        self._access.log(entry, "access")


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


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _exit_reason(status):
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.WEXITSTATUS(status)


def _die_with_parent():
    """Linux: a worker gets SIGTERM when its supervisor dies, so none is orphaned."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
