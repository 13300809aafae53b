"""Server CPU per echoed message, against a plain trio-websocket echo server in the same run.

    python bench/message_path.py [--clients 1,100] [--duration 3] [--runs 3] [--servers ...]
    python bench/message_path.py --runs 1 --messages 20 --clients 1,2   # smoke: no figures

Measured: the CPU time (user + system, from psutil) that the *server process* spends per
echoed message, and the messages echoed per second, for each server below. Every server
runs in a process of its own, and its load -- N concurrent clients -- in another. Each
client is closed-loop: it sends a 100-character text message, waits for its echo, and
repeats. The clients connect and warm up first (``--warmup`` round trips each), then wait
at a barrier; the server's CPU counter is read, the clients are released, and it is read
again when the last client has finished (after ``--duration`` seconds, or ``--messages``
round trips each). Connecting, handshakes, warm-up and closing are outside the window.

Servers (``--servers`` picks them; ``SERVERS`` is the registry):

* ``raw-trio-websocket`` -- the baseline: a trio-websocket echo server, one task per
  connection (``get_message`` then ``send_message``). Driven by trio-websocket clients.
* ``statesession`` -- a manager with default ``SessionConfig`` and no store, whose app is
  ``async for message in session: await session.send(message.data)``, served over
  statesession's WebSocket transport (``ws://``). Each client is its own session, so a
  round trip is the full wire protocol v1: ``msg`` in, ``msg`` out, and both sides'
  cumulative ``ack`` (one per 32 messages each way, the defaults of ``ack_every`` on both
  sides; ``ack_delay`` never expires in a closed loop this fast). Driven by a lean v1
  client on trio-websocket: ``hello`` and ``welcome``, then ``msg`` frames numbered from
  1, each echo checked, acknowledged as statesession's own client does (every 32nd, and
  the last before ``bye``). Not ``open_client``: per message, that client spends about as much CPU
  as the server it drives (a reader and a writer task per connection and a supervisor
  per client, parking lots, full frame validation), so the load process, not the server,
  would set the pace; the lean client spends about a quarter less. ``statesession+client``
  (not in the default set) drives the same server with ``open_client``, to check.
* ``socketio`` -- python-socketio's ``AsyncServer`` (ASGI mode, its defaults) on uvicorn
  with its defaults for one worker (log level ``warning``): an ``echo`` event is emitted
  back to its sender. Driven by python-socketio's ``AsyncClient`` over the WebSocket
  transport only.
* ``raw-websockets-trio`` -- another floor: a ``websockets.trio`` echo server
  (``async for message in ws: await ws.send(message)``). Driven by trio-websocket clients.

No client offers permessage-deflate, so no connection is compressed.

The table gives, per client count and server, the median over ``--runs`` runs of: the
server's µs of CPU per message; messages per second; how busy the server was (CPU
seconds per second: 100% is one core); the load process's µs of CPU per message (where
it exceeds the server's, the load generator set the pace, and msgs/s says little about
the server); and the ratio: the server's CPU per message divided by the baseline's at
the same client count in the same run. In each run the servers take turns, in an order
that rotates from run to run. CPU per message is the figure to compare: on a busy machine
msgs/s moves with whatever else runs, CPU time much less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import queue
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

import attrs
import psutil
import trio
from _common import ONE_PEER_FOR_ALL, BenchError, describe, idle_app
from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

import statesession
from statesession._core.codec import PONG_TEXT, ack_text, encode_data, msg_text
from statesession.protocol import ByeFrame, HelloFrame, encode_frame

HOST = "127.0.0.1"
#: The application payload of every message: 100 ASCII characters.
PAYLOAD = ((string.ascii_letters + string.digits) * 2)[:100]
BASELINE = "raw-trio-websocket"

#: Seconds a server has to start listening.
START_TIMEOUT = 30.0
#: Seconds without a reply (an echo, a welcome, a close) before a client is declared stuck.
STALL_TIMEOUT = 10.0
#: The lean v1 client acknowledges like open_client's defaults: every 32nd message.
ACK_EVERY = 32
#: Seconds a process has to exit once told to stop, before it is killed.
EXIT_TIMEOUT = 15.0


# -- the line protocol between the orchestrator and its child processes --------------------
#
# A child announces on its standard output: a server ``READY <port>`` once it accepts
# connections; a load ``READY`` once every client is connected and warmed up, then
# ``DONE <round trips>`` once every client has finished. The orchestrator writes ``GO``
# (release the clients) and ``STOP`` (close them and exit) to a load's standard input.
# Either child exits when its standard input reaches EOF, so none outlives the orchestrator.


def announce(*words: object) -> None:
    print(*words, flush=True)


class TrioLines:
    """Lines of this process's standard input, read without blocking trio."""

    def __init__(self) -> None:
        self._stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        self._buffer = b""

    async def readline(self) -> str:
        """The next line, stripped; ``""`` at EOF."""
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                line, self._buffer = self._buffer, b""
                return line.decode().strip()
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode().strip() or "?"


