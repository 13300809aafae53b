"""The SQLite store's schema: its versions, and migrating a file to the current one.

Theory of operation
-------------------
The schema's version is SQLite's ``user_version``, and ``MIGRATIONS`` maps each version to
the step that brings a file of the version before to it. Opening a file migrates it step
by step to the current version, each step in its own ``BEGIN IMMEDIATE`` transaction that
reads the version again once it holds the write lock: processes opening one new file at
once take turns, and each step runs once. Switching a new file to WAL needs it to itself
and SQLite does not wait for that, so a busy switch is retried within the busy timeout. A
file of a newer version than this code knows is refused.

``connect`` runs in a worker thread: it returns the connection (WAL journal,
``synchronous=NORMAL``) and how many snapshots the file holds, counted over a partial
index of the sessions that have one.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from .._core.exceptions import StoreError, StoreVersionError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "connect"]

log = logging.getLogger("statesession.store")

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


def connect(path: Path, busy_timeout: float) -> tuple[sqlite3.Connection, int]:
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
