"""Passivating and rehydrating sessions, against the store's own speed in the same run.

    python bench/passivation.py [--sessions 10000] [--runs 3] [--store sqlite|memory]

Measured, on a manager with a store (a fresh SQLite file by default):

* passivate: N live sessions whose clients went away (``reconnecting``) are passivated on
  demand; timed from the first request until every session has saved its snapshot,
  stopped its app, closed its resources and left memory, and the store has committed;
* rehydrate: each of the N clients resumes (a ``hello`` with token and ack over an
  in-memory channel); timed until every one is welcomed by its session, brought back from
  the store with its app running again.

Baselines, same run: saving the N snapshots those sessions wrote and committing them, and
loading them back -- the store's floor, with no session work at all; and trio's floor:
starting N tasks shaped like a session's (a task with a nursery and one child, as the
actor and the app) and cancelling them until they have unwound -- what any design that
gives each session a task of its own pays before doing anything.

Times are the median of ``--runs`` runs. Memory is what tracemalloc counts (Python
allocations) in one more run: held with N live idle sessions, after they were passivated,
and after they were brought back.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
import trio.testing
from _common import session_shaped

import statesession
from statesession import SessionStore, Snapshot, open_store
from statesession.testing import MemoryChannel, memory_channel_pair


async def idle_app(session: statesession.Session) -> None:
    session.data.setdefault("greeting", "hello")
    async for message in session:
        await session.send(message.data)


@attrs.define
class Figures:
    passivate: float = 0.0  # seconds for N sessions
    rehydrate: float = 0.0
    save_floor: float = 0.0
    load_floor: float = 0.0
    start_floor: float = 0.0
    cancel_floor: float = 0.0
    live: float = 0.0  # bytes held by N live sessions
    passivated: float = 0.0  # bytes held once they were passivated
    back: float = 0.0  # bytes held once they were brought back


@asynccontextmanager
async def fresh_store(kind: str) -> AsyncIterator[SessionStore]:
    if kind == "memory":
        async with open_store("memory") as store:
            yield store
        return
    with tempfile.TemporaryDirectory() as directory:
        async with open_store(Path(directory) / "sessions.db") as store:
            yield store


async def trio_floor(count: int, figures: Figures) -> None:
    """Start ``count`` session-shaped task pairs, then cancel them; record both times."""

    scopes = [trio.CancelScope() for _ in range(count)]
    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        for scope in scopes:
            nursery.start_soon(session_shaped, scope)
        await trio.testing.wait_all_tasks_blocked()
        figures.start_floor = time.perf_counter() - started
        started = time.perf_counter()
        for scope in scopes:
            scope.cancel()
    figures.cancel_floor = time.perf_counter() - started


def traced() -> int:
    if not tracemalloc.is_tracing():
        return 0
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def hello(channel: MemoryChannel, frame: dict[str, object]) -> dict[str, object]:
    await channel.send(json.dumps({"type": "hello", "v": 1, **frame}))
    welcome = json.loads(await channel.receive())
    assert welcome["type"] == "welcome", welcome
    return welcome  # type: ignore[no-any-return]


async def run_once(count: int, store_kind: str, trace: bool) -> Figures:
    figures = Figures()
    config = statesession.SessionConfig(max_sessions=count + 100, reconnect_window=3600)
    async with fresh_store(store_kind) as store, trio.open_nursery() as nursery:
        manager_cm = statesession.open_manager(idle_app, config=config, store=store)
        manager = await manager_cm.__aenter__()
        if trace:
            tracemalloc.start()
        base = traced()

        # N sessions, each welcomed, then left by its client.
        resumes = []
        for _ in range(count):
            server, client = memory_channel_pair(buffer=4)
            nursery.start_soon(manager.serve_channel, server)
            welcome = await hello(client, {})
            resumes.append(
                {
                    "session": welcome["session"],
                    "token": welcome["token"],
                    "client": welcome["client"],
                    "ack": 0,
                }
            )
            await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert all(s.state == "reconnecting" for s in manager.sessions.values())
        figures.live = traced() - base

        # Passivate them all.
        started = time.perf_counter()
        for resume in resumes:
            manager.passivate(str(resume["session"]))
        while len(manager):
            await trio.lowlevel.checkpoint()
        await store.flush()
        figures.passivate = time.perf_counter() - started
        await trio.testing.wait_all_tasks_blocked()
        figures.passivated = traced() - base

        # The store's floor: the same snapshots, loaded and saved with no session work.
        snapshots: list[Snapshot | None] = [None] * count

        async def load(i: int) -> None:
            snapshots[i] = await store.load(str(resumes[i]["session"]))

        started = time.perf_counter()
        async with trio.open_nursery() as loaders:
            for i in range(count):
                loaders.start_soon(load, i)
        figures.load_floor = time.perf_counter() - started
        started = time.perf_counter()
        for snapshot in snapshots:
            assert snapshot is not None
            await store.save(snapshot)
        await store.flush()
        figures.save_floor = time.perf_counter() - started
        snapshots.clear()

        # Bring them all back: every client resumes.
        clients: list[MemoryChannel] = []

        async def resume(frame: dict[str, object]) -> None:
            server, client = memory_channel_pair(buffer=4)
            nursery.start_soon(manager.serve_channel, server)
            await hello(client, frame)
            clients.append(client)

        started = time.perf_counter()
        async with trio.open_nursery() as resumers:
            for frame in resumes:
                resumers.start_soon(resume, frame)
        figures.rehydrate = time.perf_counter() - started
        assert len(manager) == count
        await trio.testing.wait_all_tasks_blocked()
        figures.back = traced() - base
        tracemalloc.stop()

        await trio_floor(count, figures)  # with the sessions still held, as they were
        for client in clients:
            await client.aclose()
        await manager_cm.__aexit__(None, None, None)
        nursery.cancel_scope.cancel()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    args = parser.parse_args()
    # Timed runs without tracing (it slows allocation down), then one traced run.
    runs = [trio.run(run_once, args.sessions, args.store, False) for _ in range(args.runs)]
    memory = trio.run(run_once, args.sessions, args.store, True)

    def median(field: str) -> float:
        return statistics.median(getattr(run, field) for run in runs)

    n = args.sessions
    print(f"{n} sessions, {args.store} store, median of {args.runs} runs")
    print(f"{'':<34}{'seconds':>9}{'sessions/s':>12}{'µs each':>9}{'vs store':>10}")
    for label, field, floor in (
        ("passivate (save, stop, leave)", "passivate", "save_floor"),
        ("store floor: save + commit", "save_floor", "save_floor"),
        ("trio floor: cancel 2 tasks", "cancel_floor", "save_floor"),
        ("rehydrate (resume to welcome)", "rehydrate", "load_floor"),
        ("store floor: load", "load_floor", "load_floor"),
        ("trio floor: start 2 tasks", "start_floor", "load_floor"),
    ):
        seconds = median(field)
        print(
            f"{label:<34}{seconds:>9.3f}{n / seconds:>12,.0f}{seconds / n * 1e6:>9.1f}"
            f"{seconds / median(floor):>9.2f}x"
        )
    print(f"{'memory (tracemalloc)':<32}{'KiB total':>12}{'KiB/session':>13}")
    for label, field in (
        ("live, idle", "live"),
        ("passivated", "passivated"),
        ("brought back", "back"),
    ):
        held = getattr(memory, field)
        print(f"{label:<32}{held / 1024:>12,.0f}{held / n / 1024:>13.2f}")


if __name__ == "__main__":
    main()
