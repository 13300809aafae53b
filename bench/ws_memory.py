"""Server memory per idle live WebSocket session, against a same-run baseline.

    python bench/ws_memory.py [--sessions 10000] [--runs 3] [--servers NAME,...]

Each server runs in a process of its own, listening on 127.0.0.1; the clients run in
another (``--load-processes``, default 1), on trio-websocket. Measured: the server
process's resident memory (RSS, psutil), after a garbage collection, once after startup
and a warm-up (``--warmup`` connections opened, handshaken and closed again, none left),
then once every one of the N clients is connected, handshaken and idle and the server
itself counts N live connections. Reported: (RSS after - RSS before) / N in KiB per
connection, the median of ``--runs`` runs (the servers take turns within each run), and
the ratio to the baseline.

Servers (``--servers`` picks; the registry ``SERVERS`` says how each is started):

* ``raw-trio-websocket`` (baseline): a trio-websocket server whose handler accepts the
  connection and waits for a message -- what a WebSocket connection costs on the
  library statesession's transport is built on, before any session exists;
* ``statesession``: a manager whose app waits on ``async for message in session``,
  served by ``statesession.serve`` on its WebSocket transport. Each client sends
  ``hello`` and gets ``welcome``; a connection counts as live when its session is
  ``active`` with the connection attached. The server keeps its default heartbeat
  (``ping`` after 10 s of silence, dropped after 30 s) and the clients answer every
  ``ping`` with ``pong``, so the sessions stay live however long the run takes;
* ``socketio`` (informative): python-socketio's AsyncServer, ASGI on uvicorn (default
  WebSocket implementation). The clients speak engine.io 4 / socket.io 5 directly over
  WebSocket (``/socket.io/?EIO=4&transport=websocket``: the ``open`` packet, then a
  connect to the default namespace, ``40``); a connection counts once the server's
  ``connect`` handler ran. The clients answer engine.io pings (``2`` with ``3``);
* ``raw-websockets-trio`` (informative): a ``websockets.trio`` server whose handler
  waits for a message, with its default keepalive (the clients answer its pings).

Goals, printed next to the figures: an idle live statesession WebSocket session costs at
most 30 KiB of server memory, and at most 0.7 times what python-socketio costs per
connection (measured in the same run, or 43 KiB when ``socketio`` is not selected).

``--trace K`` adds one traced run of ``--trace-server`` (statesession by default), with
``--trace-sessions`` connections (2000; tracing slows the server down about tenfold): the
server traces allocations (tracemalloc, ``--trace-frames`` deep) from the end of the
warm-up and, once the clients are idle, prints the K sites holding the most memory --
grouped by traceback, then by allocating line and by package -- in bytes per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import linecache
import os
import queue
import resource
import socket
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
import tracemalloc
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit

import _common
import psutil  # type: ignore[import-untyped]
import trio
from _common import ONE_PEER_FOR_ALL, BenchError, describe, idle_app
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    connect_websocket,
    serve_websocket,
)

HOST = "127.0.0.1"
#: Goals for statesession's figure: KiB per idle live session, and a ratio to socketio.
GOAL_KIB = 30.0
GOAL_SOCKETIO_RATIO = 0.7
#: python-socketio's KiB per connection when it is not measured in the same run.
SOCKETIO_REFERENCE_KIB = 43.0
#: Handshakes a load process runs at once (well under the servers' listen backlogs).
CONNECTING_AT_ONCE = 64
#: Seconds one client may take to connect and handshake, once it is its turn.
CONNECT_TIMEOUT = 60
#: File descriptors a process needs besides one per connection.
SPARE_FDS = 128


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft limit on open files to the hard limit; fail clearly if
    even that is below ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(
            f"{needed} file descriptors needed, the hard limit is {hard}: raise it "
            "(ulimit -Hn), use fewer --sessions or more --load-processes"
        )
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def control_stream() -> IO[str]:
    """The stream this process reports on (its original stdout). Standard output itself
    is pointed at stderr, so that nothing a library prints can garble the reports."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return out


# == servers: each runs in its own process, on 127.0.0.1, port chosen by the system =========

#: ``(live, held)``: connections live and idle (handshaken; a session active), and
#: everything the server still holds (connections, sessions in any state). Thread-safe.
Probe = Callable[[], tuple[int, int]]


