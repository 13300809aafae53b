"""The embedded default store: one SQLite file, written behind in batches.

Theory of operation
-------------------
One ``sqlite3`` connection (WAL journal, ``synchronous=NORMAL``) is used from worker
threads through ``trio.to_thread``, one call at a time (a thread lock serialises them).
A cancelled call never disturbs another's: if its statement has not started, it never
starts; if it is running, ``Connection.interrupt()`` stops it, so cancellation really ends
a long query instead of waiting for it. Whether a call is running and interrupting it are
one step under a second, small lock: a call cannot finish (and the next one start) between
the check and the interrupt. (SQLite's wait for another process's lock, at most the busy
timeout, is not interruptible.)

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

The count of stored snapshots (``statistics().snapshots``) costs no query: it is counted
once on opening (over a partial index of the sessions that have one), and each write
transaction computes in SQL how many it added and removed (saves of sessions that had
none, forgets and retention pruning that cleared one), applied when it commits. What is
still queued is counted as if every queued save added a snapshot and no queued forget had
removed one yet: never too few, and too many by at most what is queued.

The schema's version is SQLite's ``user_version``. Opening a file migrates it step by
step to the current version, each step in its own ``BEGIN IMMEDIATE`` transaction that
reads the version again once it holds the write lock: processes opening one new file at
once take turns, and each step runs once. Switching a new file to WAL needs it to itself
and SQLite does not wait for that, so a busy switch is retried within the busy timeout. A
file of a newer version than this code knows is refused.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

from .._core.exceptions import CorruptSnapshotError, StoreError, StoreVersionError
from .._core.snapshot import LogEntry, SessionRecord, Snapshot, decode_snapshot, encode_snapshot
from .._core.util import collapse_single_exception_group
from .port import SessionStore, StoreStatistics

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "open_sqlite_store"]

log = logging.getLogger("statesession.store")

T = TypeVar("T")

SCHEMA_VERSION = 2

_SCHEMA_V1 = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    principal TEXT,
    created REAL NOT NULL,
    last_activity REAL NOT NULL,
    reason TEXT,
    snapshot TEXT
);
CREATE INDEX sessions_by_activity ON sessions (last_activity);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    event TEXT NOT NULL,
    source TEXT,
    target TEXT,
    detail TEXT
);
CREATE INDEX events_by_session ON events (session, id);
CREATE INDEX events_by_time ON events (time);
"""


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _index_saved(conn: sqlite3.Connection) -> None:
    # Counting the stored snapshots on opening reads this index, not every snapshot.
    conn.execute(
        "CREATE INDEX sessions_saved ON sessions (last_activity) WHERE snapshot IS NOT NULL"
    )


#: version -> the step that brings a database of version - 1 to it.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _create_v1, 2: _index_saved}

#: Seconds SQLite waits for another connection's lock before a statement fails.
_BUSY_TIMEOUT = 5.0
#: Seconds between a failed write and its retry.
_RETRY_AFTER = 1.0
#: Seconds closing the store waits for everything queued to be written.
_CLOSE_ALLOWANCE = 30.0
#: Seconds between two prunings of the event log by age.
_PRUNE_EVERY = 60.0
#: Snapshots queued before ``save`` waits for the flusher to catch up.
_MAX_QUEUED = 50_000


def _connect(path: Path, busy_timeout: float) -> tuple[sqlite3.Connection, int]:
    """A connection to ``path`` in WAL mode at the current schema, and how many snapshots
    the file holds."""
    conn = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None, timeout=busy_timeout
    )
    try:
        _use_wal(conn, path, busy_timeout)
        conn.execute("PRAGMA synchronous=NORMAL")
        _migrate(conn, path)
        saved = conn.execute(
            "SELECT count(*) FROM sessions WHERE snapshot IS NOT NULL"
        ).fetchone()[0]
    except BaseException:
        conn.close()
        raise
    return conn, int(saved)


