"""The store conformance suite: what every SessionStore must do.

Each check takes ``new_store``, a function that makes a new, empty location (a fresh file,
database or key prefix) and returns a :data:`StoreOpener` for it: called with
``open_store``'s keyword options (``log_messages``, ``retention_events``,
``retention_age``), each omitted for its default, it returns an async context manager
yielding the store open at that location, and it may be called again to open the same
location anew -- while it is still open, too. ``persistent`` says whether what is flushed
outlives the store being closed (false for a store in memory); ``corrupt``, if the store
can hold a snapshot it cannot read, makes the stored snapshot of one session unreadable
(as a disk fault would) while the store is open. A check raises ``AssertionError`` saying
what went wrong. Run them all with :func:`check_store`, or one by one from
:data:`STORE_CHECKS` (for example to parametrize a test).
"""

from __future__ import annotations

import math
import time

import attrs
import trio

from .._core.exceptions import CorruptSnapshotError
from .._core.snapshot import Snapshot
from .._stores.port import SessionStore
from ._store_support import (
    Corrupt,
    NewStore,
    StoreCheck,
    StoreOpener,
    entry,
    expect,
    message,
    record,
    same,
    snapshot,
    store_check,
)

__all__ = ["STORE_CHECKS", "NewStore", "StoreOpener", "check_store"]


async def _flush(store: SessionStore) -> None:
    await store.flush()
    same(store.statistics().queued, 0, "statistics().queued after flush")


@store_check
async def check_round_trip(new_store: NewStore, persistent: bool, corrupt: Corrupt | None) -> None:
    """A snapshot with every field loads back equal: queued, flushed and reopened."""
    opener = new_store()
    saved = [snapshot("s1"), snapshot("s2", marker=1, principal=None)]
    async with opener() as store:
        for one in saved:
            await store.save(one)
        for one in saved:
            same(await store.load(one.id), one, f"load of {one.id} before flush")
        await _flush(store)
        for one in saved:
            same(await store.load(one.id), one, f"load of {one.id} after flush")
    if persistent:
        async with opener() as store:
            for one in saved:
                same(await store.load(one.id), one, f"load of {one.id} after reopening")


@store_check
async def check_unknown_session(
    new_store: NewStore, persistent: bool, corrupt: Corrupt | None
) -> None:
    """An unknown session loads None, has no record nor history; forgetting it is quiet."""
    async with new_store()() as store:
        same(await store.sessions(), [], "sessions() of a new store")
        await store.save(snapshot("known"))
        store.forget("never-saved")
        for phase in ("before flush", "after flush"):
            same(await store.load("nobody"), None, f"load of an unknown session {phase}")
            same(await store.record("nobody"), None, f"record of an unknown session {phase}")
            same(await store.history("nobody"), [], f"history of an unknown session {phase}")
            await _flush(store)
        same(await store.load("known"), snapshot("known"), "load after forgetting another")


@store_check
async def check_overwrite(new_store: NewStore, persistent: bool, corrupt: Corrupt | None) -> None:
    """Saving a session again replaces its snapshot, written or not."""
    opener = new_store()
    async with opener() as store:
        await store.save(snapshot("s", marker=1))
        await store.save(snapshot("s", marker=2))
        same(await store.load("s"), snapshot("s", marker=2), "load of a twice-saved session")
        await _flush(store)
        await store.save(snapshot("s", marker=3))
        same(await store.load("s"), snapshot("s", marker=3), "load after saving over it")
        await _flush(store)
        same(await store.load("s"), snapshot("s", marker=3), "load after flush")
    if persistent:
        async with opener() as store:
            same(await store.load("s"), snapshot("s", marker=3), "load after reopening")