class Control:
    """A server process's control channel: commands on stdin, one answer line each on
    stdout. ``stat`` collects garbage and answers ``stat LIVE HELD RSS``;
    ``trace-begin FRAMES`` starts tracemalloc; ``trace-report N TOP`` prints the top
    sites, then ``trace-end``. End of input ends the process."""

    def __init__(self, capacity: int) -> None:
        #: Most connections the server must accept (the warm-up's and the measured ones).
        self.capacity = capacity
        self._out = control_stream()
        self._traced: tracemalloc.Snapshot | None = None

    def say(self, line: str) -> None:
        self._out.write(line + "\n")

    def ready(self, port: int, probe: Probe) -> None:
        """Report the port and start answering commands (in a thread of their own)."""
        self.say(f"ready {port}")
        threading.Thread(target=self._serve, args=(probe,), daemon=True).start()

    def _serve(self, probe: Probe) -> None:
        for line in sys.stdin:
            command, *words = line.split() or [""]
            if command == "stat":
                gc.collect()
                live, held = probe()
                rss = psutil.Process().memory_info().rss
                self.say(f"stat {live} {held} {rss}")
            elif command == "trace-begin":
                tracemalloc.start(int(words[0]))
                gc.collect()
                self._traced = tracemalloc.take_snapshot()
                self.say("trace-begun")
            elif command == "trace-report":
                gc.collect()
                if self._traced is not None:
                    for text in trace_report(self._traced, int(words[0]), int(words[1])):
                        self.say(f"trace {text}")
                self.say("trace-end")
        os._exit(0)  # the orchestrator is done (or gone): no graceful shutdown to wait for


def trio_probe(count: Callable[[], tuple[int, int]]) -> Probe:
    """A probe that counts in the trio thread, where the counted objects live."""
    token = trio.lowlevel.current_trio_token()
    return lambda: trio.from_thread.run_sync(count, trio_token=token)


async def serve_raw_trio_websocket(control: Control) -> None:
    live = 0

    async def handler(request: WebSocketRequest) -> None:
        nonlocal live
        connection = await request.accept()
        live += 1
        try:
            await connection.get_message()
        except ConnectionClosed:
            pass
        finally:
            live -= 1

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, HOST, 0, None))
        control.ready(server.port, trio_probe(lambda: (live, live)))


async def serve_statesession(control: Control, transport: str = "websocket") -> None:
    import statesession

    config = statesession.SessionConfig(max_sessions=control.capacity, **ONE_PEER_FOR_ALL)
    async with (
        statesession.open_manager(idle_app, config=config) as manager,
        trio.open_nursery() as nursery,
    ):
        url = await nursery.start(
            partial(statesession.serve, manager, f"ws://{HOST}:0/", transport=transport)
        )

        def count() -> tuple[int, int]:
            live = 0
            for session in manager.sessions.values():
                figures = session.statistics()
                live += figures.state == "active" and figures.connections > 0
            return live, len(manager) + manager.statistics().handshakes

        port = urlsplit(url).port
        assert port is not None
        control.ready(port, trio_probe(count))


async def serve_websockets_trio(control: Control) -> None:
    from websockets.exceptions import ConnectionClosed as Closed
    from websockets.trio.server import ServerConnection, serve

    live = 0

    async def handler(connection: ServerConnection) -> None:
        nonlocal live
        live += 1
        try:
            await connection.recv()
        except Closed:
            pass
        finally:
            live -= 1

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve, handler, 0, host=HOST))
        port = server.listeners[0].socket.getsockname()[1]
        control.ready(port, trio_probe(lambda: (live, len(server.all_connections))))


