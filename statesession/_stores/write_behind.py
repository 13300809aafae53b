"""Write-behind for a store backend: writes queued and written in batches, reads batched.

Theory of operation
-------------------
Writes are handed to a *flusher* task: ``note``/``log``/``forget`` and ``save`` only queue;
the flusher takes everything queued and writes it in one transaction, then takes what
queued meanwhile, and so on -- under load, thousands of sessions per transaction.
Snapshot reads are batched the same way by a *loader* task (thousands of clients resuming
at once cost a few queries), and see queued and in-flight writes first.

A write that fails (another process holds the file's lock past the busy timeout, the disk
is full, ...) is queued again, ahead of what queued meanwhile, and retried a second later,
for as long as it takes. ``flush`` waits through such failures: it returns once
everything handed over before it is durable, and its caller bounds the wait with a cancel
scope. Reads that flush first (``record``, ``sessions``, ``history``, and ``save`` when far
behind) cannot wait for ever: they raise ``StoreError`` when a write attempt *begun after
they were called* fails -- that attempt covered everything they need to see, so the
failure is theirs, not one left over from before. Closing gives the writer
``_CLOSE_ALLOWANCE`` seconds (30) to write everything, and only then logs what it leaves
unwritten and why.

The count of stored snapshots (``statistics().snapshots``) costs no I/O: the backend
counts them once on opening, and each write it commits says how many it added and removed
(saves of sessions that had none, forgets and retention pruning that cleared one). What is
still queued is counted as if every queued save added a snapshot and no queued forget had
removed one yet: never too few, and too many by at most what is queued.

A backend subclasses ``WriteBehindStore``: it writes one batch (``_write_batch``), reads
snapshots by id (``_read_snapshots``), answers ``record``, ``sessions`` and ``history``
after ``_wait_written``, and runs ``run_flusher`` and ``run_loader`` while it is open,
then ``finish_writing`` and ``stop``.
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections.abc import Callable

import trio

from .._core.exceptions import StoreError
from .._core.snapshot import LogEntry, SessionRecord, Snapshot, decode_snapshot, encode_snapshot
from .port import SessionStore, StoreStatistics

__all__ = ["Batch", "WriteBehindStore"]

log = logging.getLogger("statesession.store")

#: Seconds between a failed write and its retry.
_RETRY_AFTER = 1.0
#: Seconds closing the store waits for everything queued to be written.
_CLOSE_ALLOWANCE = 30.0
#: Seconds between two prunings of the event log by age.
_PRUNE_EVERY = 60.0
#: Snapshots queued before ``save`` waits for the flusher to catch up.
_MAX_QUEUED = 50_000


class Batch:
    """What is handed over and not yet written, written as one transaction."""

    __slots__ = ("events", "generation", "records", "saves", "snapshots")

    def __init__(self) -> None:
        self.records: dict[str, SessionRecord] = {}
        #: id -> the snapshot and its encoding, or None to drop the session's snapshot.
        #: (Change it through ``hold``, which keeps ``saves`` right.)
        self.snapshots: dict[str, tuple[Snapshot, str] | None] = {}
        #: How many values of ``snapshots`` are not None.
        self.saves = 0
        self.events: list[LogEntry] = []
        self.generation = 0

    def hold(self, key: str, saved: tuple[Snapshot, str] | None) -> None:
        if self.snapshots.get(key) is not None:
            self.saves -= 1
        if saved is not None:
            self.saves += 1
        self.snapshots[key] = saved

    def __bool__(self) -> bool:
        return bool(self.records or self.snapshots or self.events)

    def __len__(self) -> int:
        return len(self.records) + len(self.snapshots) + len(self.events)


class _Load:
    __slots__ = ("done", "error", "snapshot")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.snapshot: Snapshot | None = None
        self.error: StoreError | None = None

    def resolve(self, snapshot: Snapshot | None, error: StoreError | None) -> None:
        self.snapshot, self.error = snapshot, error
        self.done.set()


def _refuse(loads: dict[str, list[_Load]], error: StoreError) -> None:
    for waiters in loads.values():
        for pending in waiters:
            pending.resolve(None, error)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


class WriteBehindStore(SessionStore):
    """A store whose writes are queued and written in batches by a flusher task, and whose
    snapshot reads are batched by a loader task. ``name`` names it in logs and errors."""

    def __init__(
        self,
        name: str,
        *,
        log_messages: bool,
        retention_events: int,
        retention_age: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._name = name
        self.log_messages = log_messages
        self._retention_events = retention_events
        self._retention_age = retention_age
        self._clock = clock
        self._queued = Batch()
        self._writing: Batch | None = None
        self._loads: dict[str, list[_Load]] = {}
        self._load_lot = trio.lowlevel.ParkingLot()
        #: Hand-overs so far, and how many of them are durable.
        self._generation = 0
        self._written = 0
        #: Write attempts begun, and the number of the last one that failed (0: none).
        self._attempts = 0
        self._failed_attempt = 0
        #: The error of the last write attempt while it is being retried, else None.
        self._failure: StoreError | None = None
        self._last_error: str | None = None
        self._closed = False
        #: Snapshots held, as of the last transaction committed (the backend sets it on
        #: opening).
        self._saved = 0
        self._transactions = 0
        self._work = trio.lowlevel.ParkingLot()
        self._done = trio.lowlevel.ParkingLot()
        self._last_prune = -math.inf

    @property
    def transactions(self) -> int:
        """Write transactions committed (``statistics().transactions``)."""
        return self._transactions

    # -- the backend --------------------------------------------------------------------------

    @abc.abstractmethod
    async def _write_batch(self, batch: Batch, prune: float | None) -> int:
        """Write ``batch`` in one transaction, and with ``prune`` drop the event log and the
        sessions older than it; return how many snapshots that adds (negative: removes).
        Raises StoreError if it fails (nothing is written)."""

    @abc.abstractmethod
    async def _read_snapshots(self, keys: list[str]) -> dict[str, str]:
        """The encoded snapshots held of these sessions, by id (those with none left out).
        Raises StoreError if it fails."""

    # -- opening and closing ----------------------------------------------------------------

    async def finish_writing(self) -> None:
        """Give the flusher its allowance to write everything queued; then say what it
        leaves unwritten and why."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _CLOSE_ALLOWANCE
            await self.flush()
        if scope.cancelled_caught:
            batches = [self._queued] if self._writing is None else [self._queued, self._writing]
            log.error(
                "store %s: closing with unwritten changes after %g s: %s, %s and %s not "
                "written (%s)",
                self._name,
                _CLOSE_ALLOWANCE,
                _count(sum(len(b.records) for b in batches), "record"),
                _count(sum(len(b.snapshots) for b in batches), "snapshot"),
                _count(sum(len(b.events) for b in batches), "event"),
                self._last_error if self._failure is not None else "the writer was too slow",
            )

    def stop(self) -> None:
        """No more writing or loading: what still waits for either is told so."""
        self._closed = True
        self._done.unpark_all()
        loads, self._loads = self._loads, {}
        _refuse(loads, StoreError(f"store {self._name} is closed"))

    # -- the port ---------------------------------------------------------------------------

    def _queue(self) -> Batch:
        self._generation += 1
        if self._work:  # (the flusher is waiting for work)
            self._work.unpark()
        return self._queued

    async def save(self, snapshot: Snapshot) -> None:
        if len(self._queued.snapshots) >= _MAX_QUEUED:
            await self._wait_written(fresh_failure_raises=True)
        # Encoded here, so that a session whose data cannot be saved fails alone -- and
        # before it is queued: a refused save hands nothing over for flush to wait for.
        encoded = encode_snapshot(snapshot)
        self._queue().hold(snapshot.id, (snapshot, encoded))
        await trio.lowlevel.checkpoint()

    def forget(self, session_id: str) -> None:
        self._queue().hold(session_id, None)

    def note(self, record: SessionRecord) -> None:
        self._queue().records[record.id] = record

    def log(self, entry: LogEntry) -> None:
        self._queue().events.append(entry)

    async def flush(self) -> None:
        await self._wait_written(fresh_failure_raises=False)

    async def _wait_written(self, *, fresh_failure_raises: bool) -> None:
        """Wait until everything handed over so far is durable; with
        ``fresh_failure_raises``, raise StoreError if a write attempt begun after this call
        fails (it covered everything handed over before)."""
        target = self._generation
        begun = self._attempts
        self._work.unpark()
        while self._written < target:
            if self._closed:
                raise StoreError(
                    f"store {self._name} is closed: what was handed over to it and not written "
                    "by then is lost (the log says how much)"
                )
            if fresh_failure_raises and self._failed_attempt > begun:
                raise StoreError(
                    f"store {self._name} cannot write ({self._last_error}), so it cannot answer "
                    "with everything handed over to it; it keeps retrying: try again later"
                ) from self._failure
            await self._done.park()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> StoreStatistics:
        pending = [self._queued] if self._writing is None else [self._queued, self._writing]
        return StoreStatistics(
            snapshots=self._saved + sum(batch.saves for batch in pending),
            queued=sum(len(batch) for batch in pending),
            transactions=self._transactions,
            failing=self._failure is not None,
            last_error=self._last_error,
        )

    async def load(self, session_id: str) -> Snapshot | None:
        for batch in (self._queued, self._writing):
            if batch is not None and session_id in batch.snapshots:
                await trio.lowlevel.checkpoint()
                saved = batch.snapshots[session_id]
                return None if saved is None else saved[0]
        if self._closed:
            raise StoreError(f"store {self._name} is closed")
        pending = _Load()
        self._loads.setdefault(session_id, []).append(pending)
        self._load_lot.unpark()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.snapshot

    # -- the loader -------------------------------------------------------------------------

    async def run_loader(self) -> None:
        while True:
            while not self._loads:
                await self._load_lot.park()
            # (One batch per call: what was handed out must not stay referenced while
            # the loader waits for the next loads.)
            await self._load_queued()

    async def _load_queued(self) -> None:
        loads, self._loads = self._loads, {}
        try:
            found = await self._read_snapshots(list(loads))
        except trio.Cancelled:  # (the store is closing)
            _refuse(loads, StoreError(f"store {self._name} is closed"))
            raise
        except StoreError as exc:
            _refuse(loads, exc)
            return
        for key, waiters in loads.items():
            text = found.get(key)
            snapshot, error = None, None
            if text is not None:
                try:
                    snapshot = decode_snapshot(text, session_id=key)
                except StoreError as exc:
                    error = exc
            for pending in waiters:
                pending.resolve(snapshot, error)

    # -- the flusher ------------------------------------------------------------------------

    async def run_flusher(self) -> None:
        while True:
            while not self._queued:
                await self._work.park()
            # (One batch per call: a written batch must not stay referenced while the
            # flusher waits for the next one.)
            await self._write_queued()

    async def _write_queued(self) -> None:
        """Write what is queued as one transaction; on failure, queue it again and wait
        before the next attempt."""
        batch, self._queued = self._queued, Batch()
        batch.generation = self._generation
        now = self._clock()
        prune = now - self._retention_age if now - self._last_prune >= _PRUNE_EVERY else None
        self._writing = batch
        self._attempts += 1
        attempt = self._attempts
        try:
            change = await self._write_batch(batch, prune)
        except StoreError as exc:
            self._writing = None
            self._requeue(batch)
            del batch
            self._failed_attempt = attempt
            self._failure = exc
            self._last_error = str(exc.__cause__ or exc)
            log.error(
                "store %s: writing failed, will retry in %g s: %s",
                self._name,
                _RETRY_AFTER,
                self._last_error,
            )
            self._done.unpark_all()
            await trio.sleep(_RETRY_AFTER)
            return
        self._writing = None
        if prune is not None:
            self._last_prune = now
        self._failure = None
        self._saved += change
        self._written = max(self._written, batch.generation)
        self._transactions += 1
        self._done.unpark_all()

    def _requeue(self, batch: Batch) -> None:
        """Put back a batch that could not be written, under what queued meanwhile."""
        queued = self._queued
        for key, record in batch.records.items():
            queued.records.setdefault(key, record)
        for key, saved in batch.snapshots.items():
            if key not in queued.snapshots:
                queued.hold(key, saved)
        queued.events[:0] = batch.events