@store_check
async def check_forget(new_store: NewStore, persistent: bool, corrupt: Corrupt | None) -> None:
    """forget drops that session's snapshot, written or not; a later save holds one again."""
    opener = new_store()
    async with opener() as store:
        await store.save(snapshot("a"))
        await store.save(snapshot("b"))
        store.forget("a")
        same(await store.load("a"), None, "load of a session forgotten before flush")
        await _flush(store)
        same(await store.load("a"), None, "load of a forgotten session after flush")
        store.forget("b")
        same(await store.load("b"), None, "load of a written session forgotten")
        await store.save(snapshot("c"))
        await _flush(store)
        same(await store.load("b"), None, "load of a forgotten session after flush")
        same(await store.load("c"), snapshot("c"), "load of the session not forgotten")
        await store.save(snapshot("a", marker=5))
        await _flush(store)
        same(await store.load("a"), snapshot("a", marker=5), "load after saving it again")
    if persistent:
        async with opener() as store:
            same(await store.load("b"), None, "load of a forgotten session after reopening")
            same(await store.load("a"), snapshot("a", marker=5), "load after reopening")


@store_check
async def check_refuses_non_json(
    new_store: NewStore, persistent: bool, corrupt: Corrupt | None
) -> None:
    """save of data that is not JSON raises TypeError and holds nothing new."""
    async with new_store()() as store:
        await store.save(snapshot("kept"))
        for bad in ({"x": object()}, {"x": math.nan}):
            for session_id in ("kept", "new"):
                try:
                    await store.save(attrs.evolve(snapshot(session_id), data=bad))
                except TypeError:
                    pass
                else:
                    raise AssertionError(f"save of data {bad!r} did not raise TypeError")
        await _flush(store)
        same(await store.load("kept"), snapshot("kept"), "the snapshot before a refused save")
        same(await store.load("new"), None, "load of a session only saved with bad data")
        same(store.statistics().snapshots, 1, "statistics().snapshots after refused saves")


@store_check
async def check_records(new_store: NewStore, persistent: bool, corrupt: Corrupt | None) -> None:
    """record and sessions (newest first) say the latest note, and if a snapshot is held."""
    now = time.time()
    opener = new_store()
    first = record("r1", at=now - 30, principal=None)
    second = record("r2", at=now - 10)
    third = record("r3", at=now - 20, state="terminated", reason="bye")
    async with opener() as store:
        for one in (first, second, third):
            store.note(one)
        same(await store.record("r1"), first, "record of a noted session")
        same(await store.sessions(), [second, third, first], "sessions(), newest first")
        first = attrs.evolve(first, state="reconnecting", last_activity=now, reason="detach")
        store.note(first)
        await store.save(snapshot("r2"))
        same(
            await store.sessions(),
            [first, attrs.evolve(second, snapshot=True), third],
            "sessions() after a new note and a save",
        )
        same(await store.record("r1"), first, "record after noting it again")
        same(await store.record("r2"), attrs.evolve(second, snapshot=True), "record, saved")
        store.forget("r2")
        await _flush(store)
        same(await store.record("r2"), second, "record of a session whose snapshot is gone")
    if persistent:
        async with opener() as store:
            same(await store.sessions(), [first, second, third], "sessions() after reopening")


@store_check
async def check_history_order(
    new_store: NewStore, persistent: bool, corrupt: Corrupt | None
) -> None:
    """history is the session's own log in the order logged, across writes."""
    opener = new_store()
    async with opener() as store:
        same(store.log_messages, False, "log_messages of a store opened without it")
        at = time.time()
        logged = {"a": [entry("a", 0, at), message("a", 1)], "b": [entry("b", 0, at)]}
        for one in (logged["a"][0], logged["b"][0], logged["a"][1]):
            store.log(one)
        same(await store.history("a"), logged["a"], "history before more is logged")
        more = [entry("a", n, at) for n in range(2, 6)]  # one time: the order is the log's
        for one in more:
            store.log(one)
        logged["a"] += more
        await _flush(store)
        same(await store.history("a"), logged["a"], "history of a session, oldest first")
        same(await store.history("b"), logged["b"], "history of another session")
    async with opener(log_messages=True) as store:
        same(store.log_messages, True, "log_messages of a store opened with it")
        if persistent:
            same(await store.history("a"), logged["a"], "history after reopening")