def _use_wal(conn: sqlite3.Connection, path: Path, busy_timeout: float) -> None:
    # Switching a new file's journal needs the file to itself, and SQLite answers "database
    # is locked" at once (without its busy handler) while another connection opens it.
    give_up = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > give_up:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.05)
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: cannot use WAL journaling (got {mode})")


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    current = max(MIGRATIONS)
    if version > current:
        raise StoreVersionError(
            f"{path} has schema version {version}; this statesession knows up to {current} "
            "(was it written by a newer one?)"
        )
    return version


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    current = max(MIGRATIONS)
    while _schema_version(conn, path) < current:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again holding the write lock: another process may have just migrated.
            step = _schema_version(conn, path) + 1
            if step <= current:
                MIGRATIONS[step](conn)
                conn.execute(f"PRAGMA user_version = {step}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if step <= current:
            log.info("migrated %s to schema version %d", path, step)


class _Batch:
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


class _Call:
    """One call on the connection, as its worker thread and its task both see it."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False


class _NotStarted(Exception):
    """A cancelled call's thread got the connection: it returns without running."""


class SQLiteStore(SessionStore):
    """A store in one SQLite file. Made by :func:`open_store`."""

    def __init__(
        self,
        path: Path,
        *,
        log_messages: bool,
        retention_events: int,
        retention_age: float,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = _BUSY_TIMEOUT,
    ) -> None:
        self.path = path
        self.log_messages = log_messages
        self._retention_events = retention_events
        self._retention_age = retention_age
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        #: Held by the worker thread of the call using the connection.
        self._thread_lock = threading.Lock()
        #: Held to start or finish a call (``_running``), and to interrupt one.
        self._call_lock = threading.Lock()
        self._running: _Call | None = None
        self._queued = _Batch()
        self._writing: _Batch | None = None
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
        #: Snapshots in the file, as of the last transaction committed.
        self._saved = 0
        self._transactions = 0
        self._work = trio.lowlevel.ParkingLot()
        self._done = trio.lowlevel.ParkingLot()
        self._last_prune = -math.inf

    @property
    def transactions(self) -> int:
        """Write transactions committed (``statistics().transactions``)."""
        return self._transactions

    # -- the connection ---------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in a worker thread, one call at a time. If
        the calling task is cancelled first, ``fn`` never runs; if while it runs, its
        statement is interrupted (and nobody else's)."""
        call = _Call()

        def run() -> T:
            with self._thread_lock:
                conn = self._conn
                if conn is None:
                    raise StoreError(f"store {self.path} is closed")
                with self._call_lock:
                    if call.cancelled:
                        raise _NotStarted
                    self._running = call
                try:
                    return fn(conn, *args)
                finally:
                    with self._call_lock:
                        self._running = None

        try:
            return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
        except trio.Cancelled:
            with self._call_lock:
                call.cancelled = True
                conn = self._conn
                if self._running is call and conn is not None:
                    conn.interrupt()
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    async def _open(self) -> None:
        def connect() -> None:
            conn, self._saved = _connect(self.path, self._busy_timeout)
            with self._thread_lock:
                self._conn = conn

        try:
            await trio.to_thread.run_sync(connect)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc

    async def _finish_writing(self) -> None:
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
                self.path,
                _CLOSE_ALLOWANCE,
                _count(sum(len(b.records) for b in batches), "record"),
                _count(sum(len(b.snapshots) for b in batches), "snapshot"),
                _count(sum(len(b.events) for b in batches), "event"),
                self._last_error if self._failure is not None else "the writer was too slow",
            )

    def _stop(self) -> None:
        """No more writing or loading: what still waits for either is told so."""
        self._closed = True
        self._done.unpark_all()
        loads, self._loads = self._loads, {}
        _refuse(loads, StoreError(f"store {self.path} is closed"))

    async def _close(self) -> None:
        self._stop()

        def close() -> None:
            with self._thread_lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close)

    # -- the port ---------------------------------------------------------------------------

    def _queue(self) -> _Batch:
        self._generation += 1
        if self._work:  # (the flusher is waiting for work)
            self._work.unpark()
        return self._queued

    async def save(self, snapshot: Snapshot) -> None:
        if len(self._queued.snapshots) >= _MAX_QUEUED:
            await self._wait_written(fresh_failure_raises=True)
        # Encoded here, so that a session whose data cannot be saved fails alone.
        self._queue().hold(snapshot.id, (snapshot, encode_snapshot(snapshot)))
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
                    f"store {self.path} is closed: what was handed over to it and not written "
                    "by then is lost (the log says how much)"
                )
            if fresh_failure_raises and self._failed_attempt > begun:
                raise StoreError(
                    f"store {self.path} cannot write ({self._last_error}), so it cannot answer "
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
            raise StoreError(f"store {self.path} is closed")
        pending = _Load()
        self._loads.setdefault(session_id, []).append(pending)
        self._load_lot.unpark()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.snapshot

    async def record(self, session_id: str) -> SessionRecord | None:
        await self._wait_written(fresh_failure_raises=True)
        row = await self._call(
            lambda conn: conn.execute(_SELECT_RECORDS + " WHERE id = ?", (session_id,)).fetchone()
        )
        return None if row is None else _record(row)

    async def sessions(self) -> list[SessionRecord]:
        await self._wait_written(fresh_failure_raises=True)
        rows = await self._call(
            lambda conn: conn.execute(_SELECT_RECORDS + " ORDER BY last_activity DESC").fetchall()
        )
        return [_record(row) for row in rows]

    async def history(self, session_id: str) -> list[LogEntry]:
        await self._wait_written(fresh_failure_raises=True)
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT time, kind, event, source, target, detail FROM events "
                "WHERE session = ? ORDER BY id",
                (session_id,),
            ).fetchall()
        )
        entries = []
        for index, (at, kind, event, source, target, detail) in enumerate(rows):
            if kind not in ("transition", "message") or not isinstance(event, str):
                raise CorruptSnapshotError(
                    f"event log of session {session_id} is corrupt at entry {index}: "
                    f"kind={kind!r:.30} event={event!r:.30}"
                )
            entries.append(
                LogEntry(
                    session=session_id,
                    time=float(at),
                    kind=kind,
                    event=event,
                    source=source,
                    target=target,
                    detail=detail,
                )
            )
        return entries

    # -- the loader -------------------------------------------------------------------------

    async def _run_loader(self) -> None:
        while True:
            while not self._loads:
                await self._load_lot.park()
            # (One batch per call: what was handed out must not stay referenced while
            # the loader waits for the next loads.)
            await self._load_queued()

    async def _load_queued(self) -> None:
        loads, self._loads = self._loads, {}
        try:
            found = await self._call(_read_snapshots, list(loads))
        except trio.Cancelled:  # (the store is closing)
            _refuse(loads, StoreError(f"store {self.path} is closed"))
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

    async def _run_flusher(self) -> None:
        while True:
            while not self._queued:
                await self._work.park()
            # (One batch per call: a written batch must not stay referenced while the
            # flusher waits for the next one.)
            await self._write_queued()

    async def _write_queued(self) -> None:
        """Write what is queued as one transaction; on failure, queue it again and wait
        before the next attempt."""
        batch, self._queued = self._queued, _Batch()
        batch.generation = self._generation
        now = self._clock()
        prune = now - self._retention_age if now - self._last_prune >= _PRUNE_EVERY else None
        self._writing = batch
        self._attempts += 1
        attempt = self._attempts
        try:
            change = await self._call(self._write, batch, prune)
        except StoreError as exc:
            self._writing = None
            self._requeue(batch)
            del batch
            self._failed_attempt = attempt
            self._failure = exc
            self._last_error = str(exc.__cause__ or exc)
            log.error(
                "store %s: writing failed, will retry in %g s: %s",
                self.path,
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

    def _requeue(self, batch: _Batch) -> None:
        """Put back a batch that could not be written, under what queued meanwhile."""
        queued = self._queued
        for key, record in batch.records.items():
            queued.records.setdefault(key, record)
        for key, saved in batch.snapshots.items():
            if key not in queued.snapshots:
                queued.hold(key, saved)
        queued.events[:0] = batch.events

    def _write(self, conn: sqlite3.Connection, batch: _Batch, prune: float | None) -> int:
        """Write ``batch`` in one transaction; return how many snapshots that adds to the
        file (negative: removes)."""
        saved = [key for key, s in batch.snapshots.items() if s is not None]
        forgotten = [(key,) for key, s in batch.snapshots.items() if s is None]
        conn.execute("BEGIN IMMEDIATE")
        try:
            change = len(saved) - _count_held(conn, saved)
            conn.executemany(
                "INSERT INTO sessions (id, state, principal, created, last_activity, reason) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "state = excluded.state, last_activity = excluded.last_activity, "
                "reason = excluded.reason",
                [
                    (r.id, r.state, r.principal, r.created, r.last_activity, r.reason)
                    for r in batch.records.values()
                ],
            )
            conn.executemany(
                "INSERT INTO sessions "
                "(id, state, principal, created, last_activity, reason, snapshot) "
                "VALUES (?, 'passivated', ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET snapshot = excluded.snapshot",
                [
                    (s.id, s.principal, s.created, s.passivated, s.reason, text)
                    for s, text in filter(None, batch.snapshots.values())
                ],
            )
            change -= conn.executemany(
                "UPDATE sessions SET snapshot = NULL WHERE id = ? AND snapshot IS NOT NULL",
                forgotten,
            ).rowcount
            conn.executemany(
                "INSERT INTO events (session, time, kind, event, source, target, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.session, e.time, e.kind, e.event, e.source, e.target, e.detail)
                    for e in batch.events
                ],
            )
            conn.executemany(
                "DELETE FROM events WHERE session = ? AND id <= (SELECT id FROM events "
                "WHERE session = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                [(key, key, self._retention_events) for key in {e.session for e in batch.events}],
            )
            if prune is not None:
                conn.execute("DELETE FROM events WHERE time < ?", (prune,))
                change -= conn.execute(
                    "UPDATE sessions SET snapshot = NULL, state = 'terminated', "
                    "reason = 'store_retention' WHERE snapshot IS NOT NULL "
                    "AND last_activity < ?",
                    (prune,),
                ).rowcount
                conn.execute(
                    "DELETE FROM sessions WHERE snapshot IS NULL AND last_activity < ?",
                    (prune,),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return change


def _count_held(conn: sqlite3.Connection, keys: list[str]) -> int:
    """How many of these sessions have a snapshot in the file."""
    held = 0
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        held += conn.execute(
            f"SELECT count(*) FROM sessions WHERE id IN ({marks}) AND snapshot IS NOT NULL",
            chunk,
        ).fetchone()[0]
    return held


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


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


def _read_snapshots(conn: sqlite3.Connection, keys: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for key, text in conn.execute(
            f"SELECT id, snapshot FROM sessions WHERE id IN ({marks}) AND snapshot IS NOT NULL",
            chunk,
        ):
            found[key] = text
    return found


_SELECT_RECORDS = (
    "SELECT id, state, principal, created, last_activity, reason, snapshot IS NOT NULL "
    "FROM sessions"
)


def _record(row: tuple[Any, ...]) -> SessionRecord:
    key, state, principal, created, last_activity, reason, has_snapshot = row
    return SessionRecord(
        id=key,
        state=state,
        principal=principal,
        created=created,
        last_activity=last_activity,
        reason=reason,
        snapshot=bool(has_snapshot),
    )


@asynccontextmanager
async def open_sqlite_store(
    path: Path,
    *,
    log_messages: bool,
    retention_events: int,
    retention_age: float,
    clock: Callable[[], float] = time.time,
    busy_timeout: float = _BUSY_TIMEOUT,
) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(
        path,
        log_messages=log_messages,
        retention_events=retention_events,
        retention_age=retention_age,
        clock=clock,
        busy_timeout=busy_timeout,
    )
    await store._open()
    try:
        with collapse_single_exception_group():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store._run_flusher, name=f"store {path} writer")
                nursery.start_soon(store._run_loader, name=f"store {path} reader")
                try:
                    yield store
                finally:
                    await store._finish_writing()
                    store._stop()
                    nursery.cancel_scope.cancel()
    finally:
        await store._close()
