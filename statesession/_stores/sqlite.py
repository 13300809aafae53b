"""The embedded default store: one SQLite file, written behind in batches.

Theory of operation
-------------------
``SQLiteStore`` is a write-behind store (write_behind.py: the queue, the flusher and its
retries, the loader, closing) whose backend is SQL on one ``sqlite3`` connection (WAL
journal, ``synchronous=NORMAL``). The connection is used from worker threads one call at
a time, and a cancelled call interrupts only its own statement (sqlite_worker.py). Opening
the file creates or migrates its schema (sqlite_schema.py).

A batch is written in one ``BEGIN IMMEDIATE`` transaction: records, then snapshots, then
forgets, then log entries, each an ``executemany``; then the event log is cut to
``retention_events`` per session and, at most once a minute, pruned by age together with
the sessions last active before it. The transaction computes in SQL how many snapshots it
added and removed (saves of sessions that had none, forgets and retention pruning that
cleared one), applied when it commits: after opening, counting the stored snapshots needs
no query. Reads select by id in chunks of 500.

``open_sqlite_url`` opens the file a ``sqlite://`` URL names (the ``statesession.stores``
entry point): everything after ``sqlite://`` is the path, so ``sqlite:///var/x.db`` is
absolute and ``sqlite://x.db`` relative to the working directory.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

from .._core.exceptions import CorruptSnapshotError, StoreError
from .._core.snapshot import LogEntry, SessionRecord
from .._core.util import collapse_single_exception_group
from .sqlite_worker import SQLiteWorker
from .write_behind import Batch, WriteBehindStore

__all__ = ["SQLiteStore", "open_sqlite_store", "open_sqlite_url", "sqlite_url_path"]

T = TypeVar("T")

#: Seconds SQLite waits for another connection's lock before a statement fails.
_BUSY_TIMEOUT = 5.0


class SQLiteStore(WriteBehindStore):
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
        super().__init__(
            str(path),
            log_messages=log_messages,
            retention_events=retention_events,
            retention_age=retention_age,
            clock=clock,
        )
        self.path = path
        self._worker = SQLiteWorker(path, busy_timeout=busy_timeout)

    # -- the connection ---------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in a worker thread: see :meth:`SQLiteWorker.call`."""
        return await self._worker.call(fn, *args)

    async def open(self) -> None:
        """Connect (creating or migrating the file), and count the snapshots it holds."""
        self._saved = await self._worker.open()

    async def close(self) -> None:
        """Stop writing and loading, and close the connection."""
        self.stop()
        await self._worker.close()

    # -- the backend of write-behind ----------------------------------------------------------

    async def _write_batch(self, batch: Batch, prune: float | None) -> int:
        return await self._call(self._write, batch, prune)

    async def _read_snapshots(self, keys: list[str]) -> dict[str, str]:
        return await self._call(_select_snapshots, keys)

    # -- the reads --------------------------------------------------------------------------

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

    def _write(self, conn: sqlite3.Connection, batch: Batch, prune: float | None) -> int:
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


def _select_snapshots(conn: sqlite3.Connection, keys: list[str]) -> dict[str, str]:
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
    await store.open()
    try:
        with collapse_single_exception_group():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.run_flusher, name=f"store {path} writer")
                nursery.start_soon(store.run_loader, name=f"store {path} reader")
                try:
                    yield store
                finally:
                    await store.finish_writing()
                    store.stop()
                    nursery.cancel_scope.cancel()
    finally:
        await store.close()


def sqlite_url_path(url: str) -> Path:
    """The file a ``sqlite://`` URL names: everything after ``sqlite://``."""
    path = url.partition("://")[2]
    if not path:
        raise StoreError(
            f"store URL {url!r} names no file (sqlite:///absolute/path.db or "
            "sqlite://relative/path.db)"
        )
    return Path(path)


@asynccontextmanager
async def open_sqlite_url(
    url: str, *, log_messages: bool, retention_events: int, retention_age: float
) -> AsyncIterator[SQLiteStore]:
    """The store in the file ``url`` names (created if missing, migrated if older)."""
    async with open_sqlite_store(
        sqlite_url_path(url),
        log_messages=log_messages,
        retention_events=retention_events,
        retention_age=retention_age,
    ) as store:
        yield store
