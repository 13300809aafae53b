"""The in-memory store: passivation frees live sessions, nothing survives a restart.

Theory of operation
-------------------
Everything is a dict in this process: the records, the snapshots and, per session, the
event log as a deque bounded by ``retention_events`` (entries older than
``retention_age`` are left out when read). Nothing is queued, so ``flush`` has nothing to
wait for and ``statistics()`` counts exactly. A saved snapshot is kept as a copy made
through the encoding, as a file store would keep it. ``open_memory_url`` opens one for
the URL ``memory://`` (the ``statesession.stores`` entry point).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from .._core.exceptions import StoreError
from .._core.snapshot import LogEntry, SessionRecord, Snapshot, decode_snapshot, encode_snapshot
from .port import RETENTION_AGE, RETENTION_EVENTS, SessionStore, StoreStatistics

__all__ = ["MemoryStore", "open_memory_url"]


class MemoryStore(SessionStore):
    """A store in this process's memory: passivation frees live sessions, nothing survives
    a restart. For tests, and for servers that want passivation without a file."""

    def __init__(
        self,
        *,
        log_messages: bool = False,
        retention_events: int = RETENTION_EVENTS,
        retention_age: float = RETENTION_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log_messages = log_messages
        self._retention_events = retention_events
        self._retention_age = retention_age
        self._clock = clock
        self._records: dict[str, SessionRecord] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._events: dict[str, deque[LogEntry]] = {}

    async def save(self, snapshot: Snapshot) -> None:
        await trio.lowlevel.checkpoint()
        # Kept as a copy made through the encoding, as a file store would keep it: the
        # same errors for data that is not JSON, nothing shared with the session.
        self._snapshots[snapshot.id] = decode_snapshot(
            encode_snapshot(snapshot), session_id=snapshot.id
        )

    async def load(self, session_id: str) -> Snapshot | None:
        await trio.lowlevel.checkpoint()
        return self._snapshots.get(session_id)

    def forget(self, session_id: str) -> None:
        self._snapshots.pop(session_id, None)

    def note(self, record: SessionRecord) -> None:
        self._records[record.id] = record

    def log(self, entry: LogEntry) -> None:
        events = self._events.setdefault(entry.session, deque(maxlen=self._retention_events))
        events.append(entry)

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            snapshots=len(self._snapshots),
            queued=0,
            transactions=0,
            failing=False,
            last_error=None,
        )

    async def record(self, session_id: str) -> SessionRecord | None:
        await trio.lowlevel.checkpoint()
        found = self._records.get(session_id)
        if found is None:
            return None
        return attrs.evolve(found, snapshot=session_id in self._snapshots)

    async def sessions(self) -> list[SessionRecord]:
        await trio.lowlevel.checkpoint()
        return sorted(
            (attrs.evolve(r, snapshot=r.id in self._snapshots) for r in self._records.values()),
            key=lambda r: -r.last_activity,
        )

    async def history(self, session_id: str) -> list[LogEntry]:
        await trio.lowlevel.checkpoint()
        oldest = self._clock() - self._retention_age
        return [e for e in self._events.get(session_id, ()) if e.time >= oldest]


@asynccontextmanager
async def open_memory_url(
    url: str, *, log_messages: bool, retention_events: int, retention_age: float
) -> AsyncIterator[MemoryStore]:
    """A new, empty MemoryStore for ``memory://`` (which names nothing more)."""
    if url.partition("://")[2]:
        raise StoreError(f"store URL {url!r}: a memory store takes no path (use memory://)")
    yield MemoryStore(
        log_messages=log_messages,
        retention_events=retention_events,
        retention_age=retention_age,
    )
