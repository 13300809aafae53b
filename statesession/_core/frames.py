"""Wire protocol v1: the frame values and the bounds on their fields (sans-IO).

Theory of operation
-------------------
A frame is one JSON object with a string field ``type``; each frame type is a frozen
value class here, one field per JSON field. :mod:`.codec` writes their text and
:mod:`.decode` reads and validates it; both take the version and the field bounds
(:data:`MAX_ID_LENGTH`, :data:`MAX_TEXT_LENGTH`, :data:`MAX_SEQ`) from here.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import attrs

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_SEQ",
    "MAX_TEXT_LENGTH",
    "PROTOCOL_VERSION",
    "AckFrame",
    "ByeFrame",
    "ClientFrame",
    "ClosedFrame",
    "ErrorFrame",
    "Frame",
    "HelloFrame",
    "MsgFrame",
    "PingFrame",
    "PongFrame",
    "ServerFrame",
    "StateFrame",
    "WelcomeFrame",
]

PROTOCOL_VERSION: Final = 1

#: Longest identifier (session id, client id) and token accepted, in characters.
MAX_ID_LENGTH: Final = 128
#: Longest free-text field (reasons, error messages) accepted, in characters.
MAX_TEXT_LENGTH: Final = 1024
#: Largest sequence number: seqs are 63-bit so that every peer can hold them.
MAX_SEQ: Final = 2**63 - 1


@attrs.frozen(kw_only=True)
class HelloFrame:
    """Client's first frame: create a session, join one as a new client, or resume one
    as the client it was (``resume``)."""

    v: int = PROTOCOL_VERSION
    session: str | None = None
    token: str | None = None
    client: str | None = None
    #: Resuming: the highest server seq the client has processed. Joining: 0 for every
    #: message the server still holds, omitted for those sent from now on.
    ack: int | None = None
    #: Credentials for the server's ``authenticate`` hook, any JSON value.
    auth: Any = None
    #: This is ``client``, welcomed into ``session`` before, continuing its streams; the
    #: server refuses (``resume_gap``) if it no longer remembers it.
    resume: bool = False


@attrs.frozen(kw_only=True)
class WelcomeFrame:
    """Server's answer to ``hello``: the session is attached."""

    v: int = PROTOCOL_VERSION
    session: str
    token: str
    client: str
    resumed: bool
    state: str
    #: Highest client seq the server has processed for this client.
    ack: int
    #: Seconds between server pings on an idle connection.
    heartbeat: float
    #: Seconds the session waits for the client after a disconnect.
    window: float
    #: What the session's inbox holds for its application, in messages and in bytes
    #: (counted as :func:`decoded_cost` counts): a client keeps its unacknowledged
    #: messages within both, so the server never stops reading it. (Absent: no bound.)
    inbox_messages: int | None = None
    inbox_bytes: int | None = None
    #: The highest of this client's seqs the server has received (the application took
    #: them, or will): a client resuming from a new process, without the messages it
    #: sent before, numbers on from here. (Absent: ``ack``.)
    received: int | None = None


@attrs.frozen(kw_only=True)
class MsgFrame:
    """An application message; ``seq`` starts at 1 per direction and never repeats."""

    seq: int
    data: Any


@attrs.frozen(kw_only=True)
class AckFrame:
    """Cumulative acknowledgement: every message up to ``seq`` was processed."""

    seq: int


@attrs.frozen(kw_only=True)
class PingFrame:
    """Liveness probe; the peer answers ``pong``."""


@attrs.frozen(kw_only=True)
class PongFrame:
    """Answer to ``ping``."""


@attrs.frozen(kw_only=True)
class ByeFrame:
    """Client ends the session on purpose."""

    reason: str | None = None


@attrs.frozen(kw_only=True)
class StateFrame:
    """The session's lifecycle state changed."""

    state: str


@attrs.frozen(kw_only=True)
class ErrorFrame:
    """Something the peer sent was refused; ``fatal`` means the connection closes next."""

    code: str
    message: str
    fatal: bool


@attrs.frozen(kw_only=True)
class ClosedFrame:
    """The session has ended; the connection closes next."""

    reason: str


ClientFrame: TypeAlias = HelloFrame | MsgFrame | AckFrame | PingFrame | PongFrame | ByeFrame
ServerFrame: TypeAlias = (
    WelcomeFrame
    | MsgFrame
    | AckFrame
    | PingFrame
    | PongFrame
    | StateFrame
    | ErrorFrame
    | ClosedFrame
)
Frame: TypeAlias = ClientFrame | ServerFrame
