"""Logging through Python's ``logging``, with Lilush's level names.

Levels: debug, access (between debug and info: one line per request), info,
warn, error. Server messages go to the ``lilush_http`` logger, access entries
to ``lilush_http.access``; handlers get a :class:`Logger` as ``ctx["logger"]``.
"""

import json
import logging
import os
import sys

ACCESS = 15
logging.addLevelName(ACCESS, "ACCESS")

LEVELS = {
    "debug": logging.DEBUG,
    "access": ACCESS,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def ensure_output(logger):
    """Give the logger a stderr handler when the program configured none, so that
    a plain script sees the start line and access log as Lilush users expect."""
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.lilush_default = True
        logger.addHandler(handler)


class LogFile:
    """A log file written one whole line per ``os.write`` on an ``O_APPEND`` descriptor,
    so processes sharing the file never interleave mid-line; "-" is stderr."""

    def __init__(self, path, fd):
        self.path = path
        self.fd = fd

    def write(self, data):
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            pass  # a full disk or a closed stderr must not fail a request

    def reopen(self):
        """Open the path again (after logrotate moved the file) on the same descriptor."""
        if self.path == "-":
            return None
        fd, err = _open(self.path)
        if err:
            return err
        os.dup2(fd, self.fd)
        os.close(fd)
        return None


_files = {}  # path -> LogFile, shared by the access and error logs of this process


def _open(path):
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644), None
    except OSError as exc:
        return None, "cannot open %s: %s" % (path, exc.strerror or exc)


def open_file(path):
    """``(LogFile, None)`` for ``path`` ("-": stderr), opened once per process, or ``(None, err)``."""
    file = _files.get(path)
    if file is None:
        if path == "-":
            fd, err = 2, None
        else:
            fd, err = _open(path)
        if err:
            return None, err
        file = _files[path] = LogFile(path, fd)
    return file, None


def reopen_files():
    """SIGUSR1: open every log file again, so that lines go to the new file after rotation."""
    for file in list(_files.values()):
        err = file.reopen()
        if err:
            logging.getLogger("lilush_http").error("reopening the log: %s", err)


class LineHandler(logging.Handler):
    """The error log: each record formatted as one line and written with one write."""

    def __init__(self, file):
        super().__init__()
        self.file = file
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record):
        try:
            self.file.write((self.format(record) + "\n").encode("utf-8", "backslashreplace"))
        except Exception:
            self.handleError(record)


def use_error_log(logger, path):
    """Send ``logger``'s messages to ``path`` ("-": stderr), or, with None, back to the
    program's logging setup; ``(True, None)`` or ``(None, err)``."""
    current = [h for h in logger.handlers if isinstance(h, LineHandler)]
    if current and path is not None and current[0].file.path == path:
        return True, None
    handler = None
    if path is not None:
        file, err = open_file(path)
        if err:
            return None, "error_log: %s" % err
        handler = LineHandler(file)
    for old in current:
        logger.removeHandler(old)
    if handler is not None:
        for old in list(logger.handlers):  # ensure_output's stderr handler
            if getattr(old, "lilush_default", False):
                logger.removeHandler(old)
        logger.addHandler(handler)
    else:
        ensure_output(logger)
    return True, None


class Logger:
    """The handler-facing logger: ``ctx["logger"].log(message, "error")`` as in Lilush.

    A dict message is written as one JSON object; str messages as they are.
    """

    __slots__ = ("logger",)

    def __init__(self, logger):
        self.logger = logger

    def log(self, message, level="info"):
        levelno = LEVELS.get(level, logging.INFO)
        if self.logger.isEnabledFor(levelno):
            if isinstance(message, dict):
                message = json.dumps(message, default=str, separators=(",", ":"))
            self.logger.log(levelno, "%s", message)

    def debug(self, message):
        self.log(message, "debug")

    def access(self, message):
        self.log(message, "access")

    def info(self, message):
        self.log(message, "info")

    def warn(self, message):
        self.log(message, "warn")

    warning = warn

    def error(self, message):
        self.log(message, "error")

    def exception(self, message):
        """Log at error level with the traceback of the exception being handled."""
        self.logger.error("%s", message, exc_info=True)

    @property
    def level(self):
        return self.logger.getEffectiveLevel()