def serve_socketio(control: Control) -> None:
    import socketio  # type: ignore[import-untyped]
    import uvicorn

    sio = socketio.AsyncServer(async_mode="asgi")
    live = 0

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        nonlocal live
        live += 1

    async def disconnect(sid: str, *reason: Any) -> None:
        nonlocal live
        live -= 1

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    listener = socket.create_server((HOST, 0), backlog=4096)
    config = uvicorn.Config(
        socketio.ASGIApp(sio), log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        # Already listening: connections wait in the backlog until uvicorn accepts them.
        # Its counters are plain ints and its socket table a dict: safe to read from a thread.
        control.ready(listener.getsockname()[1], lambda: (live, len(sio.eio.sockets)))
        await serving

    asyncio.run(main())


@dataclass(frozen=True)
class Server:
    """One row of the table: how to start the server, and how its clients talk."""

    name: str
    #: Runs in the server process: serve on HOST, call ``control.ready``, run until killed.
    run: Callable[[Control], None]
    #: Key into DIALECTS: what a load client says to this server.
    dialect: str
    label: str


SERVERS: dict[str, Server] = {
    server.name: server
    for server in (
        Server(
            "raw-trio-websocket",
            lambda control: trio.run(serve_raw_trio_websocket, control),
            "raw",
            "raw-trio-websocket (baseline)",
        ),
        Server(
            "statesession",
            lambda control: trio.run(serve_statesession, control),
            "statesession",
            "statesession session (websocket)",
        ),
        Server(
            "statesession-websockets",
            lambda control: trio.run(partial(serve_statesession, transport="websockets"), control),
            "statesession",
            "statesession session (websockets)",
        ),
        Server("socketio", serve_socketio, "socketio", "socketio (informative)"),
        Server(
            "raw-websockets-trio",
            lambda control: trio.run(serve_websockets_trio, control),
            "raw",
            "raw-websockets-trio (informative)",
        ),
    )
}
BASELINE = "raw-trio-websocket"


# == tracing (in the server process) =========================================================


_STDLIB = sysconfig.get_paths()["stdlib"] + os.sep
_PURELIB = sysconfig.get_paths()["purelib"]
#: Where source files live, longest first: a traceback names files relative to these.
SOURCE_ROOTS = sorted(
    {
        str(Path(__file__).resolve().parent.parent) + os.sep,
        sysconfig.get_paths()["purelib"] + os.sep,
        sysconfig.get_paths()["stdlib"] + os.sep,
    },
    key=len,
    reverse=True,
)
#: Packages that allocate on behalf of their callers (tasks, scopes, containers).
RUNTIME = frozenset({"trio", "stdlib", "attr", "attrs"})


def short(filename: str) -> str:
    for root in SOURCE_ROOTS:
        if filename.startswith(root):
            return filename.removeprefix(root)
    return filename


def package(filename: str) -> str:
    """The top-level package a source file belongs to (``stdlib`` for the standard library)."""
    if filename.startswith("<attrs generated methods "):
        return filename.removeprefix("<attrs generated methods ").split(".", 1)[0]
    if filename.startswith(_STDLIB) and not filename.startswith(_PURELIB):
        return "stdlib"
    if filename in (__file__, _common.__file__):
        return "this script (the app; below it, trio's scheduler)"
    parts = short(filename).split("/")
    if parts[0] == "transports" and len(parts) > 1:
        return parts[1]
    return parts[0].removesuffix(".py")


def asker(frames: Sequence[tracemalloc.Frame]) -> tracemalloc.Frame | None:
    """The frame that asked for an allocation: the innermost one outside the runtime."""
    for frame in frames:
        if package(frame.filename) not in RUNTIME:
            return frame
    return None


def trace_report(before: tracemalloc.Snapshot, count: int, top: int) -> list[str]:
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        tracemalloc.Filter(False, linecache.__file__),
    ]
    after = tracemalloc.take_snapshot().filter_traces(ignore)
    diffs = after.compare_to(before.filter_traces(ignore), "traceback")
    total = sum(diff.size_diff for diff in diffs)
    blocks = sum(diff.count_diff for diff in diffs)
    lines = [
        f"traced: {total / count:,.0f} bytes and {blocks / count:.1f} blocks per connection "
        f"({total / 1024 / 1024:,.1f} MiB in all)",
        f"{'B/conn':>8} {'blocks':>6}  allocated at (most recent call first)",
    ]
    by_line: Counter[tuple[str, int]] = Counter()
    by_package: Counter[str] = Counter()
    by_owner: Counter[str] = Counter()
    by_asker: Counter[tuple[str, int]] = Counter()
    for diff in diffs:
        frames = list(diff.traceback)[::-1]
        if frames:
            by_line[frames[0].filename, frames[0].lineno] += diff.size_diff
            by_package[package(frames[0].filename)] += diff.size_diff
            frame = asker(frames)
            where = ("trio (no other caller within the traced frames)", 0)
            if frame is not None:
                where = (frame.filename, frame.lineno)
                by_owner[package(frame.filename)] += diff.size_diff
            else:
                by_owner[where[0]] += diff.size_diff
            by_asker[where] += diff.size_diff
    for diff in diffs[:top]:
        frames = list(diff.traceback)[::-1]
        site = frames[0]
        source = linecache.getline(site.filename, site.lineno).strip()
        lines.append(
            f"{diff.size_diff / count:>8,.0f} {diff.count_diff / count:>6.1f}  "
            f"{short(site.filename)}:{site.lineno}  {source}"
        )
        callers = " < ".join(f"{short(f.filename)}:{f.lineno}" for f in frames[1:5])
        if callers:
            lines.append(f"{'':>17}< {callers}")
    lines.append("by allocating line, all callers together:")
    for (filename, lineno), size in by_line.most_common(top):
        source = linecache.getline(filename, lineno).strip()
        lines.append(f"{size / count:>8,.0f}  {short(filename)}:{lineno}  {source}")
    lines.append("by the line that asked (innermost frame outside trio, attrs, the stdlib):")
    for (filename, lineno), size in by_asker.most_common(top):
        source = linecache.getline(filename, lineno).strip()
        place = f"{short(filename)}:{lineno}" if lineno else filename
        lines.append(f"{size / count:>8,.0f}  {place}  {source}")
    lines.append("by package of the allocating line:")
    for name, size in by_package.most_common(10):
        if size >= count:
            lines.append(f"{size / count:>8,.0f}  {name}")
    lines.append("by package that asked:")
    for name, size in by_owner.most_common(10):
        if size >= count:
            lines.append(f"{size / count:>8,.0f}  {name}")
    return lines


