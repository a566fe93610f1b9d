"""Streamed request bodies for handlers: ``@streamed_body`` makes the handler's
``body`` a file-like reader (``read(n)``, ``readline()``, iteration) instead of
bytes, read as the handler reads (protocols/body_reader.py for HTTP/1.1)."""

from .protocols.body_reader import BodyReadError, BodyReader  # noqa: F401


def streamed_body(handle):
    """Decorator: ``handle`` gets its request body as a reader rather than bytes."""
    handle.stream_body = True
    return handle