async def asyncio_lines() -> asyncio.StreamReader:
    """This process's standard input as an asyncio stream."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def asyncio_readline(reader: asyncio.StreamReader) -> str:
    line = await reader.readline()
    return line.decode().strip() or ("?" if line else "")


# -- servers ----------------------------------------------------------------------------

TrioServer = Callable[..., Awaitable[None]]  # (host, port, *, task_status=) -> None


async def serve_raw_trio_websocket(
    host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send_message(await ws.get_message())

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo, host, port, None)
        task_status.started(server.port)


async def serve_statesession(
    host: str,
    port: int,
    *,
    transport: str = "websocket",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    config = statesession.SessionConfig(**ONE_PEER_FOR_ALL)
    async with (
        statesession.open_manager(idle_app, config=config) as manager,
        trio.open_nursery() as nursery,
    ):
        url = await nursery.start(
            functools.partial(
                statesession.serve, manager, f"ws://{host}:{port}/", transport=transport
            )
        )
        task_status.started(urlsplit(url).port)


async def serve_websockets_trio(
    host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    from websockets.trio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve, echo, port, host=host))
        task_status.started(server.listeners[0].socket.getsockname()[1])


def run_trio_server(serve: TrioServer, port: int) -> None:
    async def main() -> None:
        stdin = TrioLines()
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(serve, HOST, port)
            announce("READY", bound)
            while await stdin.readline():
                pass
            nursery.cancel_scope.cancel()

    trio.run(main)


def run_socketio_server(port: int) -> None:
    import socketio
    import uvicorn

    sio = socketio.AsyncServer(async_mode="asgi")

    async def echo(sid: str, data: Any) -> None:
        await sio.emit("echo", data, to=sid)

    sio.on("echo", echo)

    config = uvicorn.Config(socketio.ASGIApp(sio), host=HOST, port=port, log_level="warning")
    server = uvicorn.Server(config)

    async def main() -> None:
        serving = asyncio.create_task(server.serve())
        started = time.monotonic()
        while not server.started:
            if serving.done():
                serving.result()
                raise BenchError("uvicorn stopped before it started serving")
            if time.monotonic() - started > START_TIMEOUT:
                raise BenchError(f"uvicorn did not start within {START_TIMEOUT:g} s")
            await asyncio.sleep(0.01)
        announce("READY", server.servers[0].sockets[0].getsockname()[1])
        stdin = await asyncio_lines()
        while await asyncio_readline(stdin):
            pass
        server.should_exit = True
        await asyncio.wait_for(serving, EXIT_TIMEOUT)

    # uvicorn's own choice of event loop (asyncio unless uvloop is installed).
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main())


# -- load generators --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Plan:
    """What one load process does."""

    port: int
    clients: int
    warmup: int  # round trips per client before the barrier
    messages: int | None  # measured round trips per client (None: for duration)
    duration: float  # seconds of measured round trips


class Event(Protocol):
    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self) -> Awaitable[object]: ...


class Load:
    """The clients' shared state: the barrier, the count, and a watchdog against stalls.

    Event-loop neutral: each loop passes its own event type and clock.
    """

    def __init__(
        self, plan: Plan, new_event: Callable[[], Event], clock: Callable[[], float]
    ) -> None:
        self.plan = plan
        self.clock = clock
        self.go = new_event()
        self.stop = new_event()
        self.done = new_event()
        #: When each client last made progress; None while it waits on purpose.
        self.stamps: list[float | None] = [clock()] * plan.clients
        self.phase = "connecting and warming up"
        self.warm = 0
        self.finished = 0
        self.closed = 0
        self.count = 0
        self.deadline = 0.0

    async def client(self, index: int, round_trip: Callable[[], Awaitable[None]]) -> None:
        """Warm up, wait at the barrier, run the measured round trips, wait for STOP."""
        plan, clock, stamps = self.plan, self.clock, self.stamps
        stamps[index] = clock()
        for _ in range(plan.warmup):
            await round_trip()
            stamps[index] = clock()
        stamps[index] = None
        self.warm += 1
        if self.warm == plan.clients:
            self.phase = "waiting for GO"
            announce("READY")
        await self.go.wait()
        stamps[index] = clock()
        count = 0
        if plan.messages is not None:
            for _ in range(plan.messages):
                await round_trip()
                stamps[index] = clock()
            count = plan.messages
        else:
            deadline = self.deadline
            now = clock()
            while now < deadline:
                await round_trip()
                now = stamps[index] = clock()
                count += 1
        stamps[index] = None
        self.count += count
        self.finished += 1
        if self.finished == plan.clients:
            self.phase = "waiting for STOP"
            announce("DONE", self.count)
        await self.stop.wait()
        stamps[index] = clock()

    async def run_client(
        self, index: int, connect: Callable[[Load, int], Awaitable[None]]
    ) -> None:
        """Run one client; any failure becomes a BenchError naming the client."""
        try:
            await connect(self, index)
        except BenchError:
            raise
        except Exception as exc:
            raise BenchError(f"client {index} failed ({self.phase}): {describe(exc)}") from exc

    def closed_one(self, index: int) -> None:
        self.stamps[index] = None
        self.closed += 1
        if self.closed == self.plan.clients:
            self.done.set()

    def release(self) -> None:
        self.phase = "measuring"
        self.deadline = self.clock() + self.plan.duration
        self.go.set()

    def check(self) -> None:
        """Raise if a client has been waiting on the server for too long."""
        now = self.clock()
        for index, stamp in enumerate(self.stamps):
            if stamp is not None and now - stamp > STALL_TIMEOUT:
                raise BenchError(
                    f"client {index}: no reply from the server for {STALL_TIMEOUT:g} s "
                    f"({self.phase}; {self.warm} clients warmed up, {self.finished} finished)"
                )

    def command(self, line: str, expected: str) -> None:
        if line == "":
            raise BenchError(f"load: standard input closed while {self.phase}")
        if line != expected:
            raise BenchError(f"load: expected {expected!r} on standard input, got {line!r}")


async def run_trio_load(plan: Plan, connect: Callable[[Load, int], Awaitable[None]]) -> None:
    """Run ``connect(load, index)`` for every client, with the control protocol."""
    load = Load(plan, trio.Event, trio.current_time)
    stdin = TrioLines()

    async def watchdog() -> None:
        while not load.done.is_set():
            load.check()
            await trio.sleep(0.5)

    async def control() -> None:
        load.command(await stdin.readline(), "GO")
        load.release()
        load.command(await stdin.readline(), "STOP")
        load.phase = "closing"
        load.stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        nursery.start_soon(control)
        async with trio.open_nursery() as clients:
            for index in range(plan.clients):
                clients.start_soon(load.run_client, index, connect)
        nursery.cancel_scope.cancel()


async def websocket_echo_client(load: Load, index: int) -> None:
    """A plain echo client: the message goes out, the same text comes back."""
    url = f"ws://{HOST}:{load.plan.port}/"
    async with open_websocket_url(url, connect_timeout=STALL_TIMEOUT) as ws:

        async def round_trip() -> None:
            await ws.send_message(PAYLOAD)
            if await ws.get_message() != PAYLOAD:
                raise BenchError("the echo is not the message sent")

        await load.client(index, round_trip)
    load.closed_one(index)


async def statesession_v1_client(load: Load, index: int) -> None:
    """A minimal, correct wire protocol v1 client over trio-websocket."""
    url = f"ws://{HOST}:{load.plan.port}/"
    body = encode_data(PAYLOAD)
    async with open_websocket_url(url, connect_timeout=STALL_TIMEOUT) as ws:
        await ws.send_message(encode_frame(HelloFrame()))
        welcome = json.loads(await ws.get_message())
        if welcome.get("type") != "welcome":
            raise BenchError(f"hello was answered with {welcome}")
        sent = 0  # seq of our last msg
        received = 0  # seq of the last server msg
        acked = 0  # seq of the last server msg we acknowledged

        async def next_frame() -> dict[str, Any]:
            while True:
                frame: dict[str, Any] = json.loads(await ws.get_message())
                kind = frame["type"]
                if kind == "ping":
                    await ws.send_message(PONG_TEXT)
                elif kind != "pong":
                    return frame

        async def round_trip() -> None:
            nonlocal sent, received, acked
            sent += 1
            await ws.send_message(msg_text(sent, body))
            while True:
                frame = await next_frame()
                if frame["type"] == "msg":
                    break
                if frame["type"] != "ack" or frame["seq"] > sent:
                    raise BenchError(f"unexpected frame from the server: {frame}")
            if frame["seq"] != received + 1 or frame["data"] != PAYLOAD:
                raise BenchError(f"expected msg {received + 1} echoing the message: {frame}")
            received = frame["seq"]
            if received - acked >= ACK_EVERY:
                await ws.send_message(ack_text(received))
                acked = received

        await load.client(index, round_trip)
        await ws.send_message(ack_text(received))
        await ws.send_message(encode_frame(ByeFrame()))
        while (await next_frame())["type"] != "closed":
            pass
    load.closed_one(index)


async def statesession_client(load: Load, index: int) -> None:
    """statesession's own client, ``open_client``."""
    url = f"ws://{HOST}:{load.plan.port}/"
    async with statesession.open_client(url, connect_timeout=STALL_TIMEOUT) as client:

        async def round_trip() -> None:
            await client.send(PAYLOAD)
            if await client.receive() != PAYLOAD:
                raise BenchError("the echo is not the message sent")

        await load.client(index, round_trip)
    load.closed_one(index)


