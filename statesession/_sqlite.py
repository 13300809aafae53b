"""The embedded default store: one SQLite file, written behind in batches.

Theory of operation
-------------------
One ``sqlite3`` connection (WAL journal, ``synchronous=NORMAL``) is used from worker
threads through ``trio.to_thread``, one call at a time (a thread lock serialises them).
When the calling task is cancelled, the running statement is stopped with
``Connection.interrupt()``: cancellation really ends a long query instead of waiting for
it. (A call cancelled before its statement started may still run; its result is dropped.)

Writes are handed to a *flusher* task: ``note``/``log``/``forget`` and ``save`` only queue;
the flusher takes everything queued and writes it in one transaction, then takes what
queued meanwhile, and so on -- under load, thousands of sessions per transaction.
Snapshot reads are batched the same way by a *loader* task (thousands of clients resuming
at once cost a few queries), and see queued and in-flight writes first.

The schema's version is SQLite's ``user_version``. Opening a file migrates it step by
step to the current version (each step in its own transaction), and refuses a file of a
newer version than this code knows.
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

from ._exceptions import CorruptSnapshotError, StoreError, StoreVersionError
from ._snapshot import LogEntry, SessionRecord, Snapshot, decode_snapshot, encode_snapshot
from ._store import SessionStore
from ._util import collapse_single_exception_group

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "open_sqlite_store"]

log = logging.getLogger("statesession.store")

T = TypeVar("T")

SCHEMA_VERSION = 1

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


#: version -> the step that brings a database of version - 1 to it.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _create_v1}

#: Seconds between two prunings of the event log by age.
_PRUNE_EVERY = 60.0
#: Snapshots queued before ``save`` waits for the flusher to catch up.
_MAX_QUEUED = 50_000


def _migrate(conn: sqlite3.Connection, path: Path) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    current = max(MIGRATIONS)
    if version > current:
        raise StoreVersionError(
            f"{path} has schema version {version}; this statesession knows up to {current} "
            "(was it written by a newer one?)"
        )
    for step in range(version + 1, current + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[step](conn)
            conn.execute(f"PRAGMA user_version = {step}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("migrated %s to schema version %d", path, step)
    return current


class _Batch:
    __slots__ = ("events", "generation", "records", "snapshots")

    def __init__(self) -> None:
        self.records: dict[str, SessionRecord] = {}
        #: id -> the snapshot and its encoding, or None to drop the session's snapshot.
        self.snapshots: dict[str, tuple[Snapshot, str] | None] = {}
        self.events: list[LogEntry] = []
        self.generation = 0

    def __bool__(self) -> bool:
        return bool(self.records or self.snapshots or self.events)


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
    ) -> None:
        self.path = path
        self.log_messages = log_messages
        self._retention_events = retention_events
        self._retention_age = retention_age
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._thread_lock = threading.Lock()
        self._queued = _Batch()
        self._writing: _Batch | None = None
        self._loads: dict[str, list[_Load]] = {}
        self._load_lot = trio.lowlevel.ParkingLot()
        self._generation = 0
        self._written = 0
        self._failure: BaseException | None = None
        self._work = trio.lowlevel.ParkingLot()
        self._done = trio.lowlevel.ParkingLot()
        self._last_prune = -math.inf
        #: Transactions committed (for tests and statistics).
        self.transactions = 0

    # -- the connection ---------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in a worker thread; a cancellation interrupts the
        statement it is running."""

        def run() -> T:
            with self._thread_lock:
                if self._conn is None:
                    raise StoreError(f"store {self.path} is closed")
                return fn(self._conn, *args)

        try:
            return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
        except trio.Cancelled:
            conn = self._conn
            if conn is not None:
                conn.interrupt()
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    async def _open(self) -> None:
        def connect() -> int:
            conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=5.0
            )
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"{self.path}: cannot use WAL journaling (got {mode})")
                conn.execute("PRAGMA synchronous=NORMAL")
                version = _migrate(conn, self.path)
            except BaseException:
                conn.close()
                raise
            with self._thread_lock:
                self._conn = conn
            return version

        try:
            await trio.to_thread.run_sync(connect)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc

    async def _close(self) -> None:
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
            await self.flush()
        # Encoded here, so that a session whose data cannot be saved fails alone.
        self._queue().snapshots[snapshot.id] = (snapshot, encode_snapshot(snapshot))
        await trio.lowlevel.checkpoint()

    def forget(self, session_id: str) -> None:
        self._queue().snapshots[session_id] = None

    def note(self, record: SessionRecord) -> None:
        self._queue().records[record.id] = record

    def log(self, entry: LogEntry) -> None:
        self._queue().events.append(entry)

    async def flush(self) -> None:
        target = self._generation
        self._work.unpark()
        while self._written < target:
            if self._failure is not None:
                raise StoreError(f"store {self.path} cannot write: {self._failure}") from (
                    self._failure
                )
            await self._done.park()
        await trio.lowlevel.checkpoint()

    async def load(self, session_id: str) -> Snapshot | None:
        for batch in (self._queued, self._writing):
            if batch is not None and session_id in batch.snapshots:
                await trio.lowlevel.checkpoint()
                saved = batch.snapshots[session_id]
                return None if saved is None else saved[0]
        pending = _Load()
        self._loads.setdefault(session_id, []).append(pending)
        self._load_lot.unpark()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.snapshot

    async def record(self, session_id: str) -> SessionRecord | None:
        await self.flush()
        row = await self._call(
            lambda conn: conn.execute(_SELECT_RECORDS + " WHERE id = ?", (session_id,)).fetchone()
        )
        return None if row is None else _record(row)

    async def sessions(self) -> list[SessionRecord]:
        await self.flush()
        rows = await self._call(
            lambda conn: conn.execute(_SELECT_RECORDS + " ORDER BY last_activity DESC").fetchall()
        )
        return [_record(row) for row in rows]

    async def history(self, session_id: str) -> list[LogEntry]:
        await self.flush()
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
        except StoreError as exc:
            for waiters in loads.values():
                for pending in waiters:
                    pending.resolve(None, exc)
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
        """Write what is queued as one transaction; on failure, queue it again."""
        batch, self._queued = self._queued, _Batch()
        batch.generation = self._generation
        now = self._clock()
        prune = now - self._retention_age if now - self._last_prune >= _PRUNE_EVERY else None
        self._writing = batch
        try:
            await self._call(self._write, batch, prune)
        except StoreError as exc:
            self._writing = None
            log.error("store %s: writing failed, will retry: %s", self.path, exc)
            self._failure = exc
            self._requeue(batch)
            self._done.unpark_all()
            del batch
            await trio.sleep(1.0)
            return
        self._writing = None
        if prune is not None:
            self._last_prune = now
        self._failure = None
        self._written = max(self._written, batch.generation)
        self.transactions += 1
        self._done.unpark_all()

    def _requeue(self, batch: _Batch) -> None:
        queued = self._queued
        for key, record in batch.records.items():
            queued.records.setdefault(key, record)
        for key, snapshot in batch.snapshots.items():
            queued.snapshots.setdefault(key, snapshot)
        queued.events[:0] = batch.events

    def _write(self, conn: sqlite3.Connection, batch: _Batch, prune: float | None) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
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
            forgotten = [(key,) for key, s in batch.snapshots.items() if s is None]
            conn.executemany("UPDATE sessions SET snapshot = NULL WHERE id = ?", forgotten)
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
                conn.execute(
                    "UPDATE sessions SET snapshot = NULL, state = 'terminated', "
                    "reason = 'store_retention' WHERE snapshot IS NOT NULL "
                    "AND last_activity < ?",
                    (prune,),
                )
                conn.execute(
                    "DELETE FROM sessions WHERE snapshot IS NULL AND last_activity < ?",
                    (prune,),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


class _Load:
    __slots__ = ("done", "error", "snapshot")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.snapshot: Snapshot | None = None
        self.error: StoreError | None = None

    def resolve(self, snapshot: Snapshot | None, error: StoreError | None) -> None:
        self.snapshot, self.error = snapshot, error
        self.done.set()


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
) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(
        path,
        log_messages=log_messages,
        retention_events=retention_events,
        retention_age=retention_age,
        clock=clock,
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
                    with trio.CancelScope(shield=True) as scope:
                        scope.deadline = trio.current_time() + 30
                        try:
                            await store.flush()
                        except StoreError as exc:
                            log.error("store %s: closing with unwritten changes: %s", path, exc)
                    nursery.cancel_scope.cancel()
    finally:
        await store._close()
