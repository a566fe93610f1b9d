"""WebSocket for handlers: ``websocket.upgrade(method, headers, ctx)`` (see
protocols/websocket.py, where the session lives)."""

from .protocols.websocket import (ABNORMAL, GOING_AWAY, INTERNAL_ERROR, MESSAGE_TOO_BIG, NEEDS_HTTP1, NORMAL,  # noqa: F401
                                  BoundedDeflate, RawSocket, Sessions, Takeover, WebSocket, WebSocketError,
                                  WSGIWebSocket, check, upgrade)
