"""Prometheus metrics on a listener of their own (config ``metrics: {"ip", "port"}``).

The request path only counts into plain ints and dicts of this process's
Recorder; a greenlet folds them into prometheus_client objects once a second
(and a scrape served by the same process folds first). With workers the values
go through prometheus_client's multiprocess mode: each worker writes its own
files under PROMETHEUS_MULTIPROC_DIR, and the supervisor's listener sums them.
"""

import logging
import os
import shutil
import socket
import tempfile
import traceback
from bisect import bisect_left
from time import perf_counter

import gevent

from .tables import check_table, port_problem
logger = logging.getLogger("lilush_http")

DEFAULTS = {"ip": "127.0.0.1", "port": 9101}
FLUSH_INTERVAL = 1.0
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PHASES = ("idle", "head", "body", "handler", "sending")
IN_FLIGHT_PHASES = ("body", "handler", "sending")
# Other method names (the parser accepts any token) count as "other", so that a
# client cannot create label values at will.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"))

_recorder = None  # the Recorder of this process while it serves
_made_directory = None  # the PROMETHEUS_MULTIPROC_DIR that prepare_multiprocess created


def validate(cfg):
    """The first problem in the ``metrics`` table, naming the key, or None."""
    merged, problem = check_table("metrics", cfg, DEFAULTS, "ip, port")
    if merged is None:
        return problem
    if not isinstance(merged["ip"], str) or not merged["ip"]:
        return "metrics.ip: expected an address string, got %r" % (merged["ip"],)
    problem = port_problem("metrics.port", merged["port"], 0)
    if problem:
        return problem
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return "metrics: the prometheus_client package is not installed (pip install 'lilush_http[metrics]')"
    return None


# -- hooks for the rest of the server: each costs nothing while metrics are off ------

def record_reclaim(reason):
    """A connection was closed to make room for others (``reason``: e.g. "idle")."""
    if _recorder is not None:
        _count(_recorder.reclaims, reason)


def record_slow_client_cut(phase):
    """A client too slow to send its request or read its response was cut (``phase``)."""
    if _recorder is not None:
        _count(_recorder.slow_cuts, phase)


def record_tls_handshake_failure():
    if _recorder is not None:
        _recorder.tls_failures += 1


def websocket_opened():
    if _recorder is not None:
        _recorder.websockets_opened += 1
        _recorder.websockets_open += 1


def websocket_closed():
    if _recorder is not None:
        _recorder.websockets_open -= 1


def _count(counts, key, n=1):
    counts[key] = counts.get(key, 0) + n


