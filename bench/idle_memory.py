"""Memory per idle live session, in memory, against a same-run baseline.

    python bench/idle_memory.py [--sessions 10000] [--runs 3]

Baseline: per connection, an in-memory channel pair whose server side is held by a task
waiting for a frame -- what a transport costs before any session exists. Measured: the
same connection served by a statesession manager, with a welcomed, idle session whose app
waits for a message. The kernel's share is the difference. Memory is what tracemalloc
counts (Python allocations), the median of several runs, taken once every connection has
been idle for ``--idle`` seconds (default 1.5: an idle connection's writer task ends after
``WRITER_IDLE``, 1 s, and an idle session is one that has been idle a while).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tracemalloc
from collections.abc import Awaitable, Callable

import trio
import trio.testing
from _common import idle_app

import statesession
from statesession._runtime.connection import WRITER_IDLE
from statesession.protocol import HelloFrame, WelcomeFrame, decode_server_frame, encode_frame
from statesession.testing import memory_channel_pair

#: Seconds every connection is left idle before memory is measured (--idle): long enough
#: for idle connections' writers to have ended.
IDLE = WRITER_IDLE + 0.5
HELLO = encode_frame(HelloFrame())


async def measure(
    count: int,
    idle: float,
    open_one: Callable[[trio.Nursery], Awaitable[object]],
    verify: Callable[[], None] = lambda: None,
) -> float:
    """Bytes per connection held open by ``open_one`` (``verify`` checks what is held)."""
    async with trio.open_nursery() as nursery:
        keep = [await open_one(nursery) for _ in range(20)]  # warm up caches
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        keep += [await open_one(nursery) for _ in range(count)]
        await trio.sleep(idle)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        verify()
        nursery.cancel_scope.cancel()
    del keep
    return (after - before) / count


async def baseline(count: int, idle: float) -> float:
    async def open_one(nursery: trio.Nursery) -> object:
        server, client = memory_channel_pair(buffer=1)

        async def handler() -> None:
            await server.receive()

        nursery.start_soon(handler)
        return client

    return await measure(count, idle, open_one)


async def sessions(count: int, idle: float) -> float:
    # Quiet and patient: creating 100,000 sessions takes longer than the default
    # heartbeat timeout, and these clients never answer a ping.
    hour = 3600.0
    config = statesession.SessionConfig(
        max_sessions=count + 100,
        heartbeat_interval=hour,
        heartbeat_timeout=hour,
        reconnect_window=hour,
    )
    async with statesession.open_manager(idle_app, config=config) as manager:

        async def open_one(nursery: trio.Nursery) -> object:
            server, client = memory_channel_pair(buffer=1)
            nursery.start_soon(manager.serve_channel, server)
            await client.send(HELLO)
            reply = await client.receive()
            if not isinstance(
                decode_server_frame(reply, max_frame=config.max_frame), WelcomeFrame
            ):
                raise SystemExit(f"session {len(manager)} was refused: {reply!s:.200}")
            return client

        def verify() -> None:
            live = sum(session.state == "active" for session in manager.sessions.values())
            if live < count:
                raise SystemExit(f"only {live} of {count} sessions were still active")

        return await measure(count, idle, open_one, verify)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=IDLE, help="seconds idle before measuring")
    args = parser.parse_args()
    base = statistics.median(
        trio.run(baseline, args.sessions, args.idle) for _ in range(args.runs)
    )
    full = statistics.median(
        trio.run(sessions, args.sessions, args.idle) for _ in range(args.runs)
    )
    print(f"{'idle, in memory':<28}{'bytes/connection':>18}{'KiB':>9}{'ratio':>8}")
    print(f"{'baseline (channel + task)':<28}{base:>18.0f}{base / 1024:>9.2f}{1:>8.2f}")
    print(f"{'statesession session':<28}{full:>18.0f}{full / 1024:>9.2f}{full / base:>8.2f}")
    kernel = full - base
    print(f"{'kernel share (difference)':<28}{kernel:>18.0f}{kernel / 1024:>9.2f}")


if __name__ == "__main__":
    main()
