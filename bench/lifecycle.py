"""Creating, terminating and shutting down sessions, against bare trio in the same run.

    python bench/lifecycle.py [--sessions 10000] [--runs 3]
                              [--tasks 1000] [--resources 10] [--terminate-runs 15]

Three measurements, each next to a baseline measured in the same process, in the same
run (baseline and kernel runs alternate):

* create -> active: N sessions opened one after the other, each over an in-memory
  channel pair served by ``manager.serve_channel``; the client sends ``hello`` and waits
  for ``welcome`` (the session is then ``active``, its app waiting on ``async for``).
  CPU time from the first channel pair until the last session's tasks have all blocked,
  per session. Baseline: the same channel pairs, tasks and client, with a trivial server
  that decodes the ``hello``, answers a welcome-shaped frame of the same size and then
  waits for the next frame -- no kernel.
* terminate one session: its app entered R async context managers with
  ``session.enter_resource`` (each exit does one checkpoint) and started T tasks with
  ``session.start_soon`` (each blocked in ``trio.sleep_forever``); its client has left,
  so the session is ``reconnecting`` and nothing but its tasks and resources is measured.
  Wall time from ``session.terminate()`` until ``session.wait_terminated()`` returns;
  the run fails unless the session is ``terminated`` and its report lists the T tasks
  ``forced``, the app (which ends by itself or is forced) and the R resources
  ``closed``. Config: ``cancel_grace=0``, so blocked tasks are cancelled at once (with
  the default 1 s grace, the grace period would be the whole figure). Baseline: a bare
  trio nursery holding T such tasks, cancelled, then R such context managers exited (an
  ``AsyncExitStack``), timed from the cancel until the last one has exited. Goal: at
  most 20 ms.
* shutdown: wall time to leave ``open_manager`` (no store) holding the N live, idle
  sessions made by the create measurement, their clients still connected: every session
  runs its cascade, tells its client ``closed`` and its channel is closed. Baseline: N
  session-shaped tasks (a task holding a nursery with one child task, as a session's
  actor and app), started beside the baseline's N channel pairs, cancelled and waited
  for until they have all unwound.

Every row shows both clocks, each with its ratio to the baseline: wall time
(``time.perf_counter``) and CPU time (``time.process_time``; all of it this process's
one thread). The create figure is the CPU time; terminate and shutdown are wall times
(the goal is judged on wall time), the CPU column showing how much of a wall time was
other processes competing for the machine. Idle sessions are kept quiet
(``heartbeat_interval`` one hour) so that no ping lands in a measurement. Each figure is
the median of ``--runs`` runs (``--terminate-runs`` for the terminate measurement, which
is cheap). Every wait is bounded: a run that stalls stops with a message saying what it
was waiting for.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress

import attrs
import trio
import trio.testing
from _common import (
    ONE_PEER_FOR_ALL,
    BenchError,
    Span,
    Stopwatch,
    bounded,
    first_leaf,
    idle_app,
    session_shaped,
)

import statesession
from statesession import ChannelError, Outcome, SessionConfig
from statesession.protocol import ClosedFrame, HelloFrame, WelcomeFrame, encode_frame
from statesession.testing import MemoryChannel, memory_channel_pair

#: The goal for terminating one session with T tasks and R resources, in seconds.
TERMINATE_GOAL = 0.020

HELLO = encode_frame(HelloFrame())

#: What the baseline's trivial server answers: a welcome with the fields and sizes of a
#: real one (16-character id, 32-character token, 12-character client id).
WELCOME_SHAPED = encode_frame(
    WelcomeFrame(
        session="s" * 16,
        token="t" * 32,
        client="c" * 12,
        resumed=False,
        state="active",
        ack=0,
        heartbeat=3600.0,
        window=30.0,
    )
)
#: The last frame a client of a session ended by the shutdown gets.
CLOSED_BY_SHUTDOWN = encode_frame(ClosedFrame(reason="server_shutdown"))


@contextmanager
def watchdog(seconds: float, what: str) -> Iterator[None]:
    """Bound a wait that cancellation cannot interrupt (``open_manager``'s shutdown is
    shielded): past ``seconds``, say what stalled and end the process."""

    def expire() -> None:
        print(f"lifecycle: timed out after {seconds:g} s waiting for {what}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def session_config(sessions: int, cancel_grace: float = 1.0) -> SessionConfig:
    return SessionConfig(
        max_sessions=sessions + 100,
        heartbeat_interval=3600,
        heartbeat_timeout=3600,
        cancel_grace=cancel_grace,
        **ONE_PEER_FOR_ALL,
    )


#: A span not measured yet (Span is frozen, so one instance serves every default).
NO_TIME = Span(0.0, 0.0)


@attrs.define
class Figures:
    """One run's measurements."""

    create: Span = NO_TIME  # N connections welcomed
    shutdown: Span = NO_TIME  # N sessions (or N session-shaped tasks) ended


