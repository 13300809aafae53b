"""Every transport passes the public conformance suite, over real 127.0.0.1 sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from statesession import Channel
from statesession.testing import (
    CONFORMANCE_CHECKS,
    FaultyChannel,
    _conformance,
    check_channel_pair,
)

from .transports import MAX_FRAME, pair_opener

TRANSPORTS = ["memory", "websocket", "tcp"]


@pytest.mark.parametrize("check", sorted(CONFORMANCE_CHECKS))
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_transport_conformance(transport: str, check: str) -> None:
    await CONFORMANCE_CHECKS[check](pair_opener(transport), MAX_FRAME)


async def test_transport_conformance_suite_runs_whole() -> None:
    """check_channel_pair runs every check (on the in-memory twin, quickly)."""
    await check_channel_pair(pair_opener("memory"), max_frame=MAX_FRAME)


async def test_transport_conformance_catches_a_lossy_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The suite fails a channel that loses a frame: it is not a suite that cannot fail."""
    monkeypatch.setattr(_conformance, "STEP", 0.5)
    opener = pair_opener("memory")
    seen = iter(range(10**9))

    @asynccontextmanager
    async def lossy() -> AsyncIterator[tuple[Channel, Channel]]:
        async with opener() as (a, b):
            yield a, FaultyChannel(b, drop=lambda frame: next(seen) == 5)

    with pytest.raises(AssertionError, match="'ordering' failed: no frame arrived"):
        await check_channel_pair(lossy, max_frame=MAX_FRAME)
