"""The exceptions statesession raises, in one tree.

::

    StateSessionError                    everything below; catch this to catch them all
    ├── ConfigError (ValueError)         a SessionConfig value breaks its rule
    ├── ChannelError                     a Channel could not move a frame
    │   ├── ChannelClosedError           this side called aclose(): you closed it
    │   ├── ChannelBrokenError           the peer or the network ended it (__cause__ set)
    │   └── FrameTooLargeError           a frame over the channel's size limit
    ├── ProtocolError                    a peer broke wire protocol v1 (.code, .fatal)
    ├── TransportError                   no transport for a name or URL, or its extra is missing
    ├── StoreError                       the session store failed
    │   ├── CorruptSnapshotError         a stored snapshot or log entry cannot be read
    │   └── StoreVersionError            stored data of a version this code does not know
    ├── LifecycleError                   an event the lifecycle does not accept from outside
    ├── SessionClosedError               the session no longer takes operations (.reason)
    ├── MessageTooLargeError (ValueError) a message whose frame exceeds max_frame
    └── RemoteError                      the server ended the conversation with an error
        └── ResumeGapError               ... because the history to resume from is gone

"You closed it" (``ChannelClosedError``, ``SessionClosedError``) is kept apart from
"the other side or the network broke it" (``ChannelBrokenError``, ``RemoteError``): the
first is a bug or a race in the caller's code, the second is the weather.
"""

from __future__ import annotations

__all__ = [
    "ChannelBrokenError",
    "ChannelClosedError",
    "ChannelError",
    "ConfigError",
    "CorruptSnapshotError",
    "FrameTooLargeError",
    "LifecycleError",
    "MessageTooLargeError",
    "ProtocolError",
    "RemoteError",
    "ResumeGapError",
    "SessionClosedError",
    "StateSessionError",
    "StoreError",
    "StoreVersionError",
    "TransportError",
]


class StateSessionError(Exception):
    """Base class of every exception statesession raises on purpose."""


class ConfigError(StateSessionError, ValueError):
    """A configuration value breaks its rule; the message names the field and the fix."""


class ChannelError(StateSessionError):
    """A :class:`~statesession.Channel` could not move a frame."""


class ChannelClosedError(ChannelError):
    """This side already closed the channel (``aclose()`` was called), then used it."""


class ChannelBrokenError(ChannelError):
    """The peer or the network ended the channel; ``__cause__`` holds the transport's error."""


class FrameTooLargeError(ChannelError):
    """A frame is larger than the channel accepts.

    ``size`` is the frame's length in bytes (UTF-8), or ``None`` when the transport did
    not say; ``limit`` is the largest allowed.
    """

    def __init__(self, size: int | None, limit: int) -> None:
        what = "a frame" if size is None else f"frame of {size} bytes"
        super().__init__(
            f"{what} is over the limit of {limit} bytes; "
            "send smaller messages or raise max_frame on both sides"
        )
        self.size = size
        self.limit = limit


class ProtocolError(StateSessionError):
    """A peer broke wire protocol v1.

    ``code`` is one of the protocol's error codes (``bad_frame``, ``bad_version``, ...),
    ``fatal`` says whether the connection must be closed after reporting it.
    """

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fatal = fatal


class TransportError(StateSessionError):
    """No transport is registered for a name or URL scheme, or the one that is cannot be
    loaded (the message names the extra to install)."""


class StoreError(StateSessionError):
    """The session store failed: its file, its database, or what it holds."""


class CorruptSnapshotError(StoreError):
    """A stored snapshot or event-log entry cannot be read. It is left as it is -- never
    silently replaced -- for an operator to inspect."""


class StoreVersionError(StoreError):
    """Stored data (a database schema or a snapshot) is of a version this code does not
    know, usually because a newer statesession wrote it."""


class LifecycleError(StateSessionError):
    """An event that the session lifecycle does not accept from outside the chart."""


class SessionClosedError(StateSessionError):
    """The session is terminating or terminated and takes no more operations.

    ``reason`` says why it ended (``"bye"``, ``"window_expired"``, ``"app_error"``, ...).
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"session is closed ({reason})")
        self.reason = reason


class MessageTooLargeError(StateSessionError, ValueError):
    """An application message whose encoded frame would exceed ``max_frame``."""


class RemoteError(StateSessionError):
    """The server ended the conversation with a fatal ``error`` frame.

    ``code`` is the protocol error code, ``message`` the server's explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"server refused with {code}: {message}")
        self.code = code
        self.message = message


class ResumeGapError(RemoteError):
    """The server no longer holds the messages needed to resume without a gap.

    Nothing was delivered twice or out of order; what was lost is reported, not hidden.
    """
