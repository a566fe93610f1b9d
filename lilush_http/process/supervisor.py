"""Worker processes on one shared listener: start them, replace one that dies,
reload on SIGHUP (new workers take over, old ones drain), reopen logs on SIGUSR1.

A reload forks a new generation of workers; each imports the handler and
builds its server itself, then says it is ready over a pipe. Only when every
new worker is ready do the old ones get SIGQUIT (finish what they serve, then
exit), so no request fails; if one of them fails instead, the old generation
keeps serving and the log says why. The supervisor's pid never changes.
"""

import logging
import os
import signal
import time
import traceback

import gevent
from gevent.event import Event
from gevent.os import waitpid
from gevent.select import select

from .. import log, metrics
from ..transport import listeners

logger = logging.getLogger("lilush_http")

READY_TIMEOUT = 60  # seconds a new worker may take to import its handler and start accepting
DRAIN = signal.SIGQUIT  # what tells a worker to finish its connections and exit


class Supervisor:
    """Runs ``server``'s workers; ``app`` (optional) is what a reload re-reads: its
    ``load_config()`` gives ``(config, err)`` in the supervisor, and its
    ``build(config)`` gives ``(server, err)`` in a fresh worker. Without an app
    the workers serve a forked copy of ``server``.

    The server is seen only through its worker-facing methods: ``cfg``,
    ``stopping``, ``stop()``, ``drain()``, ``log_serving(n)``, ``exposition``,
    ``close_exposition()`` and ``serve_worker(listener, ready)``."""

    def __init__(self, server, app=None):
        self.server = server
        self.app = app
        self.config = server.cfg
        self.count = server.cfg["workers"]
        self.generation = 0
        self.generations = 0  # the last generation number handed out
        self.workers = {}  # pid -> (generation, start time)
        self.listener = None
        self._reload = False
        self._reopen = False
        self._wake = Event()
        self._watchers = []
        self._pending = []  # ready-pipe ends a worker forked now must not keep

    # -- signals (only when an app is given: the CLI's process owns them) ---------------

    def _watch_signals(self):
        handlers = {signal.SIGTERM: self.server.stop, signal.SIGINT: self.server.stop,
                    signal.SIGHUP: self.reload, signal.SIGUSR1: self.reopen_logs}
        self._watchers = [gevent.signal_handler(signum, handler) for signum, handler in handlers.items()]

    def wake(self):
        self._wake.set()

    def reload(self):
        """SIGHUP: start a new generation of workers (in the supervising loop)."""
        self._reload = True
        self._wake.set()

    def reopen_logs(self):
        """SIGUSR1: reopen this process's log files and have every worker do the same."""
        self._reopen = True
        self._wake.set()

    # -- the supervising loop ------------------------------------------------------------

    def run(self, listener):
        """Start the workers and keep them running until the server is stopped;
        returns None, or an error when the first workers could not start."""
        self.listener = listener
        exposition = self.server.exposition
        if exposition is not None:  # before the first fork: the workers share one metrics directory
            metrics.prepare_multiprocess()
            exposition.start()
        if self.app is not None:
            self._watch_signals()
        try:
            err = self._start_generation(self.config)
            if err:
                return None if self.server.stopping else err
            self.server.log_serving(self.count)
            self._supervise()
            return None
        finally:
            for watcher in self._watchers:
                watcher.cancel()
            self._stop_workers()
            if exposition is not None:
                metrics.finish_multiprocess()

    def _supervise(self):
        while not self.server.stopping:
            if self._reload:
                self._reload = False
                self._reload_now()
            if self._reopen:
                self._reopen = False
                log.reopen_files()
                for pid in self.workers:
                    _signal(pid, signal.SIGUSR1)
            self._reap()
            current = sum(1 for generation, _ in self.workers.values() if generation == self.generation)
            for _ in range(self.count - current):
                if not self.server.stopping:
                    _, ready = self._fork(self.generation, self.config)
                    os.close(ready)  # a replacement is not waited for
                    self._pending.remove(ready)
            self._wake.wait(0.2)
            self._wake.clear()

    def _reap(self):
        while self.workers:
            try:
                pid, status = waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if self.server.exposition is not None:
                metrics.worker_ended(pid)
            generation, started = worker
            if generation != self.generation or self.server.stopping:
                logger.debug("worker %d ended (%s)", pid, _exit_reason(status))
                continue
            logger.warning("worker %d ended (%s); starting another", pid, _exit_reason(status))
            if time.monotonic() - started < 1:
                gevent.sleep(1)  # a worker that dies at once: do not spin

    def _stop_workers(self):
        """SIGTERM every worker (again while they finish) until all have exited. When
        the server stops, after its ``drain_delay`` (the workers' own), the shared
        listener stops taking connections for all of them at once (listeners.py)."""
        for pid in self.workers:
            _signal(pid, signal.SIGTERM)
        if self.server.stopping and self.listener is not None:
            gevent.sleep(self.config["drain_delay"])
            listeners.stop_listening(self.listener)
        while self.workers:
            for pid in self.workers:
                _signal(pid, signal.SIGTERM)
            gevent.sleep(0.2)
            self._reap()

    # -- generations ---------------------------------------------------------------------

    def _reload_now(self):
        logger.info("reloading: new workers take over, the old ones drain")
        config = self.config
        if self.app is not None:
            config, err = self.app.load_config()
            if err:
                logger.error("reload failed: %s; the old workers keep serving", err)
                return
            for key in ("ip", "port", "backlog"):
                if config[key] != self.config[key]:
                    logger.warning("reload: a new %s takes a restart; keeping %r", key, self.config[key])
        old = self.generation
        err = self._start_generation(config)
        if err:
            logger.error("reload failed: %s; the old workers keep serving", err)
            return
        for pid, (generation, _) in list(self.workers.items()):
            if generation == old:
                _signal(pid, DRAIN)
        logger.info("reloaded: %d new workers serve", self.count)

    def _start_generation(self, config):
        """Fork ``config["workers"]`` workers and wait until each accepts; on failure
        the new ones are stopped and the error returned."""
        self.generations += 1
        generation = self.generations
        pending = {}  # ready pipe -> pid
        for _ in range(config["workers"]):
            pid, ready = self._fork(generation, config)
            pending[ready] = pid
        err = self._await_ready(pending)
        if err:
            for pid, (gen, _) in self.workers.items():
                if gen == generation:
                    _signal(pid, signal.SIGTERM)
            return err
        self.generation = generation
        self.config = config
        self.count = config["workers"]
        return None

    def _await_ready(self, pending):
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "%d new worker(s) not ready after %d s" % (len(pending), READY_TIMEOUT)
                if self.server.stopping:
                    return "stopped while new workers were starting"
                readable, _, _ = select(list(pending), [], [], min(remaining, 0.2))
                for fd in readable:
                    pid = pending.pop(fd)
                    said = os.read(fd, 65536)
                    os.close(fd)
                    if said != b"1":  # why it could not start, or nothing when it crashed
                        return (said.decode("utf-8", "replace")
                                or "worker %d exited (%s) before it was ready" % (pid, self._wait_for(pid)))
            return None
        finally:
            for fd in pending:
                os.close(fd)
            self._pending = []

    def _wait_for(self, pid):
        """The exit reason of a worker that is ending now."""
        _, status = waitpid(pid, 0)
        self.workers.pop(pid, None)
        return _exit_reason(status)

    def _fork(self, generation, config):
        """Start one worker; returns (pid, the read end of its ready pipe)."""
        ready_read, ready_write = os.pipe()
        pid = gevent.fork()
        if pid == 0:
            os.close(ready_read)
            self._work(config, ready_write)  # never returns
        os.close(ready_write)
        self._pending.append(ready_read)
        self.workers[pid] = (generation, time.monotonic())
        logger.debug("worker %d started", pid)
        return pid, ready_read

    def _work(self, config, ready_fd):
        """The body of a worker process: build the server, serve, exit."""
        code = 0
        try:
            _die_with_parent()
            for watcher in self._watchers:
                watcher.cancel()
            for fd in self._pending:
                os.close(fd)
            self.server.close_exposition()  # the supervisor's, forked along
            if self.app is None:
                server = self.server
            else:
                server, err = self.app.build(config)
                if server is None:
                    os.write(ready_fd, err.encode("utf-8", "replace")[:65536])  # the supervisor says it
                    os._exit(2)
            gevent.signal_handler(signal.SIGTERM, server.stop)
            gevent.signal_handler(signal.SIGINT, server.stop)
            gevent.signal_handler(DRAIN, server.drain)
            gevent.signal_handler(signal.SIGUSR1, log.reopen_files)
            gevent.signal_handler(signal.SIGHUP, lambda: None)  # the supervisor reloads

            def ready():
                try:
                    os.write(ready_fd, b"1")
                except OSError:
                    pass
                os.close(ready_fd)

            server.serve_worker(self.listener, ready)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)


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