def run_socketio_load(plan: Plan) -> None:
    import socketio

    async def main() -> None:
        loop = asyncio.get_running_loop()
        load = Load(plan, asyncio.Event, loop.time)
        stdin = await asyncio_lines()

        async def client(load: Load, index: int) -> None:
            sio = socketio.AsyncClient(reconnection=False)
            echoes: asyncio.Queue[Any] = asyncio.Queue()
            sio.on("echo", echoes.put_nowait)
            await sio.connect(
                f"http://{HOST}:{plan.port}", transports=["websocket"], wait_timeout=10
            )

            async def round_trip() -> None:
                await sio.emit("echo", PAYLOAD)
                if await echoes.get() != PAYLOAD:
                    raise BenchError("the echo is not the message sent")

            try:
                await load.client(index, round_trip)
            finally:
                await sio.disconnect()
            load.closed_one(index)

        async def watchdog() -> None:
            while not load.done.is_set():
                load.check()
                await asyncio.sleep(0.5)

        async def control() -> None:
            load.command(await asyncio_readline(stdin), "GO")
            load.release()
            load.command(await asyncio_readline(stdin), "STOP")
            load.phase = "closing"
            load.stop.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(watchdog())
            group.create_task(control())
            for index in range(plan.clients):
                group.create_task(load.run_client(index, client))

    asyncio.run(main())


