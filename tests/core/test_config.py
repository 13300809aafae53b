"""SessionConfig: the seed's defaults, and clear errors for bad values."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from statesession import ConfigError, SessionConfig


def test_config_defaults_are_the_documented_ones() -> None:
    """A default SessionConfig has the documented values, field by field."""
    config = SessionConfig()
    assert config.reconnect_window == 30.0
    assert config.heartbeat_interval == 10.0
    assert config.buffer_messages == 1000
    assert config.buffer_bytes == 1024 * 1024
    assert config.handshake_timeout == 10.0
    assert config.max_frame == 1024 * 1024
    assert config.cleanup_timeout == 10.0
    assert config.overflow == "backpressure"
    assert config.attach_policy == "share"


def test_config_is_frozen() -> None:
    """A SessionConfig cannot be changed in place; attrs.evolve makes a changed copy."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        SessionConfig().reconnect_window = 1  # type: ignore[misc]
    assert attrs.evolve(SessionConfig(), reconnect_window=5).reconnect_window == 5


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("reconnect_window", 0, "reconnect_window must be a positive number"),
        ("reconnect_window", -1.5, "positive number"),
        ("heartbeat_interval", "10", "positive number, got '10'"),
        ("handshake_timeout", True, "positive number"),
        ("max_frame", 1.5, "max_frame must be a positive integer"),
        ("max_frame", 10, r"max_frame must be at least 512 \(a welcome must fit"),
        ("buffer_messages", 0, "positive integer"),
        ("cancel_grace", -1, "zero or a positive number"),
        ("overflow", "drop", "overflow must be one of 'backpressure', 'drop_oldest'"),
        ("attach_policy", "steal", "one of 'share', 'takeover'"),
    ],
)
def test_config_bad_values_name_the_field(field: str, value: Any, fragment: str) -> None:
    """Each bad value is refused with a ConfigError whose message names the field and its rule."""
    with pytest.raises(ConfigError, match=fragment):
        SessionConfig(**{field: value})


def test_config_heartbeat_timeout_must_cover_the_interval() -> None:
    """A heartbeat_timeout shorter than heartbeat_interval is a ConfigError."""
    with pytest.raises(ConfigError, match=r"heartbeat_timeout .* must be at least"):
        SessionConfig(heartbeat_interval=10, heartbeat_timeout=5)


def test_config_buffer_must_hold_a_largest_frame() -> None:
    """A buffer_bytes smaller than max_frame is a ConfigError naming buffer_bytes."""
    with pytest.raises(ConfigError, match="buffer_bytes"):
        SessionConfig(buffer_bytes=1000, max_frame=2000)


def test_config_error_is_a_value_error() -> None:
    """Code that catches ValueError for bad settings keeps working."""
    with pytest.raises(ValueError, match="positive"):
        SessionConfig(max_sessions=0)


@pytest.mark.parametrize(
    "field",
    [
        "reconnect_window",
        "heartbeat_interval",
        "heartbeat_timeout",
        "handshake_timeout",
        "cleanup_timeout",
        "cancel_grace",
        "send_timeout",
        "ack_delay",
    ],
)
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_config_refuses_non_finite_times(field: str, value: float) -> None:
    """A time that is infinite or NaN is refused when the config is made (a welcome
    carrying it could not be encoded), naming the field."""
    overrides: dict[str, Any] = {field: value}
    if field == "heartbeat_interval":
        overrides["heartbeat_timeout"] = 1e9
    with pytest.raises(ConfigError, match=rf"SessionConfig\.{field} must be a finite number"):
        SessionConfig(**overrides)


def test_config_passivate_after_may_be_infinite() -> None:
    """passivate_after = inf means "never", the documented default; NaN is refused."""
    assert SessionConfig(passivate_after=float("inf")).passivate_after == float("inf")
    with pytest.raises(ConfigError, match="passivate_after"):
        SessionConfig(passivate_after=float("nan"))
