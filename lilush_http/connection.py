"""Compatibility names: the transport moved to lilush_http/transport/connection.py."""

from .protocols.http1 import skip_blank_lines  # noqa: F401
from .transport.connection import (BATCH_BYTES, BATCH_RESPONSES, RECV_SIZE, Connection,  # noqa: F401
                                   ConnectionEnded, StreamFailed, Transport, shutdown)
