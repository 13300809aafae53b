"""Wire protocol v1: its error codes, in one table (sans-IO).

Theory of operation
-------------------
Every error code the protocol has is one row of :data:`ERROR_TABLE`: whether an
``error`` frame with it is always fatal, whether a client may send the same ``hello``
again (with backoff) after it, and the WebSocket close code that follows it when it is
fatal. The sets and the map the rest of the library reads are derived from the table:
:data:`ERROR_CODES`, :data:`RETRYABLE_CODES`, :data:`FINAL_CODES` (the client) and
:data:`CLOSE_CODES` (the WebSocket transports). docs/protocol.md shows the same table;
a test reads it there and compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

__all__ = [
    "CLOSE_CODES",
    "ERROR_CODES",
    "ERROR_TABLE",
    "FINAL_CODES",
    "RETRYABLE_CODES",
    "ErrorCode",
]


@attrs.frozen
class ErrorCode:
    """One error code of protocol v1 and what it means for a connection and a client."""

    code: str
    #: Every ``error`` frame with this code is fatal (the connection closes next). The
    #: others can also be reported with the connection left open: most ``bad_frame``
    #: errors after ``welcome``, and a ``terminated`` answering a ``msg``.
    always_fatal: bool
    #: After it, the same ``hello`` can succeed later, so a client reconnects with
    #: backoff; after any other fatal error it gives up and says why.
    retryable: bool
    #: The WebSocket close code after a fatal ``error`` frame with this code.
    close_code: int


#: Every error code of protocol v1, in the order docs/protocol.md lists them.
ERROR_TABLE: Final[tuple[ErrorCode, ...]] = (
    ErrorCode("bad_frame", always_fatal=False, retryable=False, close_code=4000),
    ErrorCode("bad_version", always_fatal=True, retryable=False, close_code=4001),
    # (The same hello, sent sooner, is answered.)
    ErrorCode("handshake_timeout", always_fatal=True, retryable=True, close_code=4002),
    ErrorCode("unknown_session", always_fatal=True, retryable=False, close_code=4003),
    ErrorCode("bad_token", always_fatal=True, retryable=False, close_code=4004),
    ErrorCode("resume_gap", always_fatal=True, retryable=False, close_code=4005),
    ErrorCode("session_limit", always_fatal=True, retryable=False, close_code=4006),
    ErrorCode("frame_too_large", always_fatal=True, retryable=False, close_code=4007),
    ErrorCode("terminated", always_fatal=False, retryable=False, close_code=4008),
    # (The next server may resume the session.)
    ErrorCode("server_shutdown", always_fatal=True, retryable=True, close_code=4009),
    # (The session is being saved, its store is failing, or the server is full. It has no
    # close code of its own, and shares bad_frame's.)
    ErrorCode("unavailable", always_fatal=True, retryable=True, close_code=4000),
)

#: Every error code of protocol v1.
ERROR_CODES: Final = frozenset(error.code for error in ERROR_TABLE)
#: The fatal errors after which the same hello can succeed later: the server is stopping
#: (and the next one may resume the session), or cannot attach the session right now
#: (it is being saved, its store is failing, the server is full). A client reconnects
#: after these, with backoff; after any other fatal error it gives up and says why.
RETRYABLE_CODES: Final = frozenset(error.code for error in ERROR_TABLE if error.retryable)
#: The codes after which retrying cannot help, when the error is fatal: a client raises
#: them to the application.
FINAL_CODES: Final = ERROR_CODES - RETRYABLE_CODES
#: The WebSocket close code for each error code, after a fatal ``error`` frame.
CLOSE_CODES: Final[Mapping[str, int]] = MappingProxyType(
    {error.code: error.close_code for error in ERROR_TABLE}
)
