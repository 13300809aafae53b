"""The manager's timer heap: every armed timer fires once, at its time, in order; a
disarmed one never does, and a disarmed timer keeps nothing alive."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from statesession._timers import Timer, Timers

# Each step: (delay before arming, timer's offset from then, disarm it after this delay?)
# in tenths of a second, so that a disarm meant to come first is not a tie.
steps = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 100), st.none() | st.integers(0, 100)),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_timers_fire_once_each_at_their_time_unless_disarmed(plan: Any) -> None:
    log: list[tuple[str, float]] = []
    expected: dict[str, float] = {}

    async def main() -> None:
        timers = Timers()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timers.run)
            for index, (wait, offset, disarm_after) in enumerate(plan):
                await trio.sleep(wait / 10)
                name = f"t{index}"
                at = trio.current_time() + offset / 10
                timer = timers.arm(at, lambda name=name: log.append((name, trio.current_time())))
                if disarm_after is not None and disarm_after < offset:

                    async def disarm(timer: Timer = timer, after: float = disarm_after) -> None:
                        await trio.sleep(after / 10)
                        timer.disarm()
                        assert timer.fire is None  # the heap keeps nothing of it alive

                    nursery.start_soon(disarm)
                else:
                    expected[name] = at
            await trio.sleep(100)
            assert len(timers) == 0  # fired or dropped, nothing left behind
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    fired = [name for name, _ in log]
    assert sorted(fired) == sorted(expected)  # each armed timer once, no disarmed one
    for name, when in log:
        # Never early and, on a virtual clock, on time (to the clock's rounding).
        assert when == pytest.approx(expected[name], abs=1e-9)
    times = [when for _, when in log]
    assert times == sorted(times)  # in order of their deadlines
