"""Shared fixtures, and the hypothesis profiles (``HYPOTHESIS_PROFILE=ci|thorough``)."""

from __future__ import annotations

import pytest
import trio.testing
from hypothesis import HealthCheck, settings

from .helpers import PROFILE_SCALE, hypothesis_profile

for _name, _scale in PROFILE_SCALE.items():
    settings.register_profile(
        _name,
        max_examples=round(100 * _scale),
        deadline=None,  # the machine is shared: time is measured by bench/, not here
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
    )
settings.load_profile(hypothesis_profile())


@pytest.fixture
def thread_clock() -> trio.testing.MockClock:
    """A virtual clock for tests that also wait on worker threads (the SQLite store): it
    jumps only after 50 ms of real idleness, so waiting for a thread is not mistaken for
    nothing happening."""
    return trio.testing.MockClock(autojump_threshold=0.05)