# == load: the clients, in a process of their own ============================================


@dataclass(frozen=True)
class Dialect:
    """What a load client says to one kind of server."""

    path: str
    #: Run right after the WebSocket opens; raises when the server's answer is wrong.
    handshake: Callable[[WebSocketConnection], Awaitable[None]]
    #: The reply to a message received while idle (a keepalive), if any.
    answer: Callable[[str | bytes], str | None]
    #: What a warm-up client sends before it closes, if anything; it then reads until the
    #: server closes.
    farewell: Callable[[], str] | None = None


async def no_handshake(connection: WebSocketConnection) -> None:
    await trio.lowlevel.checkpoint()


def no_answer(message: str | bytes) -> None:
    return None


# statesession is imported by the statesession dialect's functions only, as by its server:
# the other servers' processes never load it.


async def statesession_handshake(connection: WebSocketConnection) -> None:
    from statesession.protocol import HelloFrame, encode_frame

    await connection.send_message(encode_frame(HelloFrame()))
    welcome = json.loads(await connection.get_message())
    if welcome.get("type") != "welcome" or welcome.get("state") != "active":
        raise BenchError(f"expected an active welcome, got {str(welcome)[:200]}")


def statesession_answer(message: str | bytes) -> str | None:
    from statesession._core.codec import PONG_TEXT

    return PONG_TEXT if json.loads(message).get("type") == "ping" else None


def statesession_farewell() -> str:
    from statesession.protocol import ByeFrame, encode_frame

    return encode_frame(ByeFrame())


async def socketio_handshake(connection: WebSocketConnection) -> None:
    opened = await connection.get_message()
    if not isinstance(opened, str) or not opened.startswith("0{"):
        raise BenchError(f"expected an engine.io open packet, got {opened!r:.200}")
    await connection.send_message("40")
    while True:
        reply = await connection.get_message()
        if reply == "2":
            await connection.send_message("3")
            continue
        if not isinstance(reply, str) or not reply.startswith("40"):
            raise BenchError(f"expected a socket.io connect packet, got {reply!r:.200}")
        return


def socketio_answer(message: str | bytes) -> str | None:
    return "3" if message == "2" else None


DIALECTS: dict[str, Dialect] = {
    "raw": Dialect("/", no_handshake, no_answer),
    "statesession": Dialect(
        "/", statesession_handshake, statesession_answer, farewell=statesession_farewell
    ),
    "socketio": Dialect(
        "/socket.io/?EIO=4&transport=websocket", socketio_handshake, socketio_answer
    ),
}


