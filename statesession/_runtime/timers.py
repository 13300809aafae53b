"""Every session's timers, run by one task per manager.

A session in ``active`` has a heartbeat due; one in ``reconnecting`` has its window's end
due; a connection holding back an ack has the ack due. Each is a single deadline. Rather
than a cancel scope per wait (about 0.9 KiB held while a session idles, and a deadline
registered with trio on every wait), the manager keeps one heap of deadlines and one task
that sleeps until the earliest and calls what is due. A state's timer posts a job to its
session's actor, which runs it like any other job; an ack timer wakes the writers.

A disarmed timer is not removed from the heap (that would cost a search): it forgets its
callback, so the heap keeps nothing of the session alive, and the entry is dropped when
its time comes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from itertools import count

import trio

__all__ = ["Timer", "Timers"]


class Timer:
    """One armed deadline: ``fire()`` is called at ``at`` (from the timers' task; it must
    not block), unless disarmed first."""

    __slots__ = ("at", "fire")

    def __init__(self, at: float, fire: Callable[[], object]) -> None:
        self.at = at
        self.fire: Callable[[], object] | None = fire

    def disarm(self) -> None:
        self.fire = None


class Timers:
    """A heap of :class:`Timer`; :meth:`run` is the task that fires them."""

    __slots__ = ("_heap", "_lot", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._lot = trio.lowlevel.ParkingLot()
        self._order = count()  # ties fire in the order armed

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, at: float, fire: Callable[[], object]) -> Timer:
        timer = Timer(at, fire)
        heap = self._heap
        if not heap or at < heap[0][0]:
            self._lot.unpark()  # the task sleeps until a later time: wake it to re-sleep
        heapq.heappush(heap, (at, next(self._order), timer))
        return timer

    async def run(self) -> None:
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                fire = heapq.heappop(heap)[2].fire
                if fire is not None:
                    fire()
            wake = heap[0][0] if heap else math.inf
            if wake == math.inf:
                await self._lot.park()
            else:
                with trio.move_on_at(wake):
                    await self._lot.park()
