"""Every timeout and limit of a session server, in one frozen value (sans-IO)."""

from __future__ import annotations

import math
from typing import Any, Literal

import attrs

from .exceptions import ConfigError

__all__ = ["SessionConfig"]

MiB = 1024 * 1024

Overflow = Literal["backpressure", "drop_oldest"]
AttachPolicy = Literal["share", "takeover"]
WindowExpiry = Literal["passivate", "terminate"]


def _number(attribute: attrs.Attribute[Any], value: Any, *, infinite: bool = False) -> None:
    """A number of seconds: finite (a welcome carries it, and JSON has no infinity),
    except where ``inf`` means "never"; never NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"SessionConfig.{attribute.name} must be a positive number, got {value!r}"
        )
    try:
        as_float = float(value)
    except OverflowError:  # an int too large for a float
        as_float = math.inf
    if math.isnan(as_float) or (math.isinf(as_float) and not infinite):
        raise ConfigError(
            f"SessionConfig.{attribute.name} must be a finite number of seconds, got {value!r}"
        )


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _number(attribute, value)
    if not value > 0:
        raise ConfigError(
            f"SessionConfig.{attribute.name} must be a positive number, got {value!r}"
        )


def _positive_or_never(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _number(attribute, value, infinite=True)
    if not value > 0:
        raise ConfigError(
            f"SessionConfig.{attribute.name} must be a positive number (inf: never), got {value!r}"
        )


#: The largest integer a limit may be: what every JSON peer holds exactly (2**53), since
#: the welcome carries some of them.
MAX_INT = 2**53
#: The smallest max_frame: a welcome (about 350 bytes) must fit in a frame.
MIN_FRAME = 512


def _positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"SessionConfig.{attribute.name} must be a positive integer, got {value!r}"
        )
    if value > MAX_INT:
        raise ConfigError(
            f"SessionConfig.{attribute.name} must be at most 2**53 (what every JSON peer "
            f"holds exactly), got {value!r}"
        )


def _frame_size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _positive_int(instance, attribute, value)
    if value < MIN_FRAME:
        raise ConfigError(
            f"SessionConfig.{attribute.name} must be at least {MIN_FRAME} (a welcome must "
            f"fit in a frame), got {value}"
        )


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _number(attribute, value)
    if value < 0:
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
    Times are finite (``passivate_after`` may be ``inf``, "never"); none may be NaN.
    """

    reconnect_window: float = attrs.field(
        metadata={
            "help": ("How long a session without connections waits for its client to come back.")
        },
        default=30.0,
        validator=_positive,
    )
    heartbeat_interval: float = attrs.field(
        metadata={"help": "A connection silent for this long is sent a ``ping``."},
        default=10.0,
        validator=_positive,
    )
    heartbeat_timeout: float = attrs.field(
        metadata={"help": "A connection silent for this long is considered dead and detached."},
        default=30.0,
        validator=_positive,
    )
    handshake_timeout: float = attrs.field(
        metadata={"help": "Time a new connection has to send its ``hello``."},
        default=10.0,
        validator=_positive,
    )
    max_frame: int = attrs.field(
        metadata={
            "help": (
                "Largest frame, in bytes, accepted from or sent to a peer (at least 512: a "
                "welcome must fit)."
            )
        },
        default=MiB,
        validator=_frame_size,
    )
    buffer_messages: int = attrs.field(
        metadata={
            "help": (
                "Most server messages held for replay (not yet acknowledged by every client)."
            )
        },
        default=1000,
        validator=_positive_int,
    )
    buffer_bytes: int = attrs.field(
        metadata={"help": "Most bytes of server messages held for replay."},
        default=MiB,
        validator=_positive_int,
    )
    overflow: Overflow = attrs.field(
        metadata={
            "help": (
                "What ``session.send`` does when the replay buffer is full: wait for acks "
                '(``"backpressure"``) or drop the oldest message, so that a client that still '
                'needed it gets ``resume_gap`` (``"drop_oldest"``).'
            )
        },
        default="backpressure",
        validator=_one_of("backpressure", "drop_oldest"),
    )
    attach_policy: AttachPolicy = attrs.field(
        metadata={
            "help": (
                'Whether a new connection joins the ones already attached (``"share"``: each '
                'gets every message) or replaces them (``"takeover"``).'
            )
        },
        default="share",
        validator=_one_of("share", "takeover"),
    )
    cleanup_timeout: float = attrs.field(
        metadata={"help": "Time each resource gets to close before it is forced."},
        default=10.0,
        validator=_positive,
    )
    cancel_grace: float = attrs.field(
        metadata={
            "help": (
                "Time tasks get to finish on their own when a session terminates, before they "
                "are cancelled."
            )
        },
        default=1.0,
        validator=_non_negative,
    )
    send_timeout: float = attrs.field(
        metadata={
            "help": ("Time one frame may take to reach a peer before the connection is given up.")
        },
        default=10.0,
        validator=_positive,
    )
    ack_delay: float = attrs.field(
        metadata={
            "help": (
                "Longest a processed client message waits to be acknowledged: acks are "
                "cumulative, so one ``ack`` covers every message processed meanwhile "
                "(0: acknowledge each message at once)."
            )
        },
        default=0.05,
        validator=_non_negative,
    )
    ack_every: int = attrs.field(
        metadata={
            "help": (
                "Acknowledge at once when this many processed client messages are waiting "
                "for their ack."
            )
        },
        default=32,
        validator=_positive_int,
    )
    max_sessions: int = attrs.field(
        metadata={"help": "Most live sessions one manager holds."},
        default=10_000,
        validator=_positive_int,
    )
    max_sessions_per_principal: int = attrs.field(
        metadata={"help": "Most live sessions one authenticated principal may hold."},
        default=100,
        validator=_positive_int,
    )
    max_clients: int = attrs.field(
        metadata={"help": "Most clients a session remembers (for deduplication and resume)."},
        default=16,
        validator=_positive_int,
    )
    inbox_messages: int = attrs.field(
        metadata={
            "help": (
                "Client messages queued for the application, per client. A message is "
                "acknowledged when the application takes it, so a client keeping to its "
                "window of unacknowledged messages (announced in the welcome; the Python "
                "client keeps to it) never fills its share; past this, its connection is not "
                "read until the application catches up."
            )
        },
        default=1000,
        validator=_positive_int,
    )
    inbox_bytes: int = attrs.field(
        metadata={
            "help": (
                "Most bytes of one client's messages queued for the application, each counted "
                "as its size as received (four times it, for text beyond ASCII) plus 56 bytes "
                "per JSON value it may hold (about what decoding it costs); one message is "
                "always taken. Past this, as past inbox_messages, the client's connection is "
                "not read until the application catches up."
            )
        },
        default=MiB,
        validator=_positive_int,
    )
    max_stored_sessions: int = attrs.field(
        metadata={
            "help": (
                "Most sessions the store keeps (passivated). At the quota a session is not "
                "saved: its window's expiry ends it, and an idle or admin passivation does "
                "not happen."
            )
        },
        default=100_000,
        validator=_positive_int,
    )
    peer_session_rate: float = attrs.field(
        metadata={
            "help": (
                "New anonymous sessions (no authenticate hook) one peer address may create "
                "per second, on average; past peer_session_burst it is refused "
                "session_limit."
            )
        },
        default=5.0,
        validator=_positive,
    )
    peer_session_burst: int = attrs.field(
        metadata={"help": "New anonymous sessions one peer address may create at once."},
        default=20,
        validator=_positive_int,
    )
    peer_handshakes: int = attrs.field(
        metadata={
            "help": (
                "Most connections one peer address may have waiting for their welcome "
                "(each may hold up to max_frame of its hello); past it a connection is "
                "refused unavailable."
            )
        },
        default=16,
        validator=_positive_int,
    )
    max_handshakes: int = attrs.field(
        metadata={
            "help": (
                "Most connections waiting for their welcome, from every peer together; past "
                "it a connection is refused unavailable."
            )
        },
        default=1000,
        validator=_positive_int,
    )

    window_expiry: WindowExpiry = attrs.field(
        metadata={
            "help": (
                "What happens to a session nobody resumed within the window, when a store "
                "is configured: saved to it (passivate) or ended (terminate). Without a "
                "store it is always ended."
            )
        },
        default="passivate",
        validator=_one_of("passivate", "terminate"),
    )
    passivate_after: float = attrs.field(
        metadata={
            "help": (
                "Seconds an active session may stay idle (no message either way, app not "
                "busy) before it is passivated, when a store is configured; inf: never."
            )
        },
        default=math.inf,
        validator=_positive_or_never,
    )

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
