"""Session stores: the in-memory one and the SQLite one (a real file)."""

from __future__ import annotations

import gc
import json
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

import statesession
from statesession import (
    CorruptSnapshotError,
    LogEntry,
    SessionRecord,
    SessionStore,
    Snapshot,
    StoreError,
    StoreVersionError,
    open_store,
)
from statesession._core.snapshot import ClientState, decode_snapshot, encode_snapshot
from statesession._stores import sqlite as sqlite_store
from statesession._stores import sqlite_schema


def snapshot(session_id: str = "s1", **changes: object) -> Snapshot:
    fields: dict[str, object] = {
        "id": session_id,
        "token_hash": b"\x07" * 32,
        "principal": "ann",
        "created": time.time() - 10,
        "passivated": time.time(),
        "reason": "idle",
        "data": {"turns": 3, "notes": ["é", None]},
        "first_seq": 4,
        "frames": ('{"type":"msg","seq":4,"data":"x"}', '{"type":"msg","seq":5,"data":"y"}'),
        "clients": (ClientState(id="c1", acked=3, processed=7),),
    }
    fields.update(changes)
    return Snapshot(**fields)  # type: ignore[arg-type]


def record(session_id: str = "s1", state: str = "active", **changes: object) -> SessionRecord:
    now = time.time()
    fields: dict[str, object] = {
        "id": session_id,
        "state": state,
        "principal": "ann",
        "created": now - 10,
        "last_activity": now,
    }
    fields.update(changes)
    return SessionRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    location = "memory" if request.param == "memory" else tmp_path / "sessions.db"
    async with open_store(location, retention_events=5) as opened:
        yield opened


def test_snapshot_encoding_round_trips() -> None:
    """A snapshot encodes and decodes back to an equal snapshot."""
    original = snapshot()
    assert decode_snapshot(encode_snapshot(original), session_id="s1") == original
    assert original.last_seq == 5


@pytest.mark.parametrize(
    ("mangle", "error", "fragment"),
    [
        (lambda d: "not json {", CorruptSnapshotError, "not valid JSON"),
        (lambda d: "[]", CorruptSnapshotError, "not a JSON object"),
        (lambda d: {**d, "v": 99}, StoreVersionError, "version 99"),
        (lambda d: {**d, "v": None}, CorruptSnapshotError, "no valid version"),
        (lambda d: {**d, "id": "other"}, CorruptSnapshotError, "belongs to session other"),
        (lambda d: {**d, "token_hash": "zz"}, CorruptSnapshotError, "s1"),
        (lambda d: {**d, "frames": [1]}, CorruptSnapshotError, "non-text frame"),
        (lambda d: {**d, "first_seq": 0}, CorruptSnapshotError, "first_seq"),
        (lambda d: {**d, "data": []}, CorruptSnapshotError, "'data' should be dict"),
        (
            lambda d: {**d, "clients": [{"id": "c", "acked": 99, "processed": 0}]},
            CorruptSnapshotError,
            "past the last message held",
        ),
    ],
)
def test_snapshot_decoding_names_what_is_wrong(
    mangle: object, error: type[Exception], fragment: str
) -> None:
    """Decoding a damaged snapshot raises the matching error, naming what is wrong."""
    good = json.loads(encode_snapshot(snapshot()))
    bad = mangle(good)  # type: ignore[operator]
    text = bad if isinstance(bad, str) else json.dumps(bad)
    with pytest.raises(error, match=fragment):
        decode_snapshot(text, session_id="s1")


async def test_store_saves_loads_and_forgets(store: SessionStore) -> None:
    """A store loads what was saved, its record says it holds a snapshot, and after forget
    nothing loads while the record stays."""
    assert await store.load("s1") is None
    store.note(record())
    await store.save(snapshot())
    assert await store.load("s1") == snapshot(
        created=(await store.load("s1")).created,  # type: ignore[union-attr]
        passivated=(await store.load("s1")).passivated,
    )  # type: ignore[union-attr]
    await store.flush()
    assert (await store.record("s1")).snapshot  # type: ignore[union-attr]
    store.forget("s1")
    assert await store.load("s1") is None
    found = await store.record("s1")
    assert found is not None
    assert found.state == "active"
    assert not found.snapshot


