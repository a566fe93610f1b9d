"""The Lilush ``http.server`` API on gevent: new, configure, serve, process_request.

A ``gevent.server.StreamServer`` with a gevent Pool of ``connection_limit`` (transport/pool.py)
hands each accepted socket to a greenlet: the accept step (transport/accept.py)
gives it to its protocol driver (protocols/), whose requests go through the
exchange (exchange.py) to the handler. Failures are returned Lua-style as
``(None, "message")``, never raised. See docs/architecture.rst.
"""

import logging
import time
import weakref

import gevent
from gevent.event import Event
from gevent.server import StreamServer

from . import config as configuration
from . import metrics, redis_client, websocket
from .access import AccessLog
from .log import LEVELS, Logger, ensure_output, use_error_log
from .protocols import http1
from .settings import freeze
from .stopping import RemoteStop, WindDown
from .transport import listeners, tls
from .transport.accept import Acceptor, alpn_offered
from .transport.admission import Admission
from .transport.connection import Transport
from .transport.deadlines import Deadlines
from .transport.pool import ConnectionPool

logger = logging.getLogger("lilush_http")

DRAIN_IDLE = 1.0  # draining for a reload: seconds an idle keep-alive client gets to send one more request


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
    """An HTTP/1.1 server; ``cfg`` is the merged config, the same dict handlers see as
    ctx["cfg"]; ``settings`` what the last configure froze (settings.py)."""

    def __init__(self, handle):
        self.handle = handle
        self.cfg = configuration.defaults()
        self.logger = Logger(logger)
        self.redis = None
        self.settings = freeze(self.cfg, handle, None, AccessLog.build(self.cfg)[0], None, None, self.logger)
        self._server = None
        self._listener = None
        self._listening = None  # the listeners.Listener while serving (its name for the start line)
        self._exposition = None  # the metrics listener (metrics.Exposition) while serving with metrics on
        self._pool = None
        self._connections = set()
        self._admission = Admission(self._connections, self.cfg)
        self.stopping = False  # drivers finish the current request and end
        self._handing_over = False  # stopping for a reload (drain): the listener stays with the new workers
        self._stopped = None
        self._remote_stop = None  # a RemoteStop while serving: stop() from another thread
        self._direct = weakref.WeakKeyDictionary()  # sockets passed to process_request by callers
        self._websockets = websocket.Sessions()
        self._deadlines = Deadlines(self._connections, self._direct, tick=Deadlines.tick_for(self.cfg))
        self._wind_down = WindDown(self._connections, self._admission, self._websockets, self._deadlines)
        self._acceptor = Acceptor(self, self._connections, self._admission, self._deadlines, self._websockets)
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
        certificates, err = tls.build(merged["ssl"], alpn_offered(merged), merged["tls_ciphers"])
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
        self.cfg.clear()
        self.cfg.update(merged)
        # New connections use the new certificates; open ones keep theirs.
        self.settings = freeze(self.cfg, self.handle, certificates, access, self.settings.recorder, self.redis,
                               self.logger)
        self._deadlines.retune(self.cfg)
        logger.setLevel(LEVELS[self.cfg["log_level"]])
        return True, None

    # -- what drivers and the supervisor see ---------------------------------------

    @property
    def exposition(self):
        """The metrics listener (metrics.Exposition) bound by serve(), or None."""
        return self._exposition

    def close_exposition(self):
        """In a forked worker: close the supervisor's metrics listener copy."""
        if self._exposition is not None:
            self._exposition.close()
            self._exposition = None

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
        and SIGHUP reloads, see process/supervisor.py), this process becomes a
        supervisor that forks the workers sharing the socket; otherwise it serves itself.
        """
        cfg = self.cfg
        listening, err = listeners.listen(cfg)
        if err:
            return None, err
        listeners.reserve_descriptors(cfg["connection_limit"])
        if cfg["metrics"] is not None:  # bound before any fork, so a busy port is this call's error
            self._exposition, err = metrics.listen(cfg["metrics"])
            if err:
                listening.close()
                return None, err
        self._listening = listening
        self._begin(listening.sock)
        try:
            if app is not None or cfg["workers"] > 1:
                from .process.supervisor import Supervisor
                self._supervisor = Supervisor(self, app)
                err = self._supervisor.run(listening.sock)
            else:
                self._serve_on(listening.sock)
        finally:
            self._supervisor = None
            self._end()
            listening.close()
            self._listening = None
            self.close_exposition()
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
                    "https" if self.settings.certificates else "http", self._listening.name,
                    self.cfg["connection_limit"], ", %d workers" % workers if workers and workers > 1 else "")

    def _begin(self, listener):
        self._listener = listener
        self.stopping = False
        self._handing_over = False
        self._stopped = Event()
        self._remote_stop = RemoteStop(self.stop)

    def _end(self):
        self._remote_stop.close()
        self._listener = None

    def _serve_on(self, listener, ready=None):
        """Accept on ``listener`` in this process until stopped."""
        self._pool = ConnectionPool(self.cfg["connection_limit"])
        self._websockets.use_pool(self._pool)
        self._acceptor.open(self._pool, listener)
        self._server = StreamServer(listener, self._acceptor.serve, spawn=self._pool)
        recorder = None
        if self.cfg["metrics"] is not None:
            recorder = metrics.Recorder(self._connections)
            recorder.start()
            self.settings = self.settings.replace(recorder=recorder)
            if self._exposition is not None:  # serving in this process: its metrics are the sum
                self._exposition.start(recorder)
        self._server.start()
        if ready is None:
            self.log_serving()
        else:
            ready()
        self._stopped.wait()
        if recorder is not None:
            recorder.stop()
            self.settings = self.settings.replace(recorder=None)

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
        if self._remote_stop.elsewhere():
            self._remote_stop.request(timeout, idle_grace, self.cfg["drain_delay"])
            return
        if self.stopping:
            return
        self.stopping = True  # from now on every response says Connection: close
        if self._supervisor is not None:  # it sends the workers SIGTERM and collects them
            self._supervisor.wake()
            return
        if self._server is None:
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
        self._wind_down.run(self._server, self._listener, self._pool, time.monotonic() + timeout, idle_grace,
                            handing_over)
        self._server = None
        logger.info("lilush_http stopped")
        self._stopped.set()
        self._remote_stop.done()

    def drain(self):
        """Stop as for a reload (SIGQUIT in a worker): idle clients get DRAIN_IDLE seconds,
        and the listener is left to the new workers at once."""
        self._handing_over = True
        self.stop(idle_grace=DRAIN_IDLE)

    # -- one request ---------------------------------------------------------------

    def process_request(self, client, client_ip, count, redis_module=None):
        """Read one request from ``client``, run the handler, send the response.

        Returns ``("keep-alive" | "close", None)``, or ``(None, err)`` when the
        connection must end: "closed", "keepalive timeout", "request header
        timeout", "request body timeout", "response send timeout", or what was
        wrong with the request (after answering it with a 4xx/5xx).
        """
        conn = client if isinstance(client, Transport) else self._connection_for(client, client_ip)
        stream = http1.Http1Stream(conn, self, client_ip, client is conn)
        return http1.turn(stream, self.settings, count, redis_module)

    def _connection_for(self, sock, client_ip):
        """The Transport (with its buffer) for a socket passed in by a direct caller."""
        conn = self._direct.get(sock)
        if conn is None:
            conn = self._direct[sock] = Transport(sock, client_ip=client_ip, sessions=None)
        self._deadlines.start()
        return conn