# == create -> active, then shutdown ====================================================


async def trivial_server(channel: MemoryChannel) -> None:
    """The baseline's server side: read the hello, answer a welcome, hold the channel."""
    with suppress(ChannelError):
        hello = json.loads(await channel.receive())
        if hello.get("type") != "hello":
            raise BenchError(f"expected a hello, got {hello!r}")
        await channel.send(WELCOME_SHAPED)
        await channel.receive()
    await channel.aclose()


async def open_connections(
    count: int, serve: Callable[[MemoryChannel], Awaitable[None]], nursery: trio.Nursery
) -> tuple[Span, list[MemoryChannel]]:
    """Open ``count`` connections one after the other, each welcomed; return the time
    taken (until every task has blocked) and the client ends."""
    clients: list[MemoryChannel] = []
    gc.collect()
    with bounded(60 + count * 0.01, f"{count} connections to be welcomed"):
        stopwatch = Stopwatch()
        for _ in range(count):
            # Room for the frames a session sends after its welcome when it is shut
            # down (``state``, ``closed``), which its idle client never reads.
            server, client = memory_channel_pair(buffer=4)
            nursery.start_soon(serve, server)
            await client.send(HELLO)
            welcome = json.loads(await client.receive())
            if welcome.get("type") != "welcome":
                raise BenchError(f"expected a welcome, got {welcome!r}")
            clients.append(client)
        await trio.testing.wait_all_tasks_blocked()
        span = stopwatch.stop()
    return span, clients


async def baseline_run(count: int) -> Figures:
    figures = Figures()

    async with trio.open_nursery() as transports:
        figures.create, clients = await open_connections(count, trivial_server, transports)
        scopes = [trio.CancelScope() for _ in range(count)]
        with bounded(60 + count * 0.01, f"{count} session-shaped tasks to shut down"):
            async with trio.open_nursery() as actors:
                for scope in scopes:
                    actors.start_soon(session_shaped, scope)
                await trio.testing.wait_all_tasks_blocked()
                gc.collect()
                stopwatch = Stopwatch()
                for scope in scopes:
                    scope.cancel()
            figures.shutdown = stopwatch.stop()
        transports.cancel_scope.cancel()
    del clients
    return figures


async def sessions_run(count: int) -> Figures:
    figures = Figures()
    config = session_config(count)
    bound = 2 * (60 + count * 0.01)  # past the bound on opening them
    async with trio.open_nursery() as transports:
        with watchdog(bound, f"{count} sessions to open and shut down"):
            async with statesession.open_manager(idle_app, config=config) as manager:
                figures.create, clients = await open_connections(
                    count, manager.serve_channel, transports
                )
                states = {session.state for session in manager.sessions.values()}
                if len(manager) != count or states != {"active"}:
                    raise BenchError(
                        f"expected {count} active sessions, got {len(manager)} {states}"
                    )
                gc.collect()
                stopwatch = Stopwatch()
            # (The shutdown ran here, leaving ``open_manager``.)
            figures.shutdown = stopwatch.stop()
        if len(manager):
            raise BenchError(f"{len(manager)} sessions outlived their manager")
        with bounded(60 + count * 0.01, "every client to be told closed"):
            for client in clients:
                await expect_closed(client)
        transports.cancel_scope.cancel()
    return figures


