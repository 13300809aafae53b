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
actor and the app) and cancelling them until they have unwound -- what this design pays
before doing anything -- and starting and cancelling N single tasks (one waiting app per
session): what any design that runs each session's app as a task of its own pays. The
store's floor plus the single task's is the least a session can cost each way with this
store, whatever the rest of the design.

Times are the median of ``--runs`` runs, made once as Python runs by default and once with
its cyclic garbage collector paused (``--gc`` picks one): the difference is what the
collector's full passes over a heap of N sessions cost, which grows with the heap and is
paid by any Python program that makes or unmakes that many objects. Memory is what
tracemalloc counts (Python allocations) in one more run: held with N live idle sessions,
after they were passivated, and after they were brought back.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
import trio.testing
from _common import session_shaped

import statesession
from statesession import SessionStore, Snapshot, open_store
from statesession.protocol import HelloFrame, encode_frame
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
    start_floor: float = 0.0  # a session-shaped task pair
    cancel_floor: float = 0.0
    start_one: float = 0.0  # a single task
    cancel_one: float = 0.0
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


async def one_task(scope: trio.CancelScope) -> None:
    """The least a session with an app of its own can be: one task, waiting."""
    with scope:
        await trio.sleep_forever()


async def trio_floor(
    count: int, shape: Callable[[trio.CancelScope], Awaitable[None]]
) -> tuple[float, float]:
    """Start ``count`` tasks of ``shape``, then cancel them: seconds for each."""
    scopes = [trio.CancelScope() for _ in range(count)]
    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        for scope in scopes:
            nursery.start_soon(shape, scope)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter() - started
        started = time.perf_counter()
        for scope in scopes:
            scope.cancel()
    return start, time.perf_counter() - started


def traced() -> int:
    if not tracemalloc.is_tracing():
        return 0
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def hello(channel: MemoryChannel, frame: HelloFrame) -> dict[str, object]:
    await channel.send(encode_frame(frame))
    welcome = json.loads(await channel.receive())
    assert welcome["type"] == "welcome", welcome
    return welcome  # type: ignore[no-any-return]


def run_once(count: int, store_kind: str, trace: bool, gc_paused: bool) -> Figures:
    if not gc_paused:
        return trio.run(measure, count, store_kind, trace)
    gc.disable()
    try:
        return trio.run(measure, count, store_kind, trace)
    finally:
        gc.enable()
        gc.collect()


async def measure(count: int, store_kind: str, trace: bool) -> Figures:
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
            welcome = await hello(client, HelloFrame())
            resumes.append(
                HelloFrame(
                    session=str(welcome["session"]),
                    token=str(welcome["token"]),
                    client=str(welcome["client"]),
                    ack=0,
                    resume=True,
                )
            )
            await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert all(s.state == "reconnecting" for s in manager.sessions.values())
        figures.live = traced() - base

        # Passivate them all.
        started = time.perf_counter()
        for resume in resumes:
            manager.passivate(str(resume.session))
        while len(manager):
            await trio.lowlevel.checkpoint()
        await store.flush()
        figures.passivate = time.perf_counter() - started
        await trio.testing.wait_all_tasks_blocked()
        figures.passivated = traced() - base

        # The store's floor: the same snapshots, loaded and saved with no session work.
        snapshots: list[Snapshot | None] = [None] * count

        async def load(i: int) -> None:
            snapshots[i] = await store.load(str(resumes[i].session))

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

        async def resume(frame: HelloFrame) -> None:
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

        # With the sessions still held, as they were.
        figures.start_floor, figures.cancel_floor = await trio_floor(count, session_shaped)
        figures.start_one, figures.cancel_one = await trio_floor(count, one_task)
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
    parser.add_argument("--gc", choices=["both", "on", "paused"], default="both")
    args = parser.parse_args()
    n = args.sessions
    # Timed runs without tracing (it slows allocation down), then one traced run.
    modes = {"on": [False], "paused": [True], "both": [False, True]}[args.gc]
    runs = {
        paused: [run_once(n, args.store, False, paused) for _ in range(args.runs)]
        for paused in modes
    }
    memory = run_once(n, args.store, True, False)

    def each(field: str, paused: bool) -> float:
        """Seconds per session, median of the runs."""
        return statistics.median(getattr(run, field) for run in runs[paused]) / n

    print(f"{n} sessions, {args.store} store, median of {args.runs} runs")
    heading = {False: "GC as usual", True: "GC paused"}
    print(f"{'':<34}" + "".join(f"{heading[paused]:>22}" for paused in modes))
    print(f"{'':<34}" + f"{'µs each':>10}{'sessions/s':>12}" * len(modes))

    def row(label: str, seconds: Callable[[bool], float]) -> None:
        print(
            f"{label:<34}"
            + "".join(f"{seconds(p) * 1e6:>10.1f}{1 / seconds(p):>12,.0f}" for p in modes)
        )

    for label, fields in (
        ("passivate (save, stop, leave)", ["passivate"]),
        ("store floor: save + commit", ["save_floor"]),
        ("trio floor: cancel 2 tasks", ["cancel_floor"]),
        ("trio floor: cancel 1 task", ["cancel_one"]),
        ("least: store + cancel 1 task", ["save_floor", "cancel_one"]),
        ("rehydrate (resume to welcome)", ["rehydrate"]),
        ("store floor: load", ["load_floor"]),
        ("trio floor: start 2 tasks", ["start_floor"]),
        ("trio floor: start 1 task", ["start_one"]),
        ("least: store + start 1 task", ["load_floor", "start_one"]),
    ):
        row(label, lambda paused, fields=fields: sum(each(f, paused) for f in fields))
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
