"""Shared fixtures."""

from __future__ import annotations

import pytest
import trio.testing


@pytest.fixture
def thread_clock() -> trio.testing.MockClock:
    """A virtual clock for tests that also wait on worker threads (the SQLite store): it
    jumps only after 50 ms of real idleness, so waiting for a thread is not mistaken for
    nothing happening."""
    return trio.testing.MockClock(autojump_threshold=0.05)
