"""Logging through Python's ``logging``, with Lilush's level names.

Levels: debug, access (between debug and info: one line per request), info,
warn, error. Server messages go to the ``lilush_http`` logger, access entries
to ``lilush_http.access``; handlers get a :class:`Logger` as ``ctx["logger"]``.
"""

import json
import logging
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
        logger.addHandler(handler)


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