@attrs.frozen(kw_only=True)
class ServerKind:
    """How to start a server (in this process) and how to load it (in another)."""

    serve: Callable[[int], None]  # (port) -> runs until standard input closes
    load: Callable[[Plan], None]


def trio_server(serve: TrioServer) -> Callable[[int], None]:
    return lambda port: run_trio_server(serve, port)


def trio_load(connect: Callable[[Load, int], Awaitable[None]]) -> Callable[[Plan], None]:
    return lambda plan: trio.run(run_trio_load, plan, connect)


#: Every server the benchmark knows, by name. Add one here to measure it.
SERVERS: dict[str, ServerKind] = {
    "raw-trio-websocket": ServerKind(
        serve=trio_server(serve_raw_trio_websocket), load=trio_load(websocket_echo_client)
    ),
    "statesession": ServerKind(
        serve=trio_server(serve_statesession), load=trio_load(statesession_v1_client)
    ),
    "socketio": ServerKind(serve=run_socketio_server, load=run_socketio_load),
    "raw-websockets-trio": ServerKind(
        serve=trio_server(serve_websockets_trio), load=trio_load(websocket_echo_client)
    ),
    "statesession-websockets": ServerKind(
        serve=trio_server(functools.partial(serve_statesession, transport="websockets")),
        load=trio_load(statesession_v1_client),
    ),
    "statesession+client": ServerKind(
        serve=trio_server(serve_statesession), load=trio_load(statesession_client)
    ),
}
DEFAULT_SERVERS = [
    "raw-trio-websocket",
    "statesession",
    "statesession-websockets",
    "socketio",
    "raw-websockets-trio",
]


