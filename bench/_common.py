"""Helpers shared by the benchmark scripts.

Each script runs as ``python bench/<script>.py``, which puts ``bench/`` on ``sys.path``,
so they import from here with ``from _common import ...`` (as do the processes that
message_path.py and ws_memory.py start of themselves). This module imports nothing
heavier than trio and attrs: ws_memory.py's baseline server processes measure their
own memory and must not load statesession.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    import statesession


#: Every client of a benchmark comes from 127.0.0.1: the per-peer limits on new anonymous
#: sessions and on connections waiting for their welcome (meant for one client machine
#: among many) would refuse the crowd, as they would behind a proxy that hides its
#: clients' addresses.
ONE_PEER_FOR_ALL = {
    "peer_session_burst": 10**9,
    "peer_session_rate": 1e9,
    "peer_handshakes": 10**9,
    "max_handshakes": 10**9,
}


class BenchError(Exception):
    """A run went wrong: what it checks did not hold, or a wait ran out."""


class Stalled(BenchError):
    """A bounded wait ran out: the benchmark is broken, not slow."""


@contextmanager
def bounded(seconds: float, what: str) -> Iterator[None]:
    """Fail with :class:`Stalled` naming ``what`` if the block takes over ``seconds``."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise Stalled(f"timed out after {seconds:g} s waiting for {what}") from None


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception in ``exc`` that is not a group (``exc`` itself if it is none)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """An exception and what caused it, on one line (the first of each group)."""
    parts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(parts) < 4:
        cause = first_leaf(cause)
        text = str(cause)
        parts.append(f"{type(cause).__name__}: {text}" if text else type(cause).__name__)
        cause = cause.__cause__
    return " <- ".join(parts).replace("\n", " ")


@attrs.frozen
class Span:
    """How long something took, in seconds: on the wall clock and in CPU time (the
    process's, all of its threads)."""

    wall: float
    cpu: float


class Stopwatch:
    """Started when made; :meth:`stop` reads both clocks."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def stop(self) -> Span:
        return Span(time.perf_counter() - self._wall, time.process_time() - self._cpu)


async def session_shaped(scope: trio.CancelScope) -> None:
    """What any design giving each session a task of its own pays, as a baseline: a task
    holding a nursery with one child (a session's actor and its app), both waiting,
    until ``scope`` is cancelled."""
    with scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()


async def idle_app(session: statesession.Session) -> None:
    """An app that echoes each message and otherwise waits: an idle session."""
    async for message in session:
        await session.send(message.data)
