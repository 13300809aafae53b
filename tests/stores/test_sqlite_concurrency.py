"""The SQLite store shared: by tasks on its one connection (real worker threads), and by
processes opening one file at once (real subprocesses)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import trio
import trio.testing

from statesession import open_store
from statesession._stores import sqlite as sqlite_store
from statesession._stores import sqlite_schema

#: Counts to 200,000 after waiting in ``hold()``: the statement is running, in a loop that
#: checks for an interrupt, until the test lets it go.
_HELD_QUERY = (
    "WITH RECURSIVE n(x) AS (SELECT hold() UNION ALL SELECT x + 1 FROM n WHERE x < 200000) "
    "SELECT count(*) FROM n"
)


async def test_sqlite_store_cancelled_call_leaves_another_tasks_query_alone(
    tmp_path: Path,
) -> None:
    """A call cancelled while another task's statement runs neither interrupts that
    statement (it completes with its result) nor runs later."""
    started, release = threading.Event(), threading.Event()

    def hold() -> int:
        started.set()
        release.wait(30)
        return 1

    ran: list[str] = []
    async with open_store(tmp_path / "sessions.db") as store:
        assert isinstance(store, sqlite_store.SQLiteStore)
        await store._call(lambda conn: conn.create_function("hold", 0, hold))
        counted: list[int] = []

        async def slow() -> None:
            counted.append(await store._call(lambda conn: conn.execute(_HELD_QUERY).fetchone()[0]))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)
                await trio.to_thread.run_sync(started.wait)
                waiting = trio.CancelScope()
                nursery.start_soon(_call_in, waiting, store, lambda _: ran.append("cancelled"))
                await trio.testing.wait_all_tasks_blocked()
                waiting.cancel()
                await trio.testing.wait_all_tasks_blocked()
                release.set()
        finally:
            release.set()
        assert counted == [200_000]
        assert await store._call(lambda conn: conn.execute("SELECT 2").fetchone()[0]) == 2
    # (Closing took the connection's lock: a call that had not run by then never will.)
    assert ran == []


async def _call_in(
    scope: trio.CancelScope,
    store: sqlite_store.SQLiteStore,
    fn: Callable[[sqlite3.Connection], object],
) -> None:
    with scope:
        await store._call(fn)


async def test_sqlite_store_cancelled_call_interrupts_its_own_query(tmp_path: Path) -> None:
    """Cancelling the task whose statement is running interrupts that statement: the
    thread lets go of the connection, which stays usable."""
    started, release = threading.Event(), threading.Event()

    def hold() -> int:
        started.set()
        release.wait(30)
        return 1

    outcomes: list[BaseException] = []

    def keep_outcome(conn: sqlite3.Connection) -> int:
        try:
            return int(conn.execute(_HELD_QUERY).fetchone()[0])
        except sqlite3.Error as exc:
            outcomes.append(exc)
            raise

    async with open_store(tmp_path / "sessions.db") as store:
        assert isinstance(store, sqlite_store.SQLiteStore)
        await store._call(lambda conn: conn.create_function("hold", 0, hold))
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(store._call, keep_outcome)
                    await trio.to_thread.run_sync(started.wait)
                    scope.cancel()
        finally:
            release.set()
        # The next call runs once the interrupted one has let go of the connection.
        assert await store._call(lambda conn: conn.execute("SELECT 2").fetchone()[0]) == 2
    assert [str(exc) for exc in outcomes] == ["interrupted"]


_OPENER = """
import sys, trio
from pathlib import Path
from statesession import open_store

async def open_once(path):
    async with open_store(Path(path)):
        pass

for line in sys.stdin:
    try:
        trio.run(open_once, line.strip())
    except BaseException as exc:
        print("failed:", repr(exc).replace("\\n", " "), flush=True)
    else:
        print("ok", flush=True)
"""


def _schema(path: Path) -> tuple[int, list[tuple[str, str]]]:
    with sqlite3.connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal", f"{path.name} is in journal mode {mode}"
        objects = conn.execute("SELECT type, name FROM sqlite_master ORDER BY name").fetchall()
    return version, objects


def test_sqlite_store_concurrent_openers_of_a_fresh_file_all_succeed(tmp_path: Path) -> None:
    """Eight processes opening the same new file at once all succeed (none finds the
    schema half made or the file locked), and the file has the one current schema."""
    reference = tmp_path / "reference.db"
    trio.run(_open_once, reference)
    expected = _schema(reference)
    assert expected[0] == sqlite_schema.SCHEMA_VERSION
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        for attempt in range(100):
            path = tmp_path / f"fresh{attempt}.db"
            for opener in openers:
                assert opener.stdin is not None
                opener.stdin.write(f"{path}\n")
                opener.stdin.flush()
            answers = [opener.stdout.readline().strip() for opener in openers if opener.stdout]
            assert answers == ["ok"] * 8, f"round {attempt}: {answers}"
            assert _schema(path) == expected
    finally:
        for opener in openers:
            opener.communicate(timeout=30)


async def _open_once(path: Path) -> None:
    async with open_store(path):
        pass