# -- the orchestrator -------------------------------------------------------------------


class Child:
    """This script running in a role, in a process of its own, read line by line."""

    def __init__(self, label: str, process: subprocess.Popen[str], stderr: IO[str]) -> None:
        self.label = label
        self.process = process
        self.ps = psutil.Process(process.pid)
        self._stderr = stderr
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed under us at the end
            for line in stdout:
                self._lines.put(line.strip())
        self._lines.put(None)

    def cpu(self) -> float:
        """CPU seconds (user + system) the process has used so far."""
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def expect(self, word: str, timeout: float) -> list[str]:
        """Wait for the line announcing ``word``; return the words after it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(
                    f"{self.label}: no {word} within {timeout:g} s{self._tail()}"
                ) from None
            if line is None:
                code = self.process.wait(EXIT_TIMEOUT)
                raise BenchError(f"{self.label} exited ({code}) before {word}{self._tail()}")
            words = line.split()
            if words and words[0] == word:
                return words[1:]

    def tell(self, word: str) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(word + "\n")
            stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"{self.label} is gone{self._tail()}") from None

    def finish(self) -> None:
        """Wait for the child to exit by itself; fail if it does not, or fails."""
        try:
            code = self.process.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"{self.label} did not exit within {EXIT_TIMEOUT:g} s{self._tail()}"
            ) from None
        if code != 0:
            raise BenchError(f"{self.label} failed ({code}){self._tail()}")

    def _tail(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        lines = self._stderr.read().strip().splitlines()[-15:]
        return (":\n    " + "\n    ".join(lines)) if lines else ""


def end_process(process: subprocess.Popen[str]) -> None:
    """Close the child's standard input (it exits on EOF), then terminate, then kill it."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    for end in (None, process.terminate, process.kill):
        if end is not None:
            end()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(EXIT_TIMEOUT / 3)
            return


@contextlib.contextmanager
def child(label: str, args: list[str]) -> Iterator[Child]:
    """Run this script with ``args`` in a new process; always end it on the way out."""
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the orchestrator only; it ends us
        )
        try:
            yield Child(label, process, stderr)
        finally:
            end_process(process)
            if process.stdout is not None:
                process.stdout.close()


@attrs.frozen
class Sample:
    messages: int
    seconds: float
    server_cpu: float
    load_cpu: float

    @property
    def cpu_per_message(self) -> float:
        return self.server_cpu / self.messages


def measure(server: Child, name: str, port: int, clients: int, args: argparse.Namespace) -> Sample:
    role = ["--role", "load", "--kind", name, "--port", str(port), "--clients", str(clients)]
    role += ["--warmup", str(args.warmup), "--duration", str(args.duration)]
    if args.messages is not None:
        role += ["--messages", str(args.messages)]
    with child(f"{name} load ({clients} clients)", role) as load:
        load.expect("READY", START_TIMEOUT + STALL_TIMEOUT)
        server_cpu, load_cpu = server.cpu(), load.cpu()
        started = time.perf_counter()
        load.tell("GO")
        messages = int(load.expect("DONE", args.duration + START_TIMEOUT + STALL_TIMEOUT)[0])
        seconds = time.perf_counter() - started
        server_cpu, load_cpu = server.cpu() - server_cpu, load.cpu() - load_cpu
        load.tell("STOP")
        load.finish()
    if messages <= 0:
        raise BenchError(f"{name}: no message was echoed in the measured window")
    return Sample(messages, seconds, server_cpu, load_cpu)