@store_check
async def check_history_retention(
    new_store: NewStore, persistent: bool, corrupt: Corrupt | None
) -> None:
    """The log keeps the newest retention_events entries, none past retention_age."""
    now = time.time()
    async with new_store()(retention_events=3, retention_age=3600.0) as store:
        old = [entry("a", n, now - 7200 + n) for n in range(2)]
        kept = [entry("a", n, now + n) for n in range(2, 4)]
        for one in (*old, *kept, entry("b", 0, now)):
            store.log(one)
        await _flush(store)
        same(await store.history("a"), kept, "history without the entries past retention_age")
        newest = [entry("b", n, now + n) for n in range(1, 6)]
        for one in newest:
            store.log(one)
        await _flush(store)
        same(await store.history("b"), newest[-3:], "history past retention_events")
        same(await store.history("a"), kept, "history of a session under the limit")


def _exact(store: SessionStore, expected: int, after: str, transactions: int) -> int:
    stats = store.statistics()
    same(stats.snapshots, expected, f"statistics().snapshots after {after}")
    same((stats.failing, stats.last_error), (False, None), f"failing, last_error after {after}")
    expect(stats.transactions >= transactions, "statistics().transactions went down")
    return stats.transactions


@store_check
async def check_statistics(new_store: NewStore, persistent: bool, corrupt: Corrupt | None) -> None:
    """statistics() counts the snapshots held: exact once flushed, before within queued."""
    opener = new_store()
    async with opener() as store:
        stats = store.statistics()
        same((stats.snapshots, stats.failing), (0, False), "statistics() of a new store")
        same(stats.last_error, None, "statistics().last_error of a new store")
        for name in ("a", "b", "c"):
            await store.save(snapshot(name))
        store.forget("b")
        store.forget("nobody")
        stats = store.statistics()
        expect(
            2 <= stats.snapshots <= 2 + stats.queued,
            f"statistics() before flush: snapshots {stats.snapshots} with {stats.queued} "
            "queued, for 2 held",
        )
        await _flush(store)
        seen = _exact(store, 2, "flush", stats.transactions)
        await store.save(snapshot("a", marker=1))
        await _flush(store)
        seen = _exact(store, 2, "a save over a held snapshot", seen)
        store.forget("a")
        await _flush(store)
        _exact(store, 1, "a forget", seen)
    if persistent:
        async with opener() as store:
            same(store.statistics().snapshots, 1, "statistics().snapshots after reopening")


@store_check
async def check_flush(new_store: NewStore, persistent: bool, corrupt: Corrupt | None) -> None:
    """After flush, a second open of the location sees everything handed over before it."""
    opener = new_store()
    now = time.time()
    async with opener() as store:
        with trio.move_on_after(10) as idle:
            await store.flush()
        expect(not idle.cancelled_caught, "flush of a store with nothing queued hung")
        noted = record("s", at=now, state="passivated")
        store.note(noted)
        await store.save(snapshot("s"))
        store.log(entry("s", 1, now))
        await _flush(store)
        if not persistent:
            return
        async with opener() as second:
            same(await second.load("s"), snapshot("s"), "load from a second open after flush")
            same(
                await second.record("s"),
                attrs.evolve(noted, snapshot=True),
                "record from a second open after flush",
            )
            same(await second.history("s"), [entry("s", 1, now)], "history from a second open")