async def test_store_lists_sessions_most_recent_first(store: SessionStore) -> None:
    """sessions() lists each session once, at its latest record, most recently active first."""
    now = time.time()
    store.note(record("old", last_activity=now - 100))
    store.note(record("new", last_activity=now))
    store.note(record("old", state="terminated", last_activity=now - 50, reason="bye"))
    listed = await store.sessions()
    assert [(r.id, r.state, r.reason) for r in listed] == [
        ("new", "active", None),
        ("old", "terminated", "bye"),
    ]


async def test_store_event_log_keeps_the_newest_entries(store: SessionStore) -> None:
    """At most retention_events entries per session are kept, the newest."""
    now = time.time()
    for i in range(8):
        store.log(
            LogEntry(
                session="s1",
                time=now + i,
                kind="transition",
                event=f"e{i}",
                source="active",
                target="active",
            )
        )
    store.log(LogEntry(session="s2", time=now, kind="message", event="in", detail="{}"))
    history = await store.history("s1")
    assert [e.event for e in history] == ["e3", "e4", "e5", "e6", "e7"]
    assert [e.kind for e in await store.history("s2")] == ["message"]


async def test_sqlite_store_uses_wal_and_survives_reopening(tmp_path: Path) -> None:
    """An SQLite store's file is in WAL mode at the current schema version, and a reopened store
    loads what was saved."""
    path = tmp_path / "sessions.db"
    async with open_store(path) as first:
        first.note(record())
        await first.save(snapshot())
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.SCHEMA_VERSION
    async with open_store(path) as second:
        loaded = await second.load("s1")
        assert loaded is not None
        assert loaded.data == {"turns": 3, "notes": ["é", None]}


async def test_sqlite_store_writes_thousands_of_sessions_in_one_transaction(
    tmp_path: Path,
) -> None:
    """Saves made while another writer holds the file load at once and are written in at most
    two transactions once it lets go."""
    path = tmp_path / "sessions.db"
    async with open_store(path) as store:
        assert isinstance(store, sqlite_store.SQLiteStore)
        # Another writer holds the database, so the first write waits: every save made
        # meanwhile must go into the one transaction that follows it.
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        for i in range(3000):
            store.note(record(f"s{i}"))
            await store.save(snapshot(f"s{i}"))
        assert await store.load("s2999") is not None  # before it is written, too
        assert store.transactions == 0
        other.execute("ROLLBACK")
        other.close()
        await store.flush()
        assert store.transactions <= 2
        assert len(await store.sessions()) == 3000


async def test_sqlite_store_lets_go_of_what_it_has_written(tmp_path: Path) -> None:
    """Once written, the SQLite store holds no reference to a saved snapshot, and loads it from
    the file."""
    # A passivated session must cost nothing in memory: once written, neither the
    # snapshot nor its encoded text may stay referenced by the store.
    async with open_store(tmp_path / "sessions.db") as store:
        saved = snapshot("s1")
        await store.save(saved)
        await store.flush()
        await trio.testing.wait_all_tasks_blocked()
        gone = weakref.ref(saved)
        del saved
        gc.collect()
        assert gone() is None
        assert await store.load("s1") is not None  # from the file, not from memory


async def test_sqlite_store_lets_go_of_what_it_has_loaded(tmp_path: Path) -> None:
    """The SQLite store keeps no reference to a snapshot it loaded."""
    # A rehydrated session owns its state; the store must not keep the snapshots it
    # handed out (nor their text) until the next load.
    async with open_store(tmp_path / "sessions.db") as store:
        await store.save(snapshot("s1"))
        await store.flush()
        loaded = await store.load("s1")
        assert loaded is not None
        assert loaded.id == "s1"
        await trio.testing.wait_all_tasks_blocked()
        gone = weakref.ref(loaded)
        del loaded
        gc.collect()
        assert gone() is None


