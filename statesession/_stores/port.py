"""Where passivated sessions and the event log go: the store port, and the in-memory store.

Theory of operation
-------------------
A store keeps, per session, a *record* (its last known lifecycle state, principal, times,
why it ended) and, while it is passivated, its *snapshot*; and an append-only *event log*
of lifecycle transitions (and, if asked, messages), bounded by a retention policy.

Writes are *write-behind*: ``note``, ``log`` and ``forget`` return at once and ``save``
only waits if the store is far behind; the store writes what accumulated in one batch, so
saving thousands of sessions costs one transaction, not thousands. ``load`` sees what was
saved even before it is written. ``flush`` returns once everything handed over so far is
durable, waiting through transient failures (a store keeps retrying a write that failed);
its caller bounds the wait with a cancel scope. The other reads see everything handed over
before them, and raise ``StoreError`` rather than wait for a store that is failing.
Anything not yet flushed is lost if the process dies; see docs/persistence.md for exactly
what that means for clients.

``statistics()`` says, without I/O, how many sessions the store holds a snapshot of and
how its writing goes: cheap enough to ask on every passivation.
"""

from __future__ import annotations

import abc
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from .._core.snapshot import LogEntry, SessionRecord, Snapshot, decode_snapshot, encode_snapshot

__all__ = [
    "LogEntry",
    "MemoryStore",
    "SessionRecord",
    "SessionStore",
    "StoreStatistics",
    "open_store",
]

#: Default retention of the event log: per session, and by age (seconds).
RETENTION_EVENTS = 1000
RETENTION_AGE = 7 * 24 * 3600.0


@attrs.frozen(kw_only=True)
class StoreStatistics:
    """What a store holds and how its writing goes: see :meth:`SessionStore.statistics`."""

    #: Sessions whose snapshot the store holds, counting saves and forgets handed over but
    #: not written yet. Exact once everything is written; until then it errs high, never
    #: low, and by at most ``queued``: every queued save counts as a new snapshot (though
    #: it may replace one), and a queued forget removes its snapshot only once written.
    snapshots: int
    #: Records, snapshots (saves and forgets) and log entries handed over and not yet
    #: durable.
    queued: int
    #: Write transactions committed since the store was opened.
    transactions: int
    #: Whether the last write attempt failed (the store is retrying it).
    failing: bool
    #: Why the last failed write attempt failed; kept once the store recovers, ``None`` if
    #: no write ever failed.
    last_error: str | None


class SessionStore(abc.ABC):
    """The store port. Use :func:`open_store` to get one."""

    #: Whether messages are logged too (not only transitions).
    log_messages: bool = False

    @abc.abstractmethod
    async def save(self, snapshot: Snapshot) -> None:
        """Hold ``snapshot`` as its session's (replacing any earlier one). Raises
        ``TypeError`` if its data is not JSON (and holds nothing). Waits only while the
        store is far behind, and then raises StoreError (holding nothing) if a write
        attempted meanwhile fails."""

    @abc.abstractmethod
    async def load(self, session_id: str) -> Snapshot | None:
        """The session's snapshot, or ``None``. Raises CorruptSnapshotError or
        StoreVersionError for one that cannot be read (and leaves it in place)."""

    @abc.abstractmethod
    def forget(self, session_id: str) -> None:
        """Drop the session's snapshot (it is live again, or over)."""

    @abc.abstractmethod
    def note(self, record: SessionRecord) -> None:
        """Record the session's state (its ``snapshot`` field is ignored)."""

    @abc.abstractmethod
    def log(self, entry: LogEntry) -> None:
        """Append to the session's event log."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return once everything handed over so far is durable.

        A store whose write fails for a reason that may pass (a lock held elsewhere, a full
        disk) keeps retrying it, and ``flush`` keeps waiting: it neither raises for such
        failures nor takes a timeout. Bound the wait with a cancel scope
        (``with trio.move_on_after(...)``); meanwhile ``statistics()`` says ``failing`` and
        why. Raises StoreError only if the store closes before writing everything."""

    @abc.abstractmethod
    async def record(self, session_id: str) -> SessionRecord | None:
        """What is known about one session, or ``None``. Like :meth:`sessions` and
        :meth:`history`, it sees everything handed over before the call, and raises
        StoreError when a write attempted after the call began fails, rather than wait for
        the store to recover."""

    @abc.abstractmethod
    async def sessions(self) -> list[SessionRecord]:
        """Every session known, most recently active first."""

    @abc.abstractmethod
    async def history(self, session_id: str) -> list[LogEntry]:
        """A session's event log, oldest first."""

    def statistics(self) -> StoreStatistics:
        """How many sessions the store holds a snapshot of, and how its writing goes.
        Cheap (no I/O): fit to be asked on every passivation.

        Not abstract, on purpose: only what counts stored sessions (a limit on them) needs
        it, so a store written before this method existed keeps working everywhere else
        instead of failing to be constructed. Such a store raises NotImplementedError
        here."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement statistics(): implement it to return "
            "a StoreStatistics counting the snapshots the store holds"
        )


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
async def open_store(
    location: str | Path = "statesession.db",
    *,
    log_messages: bool = False,
    retention_events: int = RETENTION_EVENTS,
    retention_age: float = RETENTION_AGE,
) -> AsyncIterator[SessionStore]:
    """Open a session store: ``"memory"`` for :class:`MemoryStore`, otherwise the path of
    an SQLite database file (created if missing, migrated to the current schema if older).

    The event log keeps at most ``retention_events`` entries per session and nothing older
    than ``retention_age`` seconds. Leaving the block writes everything still pending.
    """
    if str(location) == "memory":
        yield MemoryStore(
            log_messages=log_messages,
            retention_events=retention_events,
            retention_age=retention_age,
        )
        return
    from .sqlite import open_sqlite_store

    async with open_sqlite_store(
        Path(location),
        log_messages=log_messages,
        retention_events=retention_events,
        retention_age=retention_age,
    ) as store:
        yield store
