"""Every timeout and limit of a session server, in one frozen value (sans-IO)."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from ._exceptions import ConfigError

__all__ = ["SessionConfig"]

MiB = 1024 * 1024

Overflow = Literal["backpressure", "drop_oldest"]
AttachPolicy = Literal["share", "takeover"]


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(
            f"SessionConfig.{attribute.name} must be a positive number, got {value!r}"
        )


def _positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"SessionConfig.{attribute.name} must be a positive integer, got {value!r}"
        )


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(
            f"SessionConfig.{attribute.name} must be zero or a positive number, got {value!r}"
        )


def _one_of(*choices: str) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ConfigError(
                f"SessionConfig.{attribute.name} must be one of {', '.join(map(repr, choices))}, "
                f"got {value!r}"
            )

    return check


@attrs.frozen(kw_only=True)
class SessionConfig:
    """Timeouts (seconds) and limits of a session server.

    Every field has a flag of the same name on ``statesession serve``. Values are checked
    when the config is made: a bad one raises :class:`ConfigError` naming the field.
    """

    #: How long a session without connections waits for its client to come back.
    reconnect_window: float = attrs.field(default=30.0, validator=_positive)
    #: A connection silent for this long is sent a ``ping``.
    heartbeat_interval: float = attrs.field(default=10.0, validator=_positive)
    #: A connection silent for this long is considered dead and detached.
    heartbeat_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Time a new connection has to send its ``hello``.
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Largest frame, in bytes, accepted from or sent to a peer.
    max_frame: int = attrs.field(default=MiB, validator=_positive_int)
    #: Most server messages held for replay (not yet acknowledged by every client).
    buffer_messages: int = attrs.field(default=1000, validator=_positive_int)
    #: Most bytes of server messages held for replay.
    buffer_bytes: int = attrs.field(default=MiB, validator=_positive_int)
    #: What ``session.send`` does when the replay buffer is full: wait for acks
    #: (``"backpressure"``) or drop the oldest message, so that a client that still needed
    #: it gets ``resume_gap`` (``"drop_oldest"``).
    overflow: Overflow = attrs.field(
        default="backpressure", validator=_one_of("backpressure", "drop_oldest")
    )
    #: Whether a new connection joins the ones already attached (``"share"``: each gets
    #: every message) or replaces them (``"takeover"``).
    attach_policy: AttachPolicy = attrs.field(
        default="share", validator=_one_of("share", "takeover")
    )
    #: Time each resource gets to close before it is forced.
    cleanup_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Time tasks get to finish on their own when a session terminates, before they are
    #: cancelled.
    cancel_grace: float = attrs.field(default=1.0, validator=_non_negative)
    #: Time one frame may take to reach a peer before the connection is given up.
    send_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Most live sessions one manager holds.
    max_sessions: int = attrs.field(default=10_000, validator=_positive_int)
    #: Most live sessions one authenticated principal may hold.
    max_sessions_per_principal: int = attrs.field(default=100, validator=_positive_int)
    #: Most clients a session remembers (for deduplication and resume).
    max_clients: int = attrs.field(default=16, validator=_positive_int)
    #: Client messages queued for the application. A message is acknowledged when the
    #: application takes it, so a client keeping to its window of unacknowledged messages
    #: (the Python client's ``max_pending``, 1000) never fills it; past this, a
    #: connection is not read until the application catches up.
    inbox_messages: int = attrs.field(default=1000, validator=_positive_int)

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_timeout < self.heartbeat_interval:
            raise ConfigError(
                f"SessionConfig.heartbeat_timeout ({self.heartbeat_timeout}) must be at least "
                f"heartbeat_interval ({self.heartbeat_interval}), or every idle peer would "
                "be dropped before it was pinged"
            )
        if self.buffer_bytes < self.max_frame:
            raise ConfigError(
                f"SessionConfig.buffer_bytes ({self.buffer_bytes}) must be at least max_frame "
                f"({self.max_frame}), or a message of the largest size could never be held"
            )