async def test_sqlite_store_batches_concurrent_loads(tmp_path: Path) -> None:
    """2000 concurrent loads each get their own session's snapshot."""
    async with open_store(tmp_path / "sessions.db") as store:
        for i in range(2000):
            await store.save(snapshot(f"s{i}"))
        await store.flush()
        loaded: list[Snapshot | None] = [None] * 2000

        async def load(i: int) -> None:
            loaded[i] = await store.load(f"s{i}")

        async with trio.open_nursery() as nursery:
            for i in range(2000):
                nursery.start_soon(load, i)
        assert [s.id for s in loaded if s] == [f"s{i}" for i in range(2000)]


async def test_sqlite_store_cancellation_interrupts_a_running_query(tmp_path: Path) -> None:
    """Cancelling really stops the query (interrupt), and the connection stays usable."""
    endless = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
    )
    async with open_store(tmp_path / "sessions.db") as store:
        assert isinstance(store, sqlite_store.SQLiteStore)
        started = time.perf_counter()
        with trio.move_on_after(0.2) as waited:
            await store._call(lambda conn: conn.execute(endless).fetchone())
        assert waited.cancelled_caught
        store.note(record())
        with trio.fail_after(5):
            await store.flush()  # waits for the interrupted statement's thread to let go
        assert time.perf_counter() - started < 3
        assert await store.record("s1") is not None


async def test_sqlite_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    """A file at a newer schema version is refused with StoreVersionError naming the version."""
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreVersionError, match="schema version 99"):
        async with open_store(path):
            pass