class Recorder:
    """This process's counts, and the prometheus_client metrics they are folded into."""

    def __init__(self, connections):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.connections = connections  # the server's open transports, whose phases are sampled
        self.registry = registry = CollectorRegistry(auto_describe=True)
        # Counted on the request path, folded by flush().
        self.requests = {}  # (method, status, protocol) -> count
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket, the last one +Inf
        self.duration_sum = 0.0
        self.bytes_in = self.bytes_out = 0
        self.reclaims = {}
        self.slow_cuts = {}
        self.tls_failures = 0
        self.websockets_opened = self.websockets_open = 0
        self._flusher = None

        def counter(name, text, labels=()):
            return Counter("lilush_http_" + name, text, labels, registry=registry)

        def gauge(name, text, labels=()):
            return Gauge("lilush_http_" + name, text, labels, registry=registry, multiprocess_mode="livesum")

        self.m_requests = counter("requests", "Requests answered, by method, status class and protocol",
                                  ("method", "status", "protocol"))
        self.m_duration = Histogram("lilush_http_request_duration_seconds",
                                    "From the end of the request head to the end of the response",
                                    buckets=DURATION_BUCKETS, registry=registry)
        self.m_in_flight = gauge("requests_in_flight", "Requests between their head and the end of their response")
        self.m_connections = gauge("open_connections", "Open client connections by phase", ("phase",))
        self.m_reclaims = counter("reclaims", "Connections closed to make room for others", ("reason",))
        self.m_slow_cuts = counter("slow_client_cuts", "Connections cut because the client was too slow",
                                   ("phase",))
        self.m_bytes_in = counter("received_bytes", "Bytes read from clients (after TLS decryption)")
        self.m_bytes_out = counter("sent_bytes", "Response bytes written to clients")
        self.m_tls_failures = counter("tls_handshake_failures", "TLS handshakes that failed or timed out")
        self.m_websockets = counter("websocket_sessions", "WebSocket sessions opened")
        self.m_websockets_open = gauge("websocket_sessions_open", "WebSocket sessions open now")
        for phase in PHASES:
            self.m_connections.labels(phase)

    # -- the request path --------------------------------------------------------

    def request(self, method, status, size, started, protocol="HTTP/1.1"):
        """One answered request (an HTTP/2 stream counts as one): ``started`` is its
        perf_counter time, or None (refused); ``protocol`` is its request's version."""
        key = (method, status, protocol)
        try:
            self.requests[key] += 1
        except KeyError:
            self.requests[key] = 1
        if started is not None:
            duration = perf_counter() - started
            self.durations[bisect_left(DURATION_BUCKETS, duration)] += 1
            self.duration_sum += duration
        self.bytes_out += size

    def count_received(self, size):
        """Bytes read from clients (the drivers report them after each request and at the end)."""
        self.bytes_in += size

    # -- folding into prometheus_client -------------------------------------------

    def start(self):
        global _recorder
        _recorder = self
        self._flusher = gevent.spawn(self._flush_every, FLUSH_INTERVAL)

    def stop(self):
        """Stop the periodic flush and flush what is left."""
        global _recorder
        if self._flusher is not None:
            self._flusher.kill()
            self._flusher = None
        self.flush()
        if _recorder is self:
            _recorder = None

    def _flush_every(self, interval):
        while True:
            gevent.sleep(interval)
            try:
                self.flush()
            except Exception:
                logger.error("metrics: flush failed:\n%s", traceback.format_exc())

    def flush(self):
        """Move the counts into the prometheus_client metrics; read the connections' phases."""
        # No greenlet switch can happen between taking and resetting each count.
        requests, self.requests = self.requests, {}
        durations, self.durations = self.durations, [0] * len(self.durations)
        duration_sum, self.duration_sum = self.duration_sum, 0.0
        bytes_in, bytes_out, self.bytes_in, self.bytes_out = self.bytes_in, self.bytes_out, 0, 0
        reclaims, self.reclaims = self.reclaims, {}
        slow_cuts, self.slow_cuts = self.slow_cuts, {}
        tls_failures, websockets, self.tls_failures, self.websockets_opened = (
            self.tls_failures, self.websockets_opened, 0, 0)

        folded = {}
        for (method, status, protocol), n in requests.items():
            _count(folded, (method if method in METHODS else "other", "%dxx" % (status // 100), protocol), n)
        for labels, n in folded.items():
            self.m_requests.labels(*labels).inc(n)
        if duration_sum or any(durations):
            # prometheus_client has no call for adding bucket counts; its Histogram
            # keeps one value per bucket (not cumulative) and the sum.
            self.m_duration._sum.inc(duration_sum)
            for bucket, n in zip(self.m_duration._buckets, durations):
                if n:
                    bucket.inc(n)
        for counts, metric in ((reclaims, self.m_reclaims), (slow_cuts, self.m_slow_cuts)):
            for label, n in counts.items():
                metric.labels(label).inc(n)
        for n, metric in ((bytes_in, self.m_bytes_in), (bytes_out, self.m_bytes_out),
                          (tls_failures, self.m_tls_failures), (websockets, self.m_websockets)):
            if n:
                metric.inc(n)
        self.m_websockets_open.set(self.websockets_open)

        phases = dict.fromkeys(PHASES, 0)
        for conn in list(self.connections):
            phase = getattr(conn, "phase", None)
            if phase is not None and phase.value in phases:
                phases[phase.value] += 1
        for phase, n in phases.items():
            self.m_connections.labels(phase).set(n)
        self.m_in_flight.set(sum(phases[p] for p in IN_FLIGHT_PHASES))


# -- with workers: prometheus_client's multiprocess mode ------------------------------

def prepare_multiprocess():
    """Before forking workers: make sure PROMETHEUS_MULTIPROC_DIR names a directory
    (a fresh temporary one unless the environment gives one) and that metrics
    created from now on write their values there."""
    global _made_directory
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _made_directory = tempfile.mkdtemp(prefix="lilush_http-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _made_directory
    from prometheus_client import values
    if not getattr(values.ValueClass, "_multiprocess", False):  # imported before the variable was set
        values.ValueClass = values.MultiProcessValue()


def worker_ended(pid):
    """A worker is gone: its gauges no longer count (its counters still do)."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(pid)


def finish_multiprocess():
    """After the last worker: remove the directory prepare_multiprocess made."""
    global _made_directory
    if _made_directory is not None:
        shutil.rmtree(_made_directory, ignore_errors=True)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == _made_directory:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        _made_directory = None


# -- the exposition listener -----------------------------------------------------

class Exposition:
    """The HTTP listener Prometheus scrapes: bound by ``listen``, serving once ``start``ed."""

    def __init__(self, listener):
        self.listener = listener
        self.server = None

    @property
    def address(self):
        return self.listener.getsockname()[:2]

    def start(self, recorder=None):
        """Serve ``recorder``'s registry (folding first), or with None the sum of
        every worker's files under PROMETHEUS_MULTIPROC_DIR."""
        from gevent.pywsgi import WSGIServer
        from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess
        if recorder is None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            app = make_wsgi_app(registry)
        else:
            exposition = make_wsgi_app(recorder.registry)

            def app(environ, start_response):
                recorder.flush()
                return exposition(environ, start_response)
        self.server = WSGIServer(self.listener, app, log=None, error_log=logger)
        self.server.start()
        ip, port = self.address
        logger.info("lilush_http metrics on http://%s:%d/metrics", ip if ":" not in ip else "[%s]" % ip, port)

    def close(self):
        """Stop serving and close the listener (also what a forked worker does with its copy)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        self.listener.close()


def listen(cfg, backlog=128):
    """``(Exposition, None)`` bound to the ``metrics`` table's address, or ``(None, err)``."""
    from gevent.server import StreamServer
    cfg = dict(DEFAULTS, **cfg)
    ip = cfg["ip"]
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        listener = StreamServer.get_listener((ip.strip("[]"), cfg["port"]), backlog, family)
    except OSError as exc:
        return None, "metrics: failed to bind %s:%s: %s" % (ip, cfg["port"], exc.strerror or exc)
    return Exposition(listener), None
