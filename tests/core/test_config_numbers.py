"""Numbers too large for a float, or for every JSON peer, are refused where they enter:
in SessionConfig with a ConfigError, in a decoded frame with a ProtocolError."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import statesession
from statesession import ConfigError, ProtocolError, SessionConfig
from statesession.protocol import decode_server_frame

from ..client.test_client import connector
from ..helpers import serving


def test_config_refuses_a_time_too_large_for_a_float_with_a_config_error() -> None:
    """SessionConfig(reconnect_window=10**400) raises ConfigError naming the field, not
    OverflowError from math.isnan."""
    with pytest.raises(ConfigError, match="reconnect_window"):
        SessionConfig(reconnect_window=10**400)


async def test_config_bounds_every_value_it_puts_in_the_welcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A config the server accepts yields a welcome its own client accepts: inbox_bytes of
    2**63 (accepted by SessionConfig, and by `serve --inbox-bytes`) is over what
    decode_server_frame takes, so every open_client refuses the welcome as a bad_frame."""
    with pytest.raises(ConfigError, match="at most 2"):
        SessionConfig(inbox_bytes=2**63)
    config = SessionConfig(inbox_bytes=2**53)
    async with serving(config=config) as served:
        connect, _ = connector(served)
        async with statesession.open_client(connect) as client:
            assert client.session_id is not None


def test_decoding_a_welcome_with_a_huge_integer_raises_a_protocol_error() -> None:
    """decode_server_frame raises only ProtocolError (what open_client catches): a welcome
    whose heartbeat is an integer too large for a float is a bad_frame, not an
    OverflowError that ends open_client with an internal error."""
    welcome = (
        '{"type":"welcome","v":1,"session":"s","token":"t","client":"c","resumed":false,'
        '"state":"active","ack":0,"heartbeat":1' + "0" * 400 + ',"window":30}'
    )
    with pytest.raises(ProtocolError):
        decode_server_frame(welcome, max_frame=1 << 20)
