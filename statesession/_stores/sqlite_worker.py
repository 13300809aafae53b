"""The SQLite store's connection, used from worker threads one call at a time.

Theory of operation
-------------------
One ``sqlite3`` connection is used from worker threads through ``trio.to_thread``, one
call at a time (a thread lock serialises them). A cancelled call never disturbs another's:
if its statement has not started, it never starts; if it is running,
``Connection.interrupt()`` stops it, so cancellation really ends a long query instead of
waiting for it. Whether a call is running and interrupting it are one step under a second,
small lock: a call cannot finish (and the next one start) between the check and the
interrupt. (SQLite's wait for another process's lock, at most the busy timeout, is not
interruptible.)

Opening connects (and migrates, see sqlite_schema.py) in a worker thread; closing closes
the connection in one, shielded, once no call holds it. A call after closing raises
``StoreError``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from .._core.exceptions import StoreError
from .sqlite_schema import connect

__all__ = ["SQLiteWorker"]

T = TypeVar("T")


class _Call:
    """One call on the connection, as its worker thread and its task both see it."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False


class _NotStarted(Exception):
    """A cancelled call's thread got the connection: it returns without running."""


class SQLiteWorker:
    """The connection to one SQLite file, and the calls on it."""

    def __init__(self, path: Path, *, busy_timeout: float) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        #: Held by the worker thread of the call using the connection.
        self._thread_lock = threading.Lock()
        #: Held to start or finish a call (``_running``), and to interrupt one.
        self._call_lock = threading.Lock()
        self._running: _Call | None = None

    async def open(self) -> int:
        """Connect, migrating the file to the current schema; return how many snapshots
        it holds."""
        saved = 0

        def open_connection() -> None:
            nonlocal saved
            conn, saved = connect(self.path, self._busy_timeout)
            with self._thread_lock:
                self._conn = conn

        try:
            await trio.to_thread.run_sync(open_connection)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        return saved

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
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

    async def close(self) -> None:
        """Close the connection (shielded: it happens even when cancelled)."""

        def close() -> None:
            with self._thread_lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close)
