"""The SQLite store when writing fails: another process holds the file's write lock for
longer than the busy timeout (a real file, a real second process)."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from statesession import StoreError, open_store
from statesession._stores import sqlite as sqlite_store
from statesession._stores import write_behind

from ..stores.test_store import record, snapshot

_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


@asynccontextmanager
async def holding_write_lock(path: Path) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Another process holds ``path``'s write lock (``BEGIN IMMEDIATE``) until the
    function yielded is awaited (or the block ends)."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    said = b""
    while not said.endswith(b"\n"):
        chunk = await stdout.receive_some()
        assert chunk, "the lock holder exited before taking the lock"
        said += chunk
    assert said == b"locked\n"

    async def release() -> None:
        if process.returncode is None:
            await stdin.send_all(b"\n")
            await process.wait()
        assert process.returncode == 0

    try:
        yield release
    finally:
        with trio.CancelScope(shield=True):
            await release()


class LogSeen(logging.Handler):
    """Sets ``event`` once the store logs a message containing ``fragment``."""

    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment
        self.event = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.fragment in record.getMessage():
            self.event.set()


@pytest.fixture
def write_failed() -> AsyncIterator[trio.Event]:
    """An event set when the store logs that a write failed and will be retried."""
    seen = LogSeen("will retry")
    logger = logging.getLogger("statesession.store")
    logger.addHandler(seen)
    yield seen.event
    logger.removeHandler(seen)


async def test_sqlite_store_close_outlasts_a_transient_write_failure(
    tmp_path: Path, write_failed: trio.Event
) -> None:
    """A snapshot saved while another process holds the write lock past the busy timeout
    is in the file once the store has closed and the lock was let go meanwhile."""
    path = tmp_path / "sessions.db"
    async with open_store(path):
        pass
    async with holding_write_lock(path) as release, trio.open_nursery() as nursery:

        async def release_once_failed() -> None:
            await write_failed.wait()
            await release()

        async with open_store(path) as store:
            store.note(record("s1", state="passivated"))
            await store.save(snapshot("s1"))
            nursery.start_soon(release_once_failed)
        # (closed with the lock still held: the first write attempt is failing)
    async with open_store(path) as store:
        loaded = await store.load("s1")
        assert loaded is not None
        assert loaded.data == snapshot("s1").data


async def test_sqlite_store_reads_fail_only_for_a_write_failed_since_they_began(
    tmp_path: Path, write_failed: trio.Event
) -> None:
    """A read that flushes first raises StoreError when a write attempted after it began
    fails; one begun after the lock was let go reads, though a retry is still pending."""
    path = tmp_path / "sessions.db"
    async with open_store(path) as store:
        async with holding_write_lock(path) as release:
            store.note(record("s1"))
            with pytest.raises(StoreError, match=r"sessions\.db.*database is locked"):
                await store.sessions()
            assert write_failed.is_set()
            await release()
        assert [r.id for r in await store.sessions()] == ["s1"]
        assert await store.record("s1") is not None
        assert [e.event for e in await store.history("s1")] == []


async def test_sqlite_store_flush_waits_through_failures(
    tmp_path: Path, write_failed: trio.Event
) -> None:
    """flush() does not give up on a failing write: it returns once a retry succeeds; the
    store says meanwhile that it is failing, and why."""
    path = tmp_path / "sessions.db"
    async with (
        sqlite_store.open_sqlite_store(
            path, log_messages=False, retention_events=10, retention_age=3600.0, busy_timeout=0.05
        ) as store,
        holding_write_lock(path) as release,
    ):
        await store.save(snapshot("s1"))
        flushed = trio.Event()

        async def flush() -> None:
            await store.flush()
            flushed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush)
            await write_failed.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert not flushed.is_set()
            failing = store.statistics()
            assert failing.failing
            assert failing.queued == 1
            assert "database is locked" in (failing.last_error or "")
            await release()
        recovered = store.statistics()
        assert not recovered.failing
        assert recovered.queued == 0
        assert recovered.last_error == failing.last_error  # (kept: it did fail)


async def test_sqlite_store_close_logs_what_it_could_not_write(
    tmp_path: Path,
    write_failed: trio.Event,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store that cannot write within its closing allowance says what it leaves
    unwritten and why, then closes."""
    path = tmp_path / "sessions.db"
    monkeypatch.setattr(write_behind, "_CLOSE_ALLOWANCE", 0.5)
    async with open_store(path):
        pass
    async with holding_write_lock(path):
        async with sqlite_store.open_sqlite_store(
            path, log_messages=False, retention_events=10, retention_age=3600.0, busy_timeout=0.05
        ) as store:
            store.note(record("s1"))
            await store.save(snapshot("s1"))
            await store.save(snapshot("s2"))
            await write_failed.wait()
        with pytest.raises(StoreError, match="closed"):
            await store.flush()
    [closing] = [m for m in caplog.messages if "closing with unwritten changes" in m]
    assert "1 record, 2 snapshots and 0 events" in closing
    assert "database is locked" in closing


async def test_sqlite_store_refuses_loads_once_closed(tmp_path: Path) -> None:
    """A load from a closed store raises StoreError instead of waiting for a reader that
    is gone."""
    async with open_store(tmp_path / "sessions.db") as store:
        await store.save(snapshot("s1"))
    with trio.fail_after(5), pytest.raises(StoreError, match="is closed"):
        await store.load("s1")