async def expect_closed(client: MemoryChannel) -> None:
    """Check that a client was told its session ended (``closed server_shutdown``) and
    that its channel was closed."""
    last = ""
    with suppress(ChannelError):
        while True:
            last = await client.receive()
    if last != CLOSED_BY_SHUTDOWN:
        raise BenchError(f"a client's last frame was {last!r}, not closed server_shutdown")
    await client.aclose()


# == terminate one session with T tasks and R resources ==================================


@asynccontextmanager
async def checkpointed_resource() -> AsyncIterator[None]:
    yield
    await trio.lowlevel.checkpoint()


async def terminate_session(tasks: int, resources: int) -> Span:
    """The time from ``terminate()`` until the report of a session owning ``tasks``
    blocked tasks and ``resources`` context managers is complete."""
    ready = trio.Event()

    async def app(session: statesession.Session) -> None:
        for i in range(resources):
            await session.enter_resource(f"resource-{i}", checkpointed_resource())
        for _ in range(tasks):
            session.start_soon(trio.sleep_forever, name="sleeper")
        ready.set()
        async for _ in session:
            pass

    config = session_config(1, cancel_grace=0)
    async with (
        trio.open_nursery() as transports,
        statesession.open_manager(app, config=config) as manager,
    ):
        server, client = memory_channel_pair(buffer=4)
        transports.start_soon(manager.serve_channel, server)
        with bounded(10, "the session to start its tasks, then lose its client"):
            await client.send(HELLO)
            welcome = json.loads(await client.receive())
            session = manager.sessions[welcome["session"]]
            await ready.wait()
            await client.aclose()  # the client leaves; the session waits for it
            await trio.testing.wait_all_tasks_blocked()
        if session.state != "reconnecting":
            raise BenchError(f"session is {session.state} once its client left")
        held = session.statistics()
        if held.tasks != tasks + 1 or held.resources != resources:
            raise BenchError(f"session holds {held.tasks} tasks, {held.resources} resources")
        gc.collect()
        with bounded(10, "the session to terminate"):
            stopwatch = Stopwatch()
            session.terminate()
            report = await session.wait_terminated()
            span = stopwatch.stop()
    check_report(session, report, tasks, resources)
    return span


def check_report(
    session: statesession.Session,
    report: statesession.CleanupReport | None,
    tasks: int,
    resources: int,
) -> None:
    if session.state != "terminated" or report is None or not report.clean:
        raise BenchError(f"session ended {session.state} with report {report!r}")
    sleepers = [item for item in report.tasks if item.name == "sleeper"]
    others = [item.name for item in report.tasks if item.name != "sleeper"]
    if len(sleepers) != tasks or any(i.outcome is not Outcome.FORCED for i in sleepers):
        raise BenchError(f"report lists {len(sleepers)} sleepers, not {tasks} forced")
    if others != ["app"]:
        raise BenchError(f"report lists unexpected tasks {others!r}")
    closed = [item for item in report.resources if item.outcome is Outcome.CLOSED]
    if len(report.resources) != resources or len(closed) != resources:
        raise BenchError(f"report lists {len(closed)} resources closed, not {resources}")


async def terminate_bare(tasks: int, resources: int) -> Span:
    """The baseline: cancel a nursery of ``tasks`` blocked tasks, then exit
    ``resources`` context managers; the time from the cancel to the last exit."""
    stack = AsyncExitStack()
    for _ in range(resources):
        await stack.enter_async_context(checkpointed_resource())
    with bounded(10, "a bare nursery to be cancelled"):
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(trio.sleep_forever)
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            stopwatch = Stopwatch()
            nursery.cancel_scope.cancel()
        await stack.aclose()
        return stopwatch.stop()


