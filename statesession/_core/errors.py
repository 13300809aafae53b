"""Wire protocol v1: its error codes (sans-IO)."""

from __future__ import annotations

from typing import Final

__all__ = ["ERROR_CODES", "RETRYABLE_CODES"]

#: Every error code of protocol v1.
ERROR_CODES: Final = frozenset(
    {
        "bad_frame",
        "bad_version",
        "handshake_timeout",
        "unknown_session",
        "bad_token",
        "resume_gap",
        "session_limit",
        "frame_too_large",
        "terminated",
        "server_shutdown",
        "unavailable",
    }
)
#: The fatal errors after which the same hello can succeed later: the server is stopping
#: (and the next one may resume the session), or cannot attach the session right now
#: (it is being saved, its store is failing, the server is full). A client reconnects
#: after these, with backoff; after any other fatal error it gives up and says why.
RETRYABLE_CODES: Final = frozenset({"server_shutdown", "unavailable", "handshake_timeout"})