async def test_sqlite_store_migrates_step_by_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of an older schema is brought up to date on open, one step at a time, and a
    step that fails leaves the file as it was."""
    path = tmp_path / "sessions.db"
    async with open_store(path) as store:
        store.note(record())
    current = sqlite_schema.SCHEMA_VERSION

    def add_column(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE sessions ADD COLUMN tag TEXT")

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("the last step went wrong")

    monkeypatch.setattr(
        sqlite_schema, "MIGRATIONS", {**sqlite_schema.MIGRATIONS, current + 1: add_column}
    )
    async with open_store(path) as store:
        assert await store.record("s1") is not None
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == current + 1
        assert "tag" in [row[1] for row in raw.execute("PRAGMA table_info(sessions)")]

    monkeypatch.setattr(
        sqlite_schema,
        "MIGRATIONS",
        {**sqlite_schema.MIGRATIONS, current + 1: add_column, current + 2: broken},
    )
    with pytest.raises(StoreError, match="the last step went wrong"):
        async with open_store(path):
            pass
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == current + 1
        tables = [row[0] for row in raw.execute("SELECT name FROM sqlite_master")]
        assert "half_done" not in tables


async def test_sqlite_store_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    """A file that is not a database is refused with StoreError (cannot open store)."""
    path = tmp_path / "notes.txt"
    path.write_text("this is not a database, " * 100)
    with pytest.raises(StoreError, match="cannot open store"):
        async with open_store(path):
            pass


async def test_sqlite_store_reports_a_corrupt_snapshot_and_keeps_it(tmp_path: Path) -> None:
    """A snapshot that is not valid JSON raises CorruptSnapshotError on load and stays in the
    file as it was."""
    path = tmp_path / "sessions.db"
    async with open_store(path) as store:
        await store.save(snapshot())
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE sessions SET snapshot = '{\"v\": 1, \"id\": 5' WHERE id = 's1'")
    async with open_store(path) as store:
        with pytest.raises(CorruptSnapshotError, match="not valid JSON"):
            await store.load("s1")
    with sqlite3.connect(path) as raw:
        kept = raw.execute("SELECT snapshot FROM sessions WHERE id = 's1'").fetchone()[0]
    assert kept == '{"v": 1, "id": 5'


async def test_sqlite_store_reports_a_corrupt_log(tmp_path: Path) -> None:
    """A log entry of an unknown kind makes history() raise CorruptSnapshotError naming the
    entry."""
    path = tmp_path / "sessions.db"
    async with open_store(path) as store:
        store.log(
            LogEntry(
                session="s1",
                time=time.time(),
                kind="transition",
                event="activate",
                source="initializing",
                target="active",
            )
        )
    with sqlite3.connect(path) as raw:
        raw.execute(
            "INSERT INTO events (session, time, kind, event) VALUES ('s1', 0, 'garbage', 'x')"
        )
    async with open_store(path) as store:
        with pytest.raises(CorruptSnapshotError, match="corrupt at entry 1"):
            await store.history("s1")


async def test_sqlite_store_prunes_by_age(tmp_path: Path) -> None:
    """Entries older than retention_age go; so do snapshots nobody resumed in that time
    (their sessions are recorded as terminated)."""
    now = [1_000_000.0]
    async with sqlite_store.open_sqlite_store(
        tmp_path / "sessions.db",
        log_messages=False,
        retention_events=100,
        retention_age=3600.0,
        clock=lambda: now[0],
    ) as store:
        store.note(record("stale", last_activity=now[0] - 7200, created=now[0] - 7200))
        await store.save(snapshot("stale", passivated=now[0] - 7200))
        store.note(record("fresh", last_activity=now[0], created=now[0]))
        store.log(
            LogEntry(
                session="fresh",
                time=now[0] - 7200,
                kind="transition",
                event="old",
                source="active",
                target="active",
            )
        )
        store.log(
            LogEntry(
                session="fresh",
                time=now[0],
                kind="transition",
                event="new",
                source="active",
                target="active",
            )
        )
        await store.flush()
        now[0] += 61  # pruning runs at most once a minute: the next write prunes
        store.note(record("fresh", last_activity=now[0], created=now[0] - 61))
        await store.flush()
        assert [e.event for e in await store.history("fresh")] == ["new"]
        assert await store.load("stale") is None
        assert [r.id for r in await store.sessions()] == ["fresh"]


STORE_NAMES = {
    "CorruptSnapshotError",
    "LogEntry",
    "MemoryStore",
    "SessionRecord",
    "SessionStore",
    "Snapshot",
    "StoreError",
    "StoreStatistics",
    "StoreVersionError",
    "open_store",
}


async def test_store_exports(store: SessionStore) -> None:
    """Every store name is in statesession.__all__, and each backend open_store gives is a
    complete SessionStore (MemoryStore for "memory", an unexported class for a file) that
    hands back the exported Snapshot, SessionRecord, LogEntry and StoreStatistics types."""
    assert set(statesession.__all__) >= STORE_NAMES
    assert isinstance(store, statesession.SessionStore)
    assert not type(store).__abstractmethods__
    async with statesession.open_store("memory") as memory:
        assert type(memory) is statesession.MemoryStore
    if type(store) is not statesession.MemoryStore:
        assert type(store).__name__ not in statesession.__all__
    assert issubclass(statesession.StoreVersionError, statesession.StoreError)
    assert issubclass(statesession.CorruptSnapshotError, statesession.StoreError)
    store.note(record())
    await store.save(snapshot())
    store.log(LogEntry(session="s1", time=time.time(), kind="message", event="in", detail="{}"))
    await store.flush()
    assert type(await store.load("s1")) is statesession.Snapshot
    assert type(await store.record("s1")) is statesession.SessionRecord
    assert [type(e) for e in await store.history("s1")] == [statesession.LogEntry]
    assert type(store.statistics()) is statesession.StoreStatistics