@store_check
async def check_close_with_pending_writes(
    new_store: NewStore, persistent: bool, corrupt: Corrupt | None
) -> None:
    """Closing with writes not flushed returns; reopened, the store holds them all."""
    opener = new_store()
    now = time.time()
    names = [f"p{n:03d}" for n in range(300)]
    async with opener() as store:
        for n, name in enumerate(names):
            store.note(record(name, at=now - n))
            await store.save(snapshot(name, marker=n))
            store.log(entry(name, n, now))
        store.forget(names[0])
    if not persistent:
        return
    async with opener() as store:
        same(await store.load(names[0]), None, "load of a session forgotten before closing")
        for n, name in enumerate(names[1:], start=1):
            same(await store.load(name), snapshot(name, marker=n), "load after closing")
        same(len(await store.sessions()), len(names), "sessions saved before closing")
        same(await store.history(names[-1]), [entry(names[-1], 299, now)], "history")
        same(store.statistics().snapshots, len(names) - 1, "statistics().snapshots")


@store_check
async def check_concurrent_saves(
    new_store: NewStore, persistent: bool, corrupt: Corrupt | None
) -> None:
    """Concurrent saves and loads of different sessions each get their own snapshot."""
    opener = new_store()
    names = [f"c{n:03d}" for n in range(200)]

    async def load_all(store: SessionStore, when: str) -> None:
        found: dict[str, Snapshot | None] = {}

        async def load(name: str) -> None:
            found[name] = await store.load(name)

        async with trio.open_nursery() as nursery:
            for name in [*names, "unknown1", "unknown2"]:
                nursery.start_soon(load, name)
        for n, name in enumerate(names):
            same(found[name], snapshot(name, marker=n), f"concurrent load {when}")
        same((found["unknown1"], found["unknown2"]), (None, None), "unknown sessions")

    async with opener() as store:
        back: dict[str, Snapshot | None] = {}

        async def save_and_load(n: int, name: str) -> None:
            await store.save(snapshot(name, marker=n))
            await trio.lowlevel.checkpoint()
            back[name] = await store.load(name)

        async with trio.open_nursery() as nursery:
            for n, name in enumerate(names):
                nursery.start_soon(save_and_load, n, name)
        for n, name in enumerate(names):
            same(back[name], snapshot(name, marker=n), "load of a task's own save")
        await _flush(store)
        await load_all(store, "after flush")
    if persistent:
        async with opener() as store:
            await load_all(store, "after reopening")


@store_check
async def check_corrupt_snapshot(
    new_store: NewStore, persistent: bool, corrupt: Corrupt | None
) -> None:
    """An unreadable snapshot raises CorruptSnapshotError on every load, for it alone."""
    if corrupt is None:
        return
    async with new_store()() as store:
        await store.save(snapshot("bad"))
        await store.save(snapshot("good"))
        await _flush(store)
        await corrupt(store, "bad")
        for attempt in ("", " again"):
            try:
                await store.load("bad")
            except CorruptSnapshotError:
                pass
            else:
                raise AssertionError(f"load{attempt} of a corrupt snapshot did not raise")
            same(await store.load("good"), snapshot("good"), "load of a sound snapshot")


STORE_CHECKS: dict[str, StoreCheck] = {
    "round_trip": check_round_trip,
    "unknown_session": check_unknown_session,
    "overwrite": check_overwrite,
    "forget": check_forget,
    "refuses_non_json": check_refuses_non_json,
    "records": check_records,
    "history_order": check_history_order,
    "history_retention": check_history_retention,
    "statistics": check_statistics,
    "flush": check_flush,
    "close_with_pending_writes": check_close_with_pending_writes,
    "concurrent_saves": check_concurrent_saves,
    "corrupt_snapshot": check_corrupt_snapshot,
}


async def check_store(
    new_store: NewStore, *, persistent: bool = True, corrupt: Corrupt | None = None
) -> None:
    """Run every store check; raise AssertionError naming the first that fails."""
    for name, check in STORE_CHECKS.items():
        try:
            await check(new_store, persistent=persistent, corrupt=corrupt)
        except AssertionError as exc:
            raise AssertionError(f"store check {name!r} failed: {exc}") from exc