def orchestrate(args: argparse.Namespace) -> None:
    servers: list[str] = args.servers
    samples: dict[tuple[str, int], list[Sample]] = {}
    for run in range(args.runs):
        turn = run % len(servers)
        for name in servers[turn:] + servers[:turn]:
            role = ["--role", "server", "--kind", name, "--port", str(args.port)]
            with child(f"{name} server", role) as server:
                port = int(server.expect("READY", START_TIMEOUT)[0])
                for clients in args.clients:
                    sample = measure(server, name, port, clients, args)
                    samples.setdefault((name, clients), []).append(sample)
                    print(
                        f"run {run + 1}/{args.runs}: {name}, {clients} clients: "
                        f"{sample.messages / sample.seconds:,.0f} msgs/s, "
                        f"{sample.cpu_per_message * 1e6:.1f} µs CPU/msg",
                        file=sys.stderr,
                    )
    report(args, servers, samples)


def report(
    args: argparse.Namespace, servers: list[str], samples: dict[tuple[str, int], list[Sample]]
) -> None:
    window = (
        f"{args.messages} msgs/client" if args.messages is not None else f"{args.duration:g} s"
    )
    print(
        f"message path: server CPU per echoed {len(PAYLOAD)}-byte message, "
        f"median of {args.runs} runs ({window} each)"
    )
    print(
        f"{'server':<22}{'clients':>8}{'µs CPU/msg':>12}{'msgs/s':>10}"
        f"{'server %':>10}{'load µs/msg':>13}{'ratio':>8}"
    )
    for clients in args.clients:
        base = samples.get((BASELINE, clients))
        for name in servers:
            runs = samples[name, clients]
            cpu = statistics.median(s.cpu_per_message for s in runs) * 1e6
            rate = statistics.median(s.messages / s.seconds for s in runs)
            busy = statistics.median(s.server_cpu / s.seconds for s in runs) * 100
            load = statistics.median(s.load_cpu / s.messages for s in runs) * 1e6
            ratio = "-"  # no baseline, or a window too short for the CPU clock's ticks
            if base is not None and all(b.server_cpu > 0 for b in base):
                ratio = "{:.2f}".format(
                    statistics.median(
                        s.cpu_per_message / b.cpu_per_message
                        for s, b in zip(runs, base, strict=True)
                    )
                )
            print(
                f"{name:<22}{clients:>8}{cpu:>12.1f}{rate:>10,.0f}"
                f"{busy:>9.0f}%{load:>13.1f}{ratio:>8}"
            )


def client_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of client counts >= 1")
    return counts


def server_names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SERVERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown server {', '.join(unknown)}; known: {', '.join(SERVERS)}"
        )
    return names


def main() -> None:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=server_names, default=DEFAULT_SERVERS)
    parser.add_argument("--clients", type=client_counts, default=[1, 100])
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds")
    parser.add_argument(
        "--messages", type=int, help="measured round trips per client (instead of --duration)"
    )
    parser.add_argument("--warmup", type=int, default=50, help="round trips per client")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=0, help="server port (0: any free one)")
    parser.add_argument(
        "--role", choices=["orchestrator", "server", "load"], default="orchestrator"
    )
    parser.add_argument("--kind", choices=list(SERVERS), help="the server (for --role)")
    args = parser.parse_args()
    if args.role != "orchestrator" and args.kind is None:
        parser.error(f"--role {args.role} needs --kind")
    try:
        if args.role == "orchestrator":
            orchestrate(args)
        elif args.role == "server":
            SERVERS[args.kind].serve(args.port)
        else:
            plan = Plan(
                port=args.port,
                clients=args.clients[0],
                warmup=args.warmup,
                messages=args.messages,
                duration=args.duration,
            )
            SERVERS[args.kind].load(plan)
    except Exception as exc:
        error = bench_error(exc)
        if error is None:
            raise
        sys.exit(f"message_path: {error}")


def bench_error(exc: BaseException) -> BenchError | None:
    """The BenchError that ``exc`` is, or that an exception group holds."""
    if isinstance(exc, BenchError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = bench_error(inner)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    main()
