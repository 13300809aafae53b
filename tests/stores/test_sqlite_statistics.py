"""What a store says about itself (``statistics()``), against a real SQLite file, and the
schema migration that keeps its snapshot count cheap."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import attrs
import pytest
import trio
import trio.lowlevel

import statesession
from statesession import MemoryStore, SessionStore, StoreStatistics, open_store
from statesession._core.snapshot import encode_snapshot
from statesession._stores import sqlite as sqlite_store
from statesession._stores import sqlite_schema

from ..stores.test_store import record, snapshot


def _held(path: Path) -> int:
    with sqlite3.connect(path) as raw:
        return int(
            raw.execute("SELECT count(*) FROM sessions WHERE snapshot IS NOT NULL").fetchone()[0]
        )


async def test_sqlite_store_statistics_count_saves_and_forgets(tmp_path: Path) -> None:
    """snapshots counts saves at once, forgets once written, and is the file's count after
    a flush; queued and transactions say what waits and what was committed."""
    path = tmp_path / "sessions.db"
    async with open_store(path) as store:
        assert store.statistics() == StoreStatistics(
            snapshots=0, queued=0, transactions=0, failing=False, last_error=None
        )
        # Another connection holds the write lock, so nothing is written meanwhile.
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        for i in range(5):
            store.note(record(f"s{i}"))
            await store.save(snapshot(f"s{i}"))
        queued = store.statistics()
        other.execute("ROLLBACK")
        other.close()
        assert queued.snapshots == 5
        assert queued.queued == 10
        await store.flush()
        written = store.statistics()
        assert (written.snapshots, written.queued) == (5, 0)
        assert written.transactions >= 1
        assert written.transactions == store.transactions  # type: ignore[attr-defined]

        await store.save(snapshot("s0"))  # saved again: still one snapshot
        store.forget("s1")
        store.forget("never-saved")
        pending = store.statistics()
        assert 4 <= pending.snapshots <= 4 + pending.queued
        await store.flush()
        assert store.statistics().snapshots == 4 == _held(path)


async def test_sqlite_store_statistics_count_a_rehydrated_session_out(tmp_path: Path) -> None:
    """A session brought back (its snapshot loaded, then forgotten) leaves the count."""
    path = tmp_path / "sessions.db"
    async with open_store(path) as store:
        await store.save(snapshot("s1"))
        await store.save(snapshot("s2"))
    async with open_store(path) as store:
        assert store.statistics().snapshots == 2  # counted when opened
        assert await store.load("s1") is not None
        store.forget("s1")
        assert store.statistics().snapshots >= 1
        await store.flush()
        assert store.statistics().snapshots == 1 == _held(path)
    async with open_store(path) as store:
        assert store.statistics().snapshots == 1


async def test_sqlite_store_statistics_count_retention_pruning(tmp_path: Path) -> None:
    """Snapshots dropped by the retention policy leave the count."""
    now = [1_000_000.0]
    path = tmp_path / "sessions.db"
    async with sqlite_store.open_sqlite_store(
        path, log_messages=False, retention_events=10, retention_age=3600.0, clock=lambda: now[0]
    ) as store:
        await store.save(snapshot("stale", passivated=now[0] - 7200))
        await store.save(snapshot("fresh", passivated=now[0]))
        await store.flush()
        assert store.statistics().snapshots == 1  # the first write pruned "stale"
        now[0] += 3000
        await store.save(snapshot("later", passivated=now[0]))
        await store.flush()
        now[0] += 1000  # "fresh" is older than an hour; pruning is due again
        store.note(record("other", last_activity=now[0]))
        await store.flush()
        assert store.statistics().snapshots == 1 == _held(path)
        assert await store.load("later") is not None


async def test_sqlite_store_statistics_never_undercount(tmp_path: Path) -> None:
    """Whatever is queued or being written, snapshots is at least the number of sessions
    whose last word was a save, and exceeds it by no more than what is queued."""
    chooser = random.Random(20261121)
    ids = [f"s{i}" for i in range(40)]
    saved: set[str] = set()
    path = tmp_path / "sessions.db"
    async with open_store(path) as store:
        for step in range(3000):
            key = chooser.choice(ids)
            if chooser.random() < 0.55:
                await store.save(snapshot(key))
                saved.add(key)
            else:
                store.forget(key)
                saved.discard(key)
            stats = store.statistics()
            assert len(saved) <= stats.snapshots <= len(saved) + stats.queued, step
            if chooser.random() < 0.05:
                # (Lets the writer take a batch while more queue.)
                await trio.lowlevel.checkpoint()
            if chooser.random() < 0.01:
                await store.flush()
                assert store.statistics().snapshots == len(saved) == _held(path)
        await store.flush()
        assert store.statistics().snapshots == len(saved) == _held(path)
    async with open_store(path) as store:
        assert store.statistics().snapshots == len(saved)


async def test_memory_store_statistics_count_snapshots() -> None:
    """The memory store counts the snapshots it holds and never has anything queued."""
    store = MemoryStore()
    await store.save(snapshot("s1"))
    await store.save(snapshot("s2"))
    await store.save(snapshot("s1"))
    store.forget("s2")
    store.forget("nobody")
    assert store.statistics() == StoreStatistics(
        snapshots=1, queued=0, transactions=0, failing=False, last_error=None
    )


def test_store_statistics_is_optional_for_other_stores() -> None:
    """A store that does not count says so by name, and how to fix it."""

    class Minimal(MemoryStore):
        statistics = SessionStore.statistics

    with pytest.raises(NotImplementedError, match=r"Minimal.*statistics\(\).*StoreStatistics"):
        Minimal().statistics()


def test_store_statistics_is_a_frozen_value() -> None:
    """StoreStatistics is an immutable value exported from statesession."""
    stats = StoreStatistics(snapshots=1, queued=2, transactions=3, failing=True, last_error="x")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.snapshots = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        StoreStatistics(1, 2, 3, True, "x")  # type: ignore[misc]
    assert statesession.StoreStatistics is StoreStatistics


def _make_version_1(path: Path) -> None:
    with sqlite3.connect(path, isolation_level=None) as raw:
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("BEGIN")
        sqlite_schema.MIGRATIONS[1](raw)
        raw.execute("PRAGMA user_version = 1")
        now = time.time()
        raw.execute(
            "INSERT INTO sessions "
            "(id, state, principal, created, last_activity, reason, snapshot) VALUES "
            "('kept', 'passivated', 'ann', ?, ?, 'idle', ?), "
            "('over', 'terminated', 'bob', ?, ?, 'bye', NULL)",
            (now - 10, now, encode_snapshot(snapshot("kept")), now, now),
        )
        raw.execute(
            "INSERT INTO events (session, time, kind, event, source, target) VALUES "
            "('kept', ?, 'transition', 'expire', 'reconnecting', 'passivated')",
            (now,),
        )
        raw.execute("COMMIT")


async def test_sqlite_store_migrates_a_version_1_file_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    """A file of schema version 1 is brought to the current version on open and keeps its
    sessions, snapshots and event log; its snapshots are counted."""
    path = tmp_path / "sessions.db"
    _make_version_1(path)
    async with open_store(path) as store:
        assert store.statistics().snapshots == 1
        loaded = await store.load("kept")
        assert loaded is not None
        assert loaded.data == snapshot("kept").data
        listed = await store.sessions()
        assert {(r.id, r.state, r.snapshot) for r in listed} == {
            ("kept", "passivated", True),
            ("over", "terminated", False),
        }
        assert [e.event for e in await store.history("kept")] == ["expire"]
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.SCHEMA_VERSION
        plan = raw.execute(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM sessions WHERE snapshot IS NOT NULL"
        ).fetchall()
    assert "sessions_saved" in " ".join(str(row[-1]) for row in plan)
