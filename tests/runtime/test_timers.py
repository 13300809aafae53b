"""The manager's timer heap: every armed timer fires once, at its time, in order; a
disarmed one never does, and a disarmed timer keeps nothing alive."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from statesession._runtime.timers import Timer, Timers

from ..helpers import examples

# Each step: (delay before arming, timer's offset from then, disarm it after this delay?)
# in tenths of a second, so that a disarm meant to come first is not a tie.
steps = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 100), st.none() | st.integers(0, 100)),
    max_size=25,
)


@settings(max_examples=examples(150), deadline=None)
@given(steps)
def test_timers_fire_once_each_at_their_time_unless_disarmed(plan: Any) -> None:
    """Each armed timer not disarmed fires once, on time, in deadline order (ties in arming
    order), and none is left behind."""
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
    # In order of their deadlines, and timers due at the same time in the order armed.
    assert fired == sorted(fired, key=lambda name: (expected[name], int(name[1:])))


def test_a_disarmed_timer_keeps_nothing_alive() -> None:
    """A disarmed timer holds no reference to what it would call, though its entry stays until
    its time."""

    class Owner:
        def fire(self) -> None:
            raise AssertionError("a disarmed timer fired")

    timers = Timers()
    owner = Owner()
    gone = weakref.ref(owner)
    timer = timers.arm(10.0, owner.fire)
    timer.disarm()
    del owner
    gc.collect()
    assert gone() is None  # the heap still holds the entry, but not what it would call
    assert len(timers) == 1  # (dropped when its time comes)
