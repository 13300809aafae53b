"""Refusals before the welcome are rate-limited in the log like bad frames after it."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from ..helpers import serving


async def test_bad_first_frames_are_rate_limited_in_the_log(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """100 connections at once, each sending one frame that is not JSON, write at most
    the burst (10) of bad-frame lines to the log, plus what a second adds."""
    caplog.set_level(logging.INFO, logger="statesession")
    async with serving() as served:
        peers = [await served.peer() for _ in range(100)]
        for peer in peers:
            await peer.send("this is not JSON")
        for peer in peers:
            assert (await peer.receive())["code"] == "bad_frame"
    lines = [r for r in caplog.records if "bad_frame" in r.getMessage()]
    assert len(lines) <= 11, f"{len(lines)} log lines for 100 bad frames"
