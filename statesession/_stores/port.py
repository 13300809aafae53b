"""Where passivated sessions and the event log go: the store port.

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

The backends: ``MemoryStore`` (memory.py) and ``SQLiteStore`` (sqlite.py, on the
write-behind layer of write_behind.py); ``open_store`` (factory.py) picks one by location,
a store URL's scheme found in the ``statesession.stores`` entry points (registry.py).
``statesession.testing.check_store`` is the suite every store must pass.
"""

from __future__ import annotations

import abc

import attrs

from .._core.snapshot import LogEntry, SessionRecord, Snapshot

__all__ = [
    "RETENTION_AGE",
    "RETENTION_EVENTS",
    "LogEntry",
    "SessionRecord",
    "SessionStore",
    "StoreStatistics",
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