async def load(port: int, dialect: Dialect, count: int, warmup: bool, out: IO[str]) -> None:
    """Connect ``count`` clients and report ``connected``; then hold them idle, answering
    keepalives, until stdin closes -- or, for a warm-up, close them and report ``closed``."""
    limiter = trio.CapacityLimiter(CONNECTING_AT_ONCE)
    ready = 0
    all_ready = trio.Event()
    leave = trio.Event()

    async def hold() -> None:
        nonlocal ready
        async with trio.open_nursery() as nursery:
            async with limiter:
                with trio.move_on_after(CONNECT_TIMEOUT) as waited:
                    connection = await connect_websocket(
                        nursery, HOST, port, dialect.path, use_ssl=False
                    )
                    await dialect.handshake(connection)
                if waited.cancelled_caught:
                    raise BenchError(
                        f"a client was not connected and handshaken in {CONNECT_TIMEOUT} s"
                    )
            ready += 1
            if ready == count:
                all_ready.set()
            if warmup:
                await leave.wait()
                with trio.move_on_after(10):
                    if dialect.farewell is not None:
                        try:
                            await connection.send_message(dialect.farewell())
                            while True:  # until the server closes
                                await connection.get_message()
                        except ConnectionClosed:
                            pass
                    await connection.aclose()
                return
            try:
                while True:
                    reply = dialect.answer(await connection.get_message())
                    if reply is not None:
                        await connection.send_message(reply)
            except ConnectionClosed as exc:
                out.write(f"lost {describe(exc)}\n")

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(hold)
        await all_ready.wait()
        out.write(f"connected {count}\n")
        if warmup:
            leave.set()
        else:
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            os._exit(0)  # end of input: the orchestrator is done (or gone)
    out.write(f"closed {count}\n")


def run_load(args: argparse.Namespace) -> NoReturn:
    out = control_stream()
    try:
        raise_fd_limit(args.sessions + SPARE_FDS)
        warmup = args.role == "warmup"
        trio.run(load, args.port, DIALECTS[args.dialect], args.sessions, warmup, out)
    except BaseException as exc:
        out.write(f"failed {describe(exc)}\n")
        sys.exit(1)
    sys.exit(0)


def run_server(args: argparse.Namespace) -> NoReturn:
    control = Control(capacity=args.sessions)
    try:
        raise_fd_limit(args.sessions + SPARE_FDS)
        SERVERS[args.server].run(control)
    except BaseException as exc:
        control.say(f"failed {describe(exc)}")
        sys.exit(1)
    sys.exit(0)


# == orchestration ============================================================================