# == the table ===========================================================================


def rows(
    title: str,
    names: tuple[str, str],
    unit: str,
    scale: float,
    spans: tuple[list[Span], list[Span]],
    note: str = "",
) -> list[str]:
    """A section of the table: the baseline's row and the kernel's (medians times
    ``scale``), each clock with its ratio to the baseline's."""
    base_wall = statistics.median(span.wall for span in spans[0]) * scale
    base_cpu = statistics.median(span.cpu for span in spans[0]) * scale
    lines = [title]
    for name, runs, extra in (
        (f"  baseline: {names[0]}", spans[0], ""),
        (f"  statesession: {names[1]}", spans[1], note),
    ):
        wall = statistics.median(span.wall for span in runs) * scale
        cpu = statistics.median(span.cpu for span in runs) * scale
        lines.append(
            f"{name:<44}{wall:>11,.1f}{wall / base_wall:>7.2f}x{cpu:>11,.1f}"
            f"{cpu / base_cpu:>7.2f}x  {unit:<11}{extra}".rstrip()
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000, help="for create and shutdown")
    parser.add_argument("--runs", type=int, default=3, help="runs of create and shutdown")
    parser.add_argument(
        "--tasks", type=int, default=1000, help="tasks the terminated session owns"
    )
    parser.add_argument("--resources", type=int, default=10, help="its resources")
    parser.add_argument("--terminate-runs", type=int, default=15, help="runs of terminate")
    args = parser.parse_args()
    n = args.sessions
    try:
        base_runs: list[Figures] = []
        kernel_runs: list[Figures] = []
        for _ in range(args.runs):
            base_runs.append(trio.run(baseline_run, n))
            kernel_runs.append(trio.run(sessions_run, n))
        bare: list[Span] = []
        kernel: list[Span] = []
        for _ in range(args.terminate_runs):
            bare.append(trio.run(terminate_bare, args.tasks, args.resources))
            kernel.append(trio.run(terminate_session, args.tasks, args.resources))
    except* BenchError as group:
        sys.exit(f"lifecycle: {first_leaf(group)}")

    print(
        f"{n:,} sessions (median of {args.runs} runs); terminate: {args.tasks:,} tasks + "
        f"{args.resources} resources (median of {args.terminate_runs} runs)"
    )
    print(f"{'':<44}{'wall':>11}{'ratio':>8}{'CPU':>11}{'ratio':>8}  {'unit':<11}goal")
    sections = [
        rows(
            "create -> active (CPU is the figure)",
            ("channel + trivial welcome", "hello -> welcome"),
            "µs/session",
            1e6 / n,
            ([run.create for run in base_runs], [run.create for run in kernel_runs]),
        )
    ]
    wall = statistics.median(span.wall for span in kernel)
    cpu = statistics.median(span.cpu for span in kernel)
    verdict = "met" if wall <= TERMINATE_GOAL else "MISSED"
    if wall > TERMINATE_GOAL and cpu <= TERMINATE_GOAL:
        verdict += " (met in CPU time)"
    sections.append(
        rows(
            f"terminate 1 session ({args.tasks:,} tasks, {args.resources} resources)",
            ("bare nursery + exit stack", "terminate -> terminated"),
            "ms",
            1e3,
            (bare, kernel),
            f"wall <= {TERMINATE_GOAL * 1e3:g} ms: {verdict}",
        )
    )
    sections.append(
        rows(
            f"shutdown {n:,} idle sessions",
            ("cancel session-shaped tasks", "leave open_manager"),
            "ms",
            1e3,
            ([run.shutdown for run in base_runs], [run.shutdown for run in kernel_runs]),
        )
    )
    for section in sections:
        print("\n".join(section))


if __name__ == "__main__":
    main()
