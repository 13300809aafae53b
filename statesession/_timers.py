"""Every session's state timer, run by one task per manager.

A session in ``active`` has a heartbeat due; one in ``reconnecting`` has its window's end
due. Each is a single deadline that the state's entry action arms and its exit action
disarms. Rather than a cancel scope per session (about 0.9 KiB held while the session
idles, and a deadline registered with trio on every wait), the manager keeps one heap of
deadlines and one task that sleeps until the earliest; when one comes it posts the timer
to its session's actor, which runs it like any other job.

A disarmed timer is not removed from the heap (that would cost a search): its handle
forgets the session, so the heap keeps no session alive, and the entry is dropped when
its time comes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["Timer", "Timers"]


class Timer:
    """One armed deadline: ``fire`` is posted to ``session``'s actor at ``at``."""

    __slots__ = ("at", "fire", "session")

    def __init__(self, at: float, session: Session, fire: Callable[[], None]) -> None:
        self.at = at
        self.session: Session | None = session
        self.fire = fire

    def disarm(self) -> None:
        self.session = None


class Timers:
    """A heap of :class:`Timer`; :meth:`run` is the task that fires them."""

    __slots__ = ("_heap", "_lot", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._lot = trio.lowlevel.ParkingLot()
        self._order = count()  # ties fire in the order armed

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, at: float, session: Session, fire: Callable[[], None]) -> Timer:
        timer = Timer(at, session, fire)
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
                timer = heapq.heappop(heap)[2]
                session = timer.session
                if session is not None:
                    session._timer_due(timer)
            wake = heap[0][0] if heap else math.inf
            if wake == math.inf:
                await self._lot.park()
            else:
                with trio.move_on_at(wake):
                    await self._lot.park()
