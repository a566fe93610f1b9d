"""The transport: the only code that reads or writes client sockets, and the
accept step that hands a connection to its protocol driver."""

from .connection import (BLOCK_SIZE, ConnectionEnded, Phase, StreamFailed, Transport,  # noqa: F401
                         monotonic, shutdown)
