"""Every store passes the public store conformance suite: the memory store, and the SQLite
store on real files."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from statesession import MemoryStore, SessionStore, Snapshot, open_store
from statesession._stores.sqlite import SQLiteStore
from statesession.testing import STORE_CHECKS, NewStore, StoreOpener, check_store


def memory_store() -> StoreOpener:
    """A new memory store (each open is a new, empty one: nothing persists)."""
    return functools.partial(open_store, "memory://")


def sqlite_stores(tmp_path: Path) -> NewStore:
    """New SQLite files in ``tmp_path``, opened by sqlite:/// URL."""
    counter = iter(range(10**6))

    def new_store() -> StoreOpener:
        return functools.partial(open_store, f"sqlite://{tmp_path}/store{next(counter)}.db")

    return new_store


async def corrupt_sqlite(store: SessionStore, session_id: str) -> None:
    """Overwrite a stored snapshot with text that is not JSON, from another connection."""
    assert isinstance(store, SQLiteStore)

    def damage() -> None:
        with sqlite3.connect(store.path, timeout=5.0) as conn:
            conn.execute("UPDATE sessions SET snapshot = '{not json' WHERE id = ?", (session_id,))
        conn.close()

    await trio.to_thread.run_sync(damage)


@pytest.mark.parametrize("check", sorted(STORE_CHECKS))
async def test_store_conformance_memory(check: str) -> None:
    """The memory store passes each check (it persists nothing, holds nothing corrupt)."""
    await STORE_CHECKS[check](memory_store, persistent=False)


@pytest.mark.parametrize("check", sorted(STORE_CHECKS))
async def test_store_conformance_sqlite(tmp_path: Path, check: str) -> None:
    """The SQLite store passes each check, on real files reopened between steps."""
    await STORE_CHECKS[check](sqlite_stores(tmp_path), corrupt=corrupt_sqlite)


async def test_store_conformance_suite_runs_whole() -> None:
    """check_store runs every check (on the memory store, quickly)."""
    await check_store(memory_store, persistent=False)


async def test_store_conformance_sqlite_by_plain_path(tmp_path: Path) -> None:
    """The SQLite store opened by a plain path, as before store URLs, passes the suite."""
    counter = iter(range(10**6))

    def new_store() -> StoreOpener:
        return functools.partial(open_store, tmp_path / f"plain{next(counter)}.db")

    await check_store(new_store, corrupt=corrupt_sqlite)


class _Forgetful(MemoryStore):
    """Loses every second snapshot it is given."""

    saves = 0

    async def save(self, snapshot: Snapshot) -> None:
        self.saves += 1
        if self.saves % 2:
            await super().save(snapshot)


def _opener_of(store_type: Callable[[], MemoryStore]) -> NewStore:
    @asynccontextmanager
    async def opener(**options: object) -> AsyncIterator[SessionStore]:
        yield store_type()

    return lambda: opener


async def test_store_conformance_catches_a_store_that_loses_snapshots() -> None:
    """The suite fails a store that drops saves: it is not a suite that cannot fail."""
    with pytest.raises(AssertionError, match="'round_trip' failed: load of s2 before flush"):
        await check_store(_opener_of(_Forgetful), persistent=False)


async def test_store_conformance_catches_a_memory_store_claiming_persistence() -> None:
    """A store in memory checked as persistent fails: reopened, it holds nothing."""
    with pytest.raises(AssertionError, match="'round_trip' failed: load of s1 after reopening"):
        await check_store(memory_store)