class Child:
    """A process of this script (a server or a load), read line by line."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        #: The last lines the process wrote on stderr, for error messages.
        self._errors: deque[str] = deque(maxlen=30)
        self.process = subprocess.Popen(
            [sys.executable, __file__, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        #: ``lost`` lines: clients whose server closed their connection while idle.
        self.lost: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_errors, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("lost "):
                self.lost.append(line.strip())
            else:
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_errors(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._errors.append(line.rstrip("\n"))

    def _gone(self, waiting: str) -> BenchError:
        try:
            status = self.process.wait(5)
        except subprocess.TimeoutExpired:
            status = None
        time.sleep(0.1)  # the last lines of stderr
        tail = "\n".join(self._errors).strip()
        return BenchError(
            f"{self.name} ended (status {status}) while {waiting}"
            + (f"; its stderr ends with:\n{tail}" if tail else "")
        )

    def _next(self, deadline: float, timeout: float, waiting: str) -> tuple[str, str]:
        """The next line, as its first word and the rest."""
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise BenchError(
                f"{self.name}: no answer after {timeout:.0f} s while {waiting}"
            ) from None
        if line is None:
            raise self._gone(waiting)
        first, _, rest = line.partition(" ")
        if first == "failed":
            raise BenchError(f"{self.name} failed while {waiting}: {rest}")
        return first, rest

    def expect(self, word: str, timeout: float, waiting: str) -> list[str]:
        """The words after the next line that starts with ``word``."""
        deadline = time.monotonic() + timeout
        while True:
            first, rest = self._next(deadline, timeout, waiting)
            if first == word:
                return rest.split()

    def send(self, command: str, waiting: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self._gone(waiting) from None

    def ask(self, command: str, word: str, timeout: float, waiting: str) -> list[str]:
        self.send(command, waiting)
        return self.expect(word, timeout, waiting)

    def collect(self, command: str, word: str, end: str, timeout: float) -> list[str]:
        """Send ``command``; the text of each ``word`` line answering it, up to ``end``."""
        waiting = f"answering {command!r}"
        self.send(command, waiting)
        deadline = time.monotonic() + timeout
        texts: list[str] = []
        while True:
            first, rest = self._next(deadline, timeout, waiting)
            if first == end:
                return texts
            if first == word:
                texts.append(rest)

    def wait(self, timeout: float, waiting: str) -> None:
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"{self.name} still running after {timeout:.0f} s {waiting}"
            ) from None
        if status:
            raise self._gone(waiting)

    def stop(self) -> None:
        """End the process: end of input first, then SIGKILL."""
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@dataclass(frozen=True)
class Reading:
    before: int  # server RSS, bytes, after warm-up with no connection
    after: int  # with N idle live connections

    def per_connection(self, count: int) -> float:
        return (self.after - self.before) / count


def stat(server: Child, waiting: str) -> tuple[int, int, int]:
    live, held, rss = server.ask("stat", "stat", 60, waiting)
    return int(live), int(held), int(rss)


def wait_for(
    server: Child, done: Callable[[int, int], bool], timeout: float, waiting: str
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        live, held, _ = stat(server, waiting)
        if done(live, held):
            return
        if time.monotonic() > deadline:
            raise BenchError(
                f"{server.name}: {live} live connections, {held} held, after {timeout:.0f} s "
                f"{waiting}"
            )
        time.sleep(0.2)


def measure(spec: Server, args: argparse.Namespace, count: int, trace: int = 0) -> Reading:
    """One server process, its warm-up and ``count`` clients; RSS before and after."""
    loads = args.load_processes
    children: list[Child] = []

    def start(name: str, argv: Sequence[str]) -> Child:
        child = Child(name, argv)
        children.append(child)
        return child

    try:
        capacity = count + args.warmup + 16
        server = start(
            f"{spec.name} server",
            ["--role", "server", "--server", spec.name, "--sessions", str(capacity)],
        )
        port = server.expect("ready", 60, "starting")[0]
        load_argv = ["--dialect", spec.dialect, "--port", port]
        if args.warmup:
            warm = start(
                f"{spec.name} warm-up",
                [*load_argv, "--role", "warmup", "--sessions", str(args.warmup)],
            )
            warm.expect("closed", 60 + args.warmup / 10, "warming up")
            warm.wait(30, "after warming up")
        wait_for(
            server, lambda live, held: held == 0, 60, "waiting for warm-up connections to end"
        )
        time.sleep(0.2)
        _, _, before = stat(server, "measuring before")
        if trace:
            server.ask(f"trace-begin {args.trace_frames}", "trace-begun", 60, "starting trace")
        shares = [count // loads + (i < count % loads) for i in range(loads)]
        clients = [
            start(
                f"{spec.name} load {i + 1}",
                [*load_argv, "--role", "load", "--sessions", str(share)],
            )
            for i, share in enumerate(shares)
            if share
        ]
        for client in clients:
            client.expect("connected", 120 + count / 20, f"connecting {count} clients")
        wait_for(
            server,
            lambda live, held: live >= count,
            60,
            f"waiting for {count} live connections",
        )
        time.sleep(args.settle)
        live, _, after = stat(server, "measuring after")
        lost = [line for client in clients for line in client.lost]
        if live != count or lost:
            raise BenchError(
                f"{spec.name}: {live} live connections of {count} after settling"
                + (f"; clients report {len(lost)} lost, first: {lost[0]}" if lost else "")
            )
        if trace:
            print(f"\n{spec.name}: allocations held by {count} idle live connections")
            for text in server.collect(f"trace-report {count} {trace}", "trace", "trace-end", 900):
                print(text)
        return Reading(before, after)
    finally:
        for child in reversed(children):
            child.stop()


def orchestrate(args: argparse.Namespace) -> None:
    names = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = [name for name in names if name not in SERVERS]
    if unknown or not names:
        raise BenchError(f"unknown servers {unknown}; known: {', '.join(SERVERS)}")
    raise_fd_limit(SPARE_FDS)
    readings: dict[str, list[Reading]] = {name: [] for name in names}
    for run in range(args.runs):
        for name in names:
            reading = measure(SERVERS[name], args, args.sessions)
            readings[name].append(reading)
            print(
                f"run {run + 1}/{args.runs} {name}: "
                f"{reading.per_connection(args.sessions) / 1024:.2f} KiB/connection",
                file=sys.stderr,
            )
    report(names, readings, args)
    if args.trace:
        count = min(args.sessions, args.trace_sessions)
        measure(SERVERS[args.trace_server], args, count, trace=args.trace)


def report(
    names: Sequence[str], readings: dict[str, list[Reading]], args: argparse.Namespace
) -> None:
    count = args.sessions

    def median(name: str, figure: Callable[[Reading], float]) -> float:
        return statistics.median(figure(reading) for reading in readings[name])

    kib = {name: median(name, lambda r: r.per_connection(count)) / 1024 for name in names}
    base = kib.get(BASELINE)
    print(
        f"{count} idle live WebSocket connections per server; server RSS (psutil), "
        f"median of {args.runs} run{'s' * (args.runs > 1)}"
    )
    print(
        f"{'server':<36}{'KiB/connection':>15}{'ratio':>7}{'MiB before':>12}{'MiB after':>11}"
        "  each run (KiB/connection)"
    )
    for name in names:
        ratio = f"{kib[name] / base:>7.2f}" if base else f"{'-':>7}"
        before = median(name, lambda r: r.before) / 2**20
        after = median(name, lambda r: r.after) / 2**20
        runs = " ".join(f"{r.per_connection(count) / 1024:.1f}" for r in readings[name])
        label = SERVERS[name].label
        print(f"{label:<36}{kib[name]:>15.2f}{ratio}{before:>12.1f}{after:>11.1f}  {runs}")
    socketio = kib.get("socketio")
    source = "measured in this run"
    if socketio is None:
        socketio, source = SOCKETIO_REFERENCE_KIB, "reference figure, not measured in this run"
    for name in ("statesession", "statesession-websockets"):
        mine = kib.get(name)
        if mine is None:
            continue
        if base:
            print(f"{name + ' share (difference)':<36}{mine - base:>15.2f}")
        verdict = "met" if mine <= GOAL_KIB else "not met"
        print(f"goal: {name} <= {GOAL_KIB:g} KiB per idle live session: {mine:.1f} KiB, {verdict}")
        times = mine / socketio
        verdict = "met" if times <= GOAL_SOCKETIO_RATIO else "not met"
        print(
            f"goal: {name} <= {GOAL_SOCKETIO_RATIO:g} x socketio per connection "
            f"(socketio {socketio:.1f} KiB, {source}; "
            f"goal {GOAL_SOCKETIO_RATIO * socketio:.1f} KiB): {times:.2f} x, {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000, help="idle connections per server")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated, from: {', '.join(SERVERS)} (default: all)",
    )
    parser.add_argument(
        "--warmup", type=int, default=50, help="connections opened and closed before measuring"
    )
    parser.add_argument(
        "--settle",
        type=float,
        help="seconds to wait once all are live, before measuring (default 0.5 + N/10000)",
    )
    parser.add_argument("--load-processes", type=int, default=1, help="client processes")
    parser.add_argument(
        "--trace", type=int, default=0, metavar="K", help="one more run, traced: top K sites"
    )
    parser.add_argument("--trace-server", default="statesession", choices=SERVERS)
    parser.add_argument(
        "--trace-sessions", type=int, default=2000, help="connections in the traced run"
    )
    parser.add_argument("--trace-frames", type=int, default=8, help="frames per traceback")
    # Internal: this script also runs as a server process and as a load process.
    internal = argparse.SUPPRESS
    parser.add_argument(
        "--role", choices=["bench", "server", "load", "warmup"], default="bench", help=internal
    )
    parser.add_argument("--server", choices=SERVERS, help=internal)
    parser.add_argument("--dialect", choices=DIALECTS, help=internal)
    parser.add_argument("--port", type=int, help=internal)
    args = parser.parse_args()
    if args.role == "server":
        run_server(args)
    if args.role in ("load", "warmup"):
        run_load(args)
    if args.settle is None:
        args.settle = 0.5 + args.sessions / 10_000
    if args.sessions < 1 or args.runs < 1 or args.load_processes < 1:
        parser.error("--sessions, --runs and --load-processes must be at least 1")
    try:
        orchestrate(args)
    except BenchError as exc:
        sys.exit(f"ws_memory: {exc}")


if __name__ == "__main__":
    main()
