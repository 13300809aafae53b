"""Resuming a session over loopback WebSocket: reconnect and replay buffered messages.

    python bench/resume.py [--messages 1000] [--size 100] [--runs 21]

Server and client run in one process (one trio run, so both sides' work is on the clock),
over real sockets on 127.0.0.1: the library's WebSocket transport (``statesession.serve``)
for the session, a bare trio-websocket server for the baseline.

Measured, on a fresh session each run: a client connects, says ``hello`` and is
welcomed, then leaves politely -- it closes its WebSocket (close code 1000) without
``bye``, so the session waits for it in ``reconnecting``. Meanwhile the app sends M
messages (each a string of S ASCII characters), which the session buffers for the absent
client (``buffer_messages`` = M). Timed: from the client starting to reconnect (opening
the TCP connection) until it has received the M-th replayed message. The client is a
lean raw trio-websocket client speaking the wire protocol, not ``open_client``: it sends
``hello`` with the session id, token, client id, ``ack: 0`` and ``resume: true``, reads
the ``welcome`` (which must say ``resumed``), then decodes each ``msg`` and checks that
seqs 1..M arrive in order, each once, each with the payload the app sent under it. After
the clock stops it acknowledges them all and says ``bye``; the run fails if any message
arrives again before ``closed``.

Baseline, same run (runs alternate): the same client opens a fresh connection to a bare
trio-websocket server that sends the same M ``msg`` frames as soon as it has accepted
the connection; timed from opening the connection until the M-th frame is received, with
the same decoding and checks. Both servers and the client use the same trio-websocket
buffer settings as the library's transport.

Each row shows the wall time (``time.perf_counter``) and the process's CPU time
(``time.process_time``), each with its ratio to the baseline; the goal, at most 50 ms
for 1,000 messages of 100 bytes, is judged on wall time. Times are the median of
``--runs`` runs, after one untimed warm-up run of each. Every wait is bounded: a run
that stalls stops with a message saying what it was waiting for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from contextlib import suppress
from functools import partial
from typing import Any

import trio
import trio.testing
from _common import BenchError, Span, Stopwatch, bounded, first_leaf
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)

import statesession
from statesession import SessionConfig
from statesession._core.codec import ack_text, encode_message_data, msg_text
from statesession.protocol import ByeFrame, HelloFrame, encode_frame
from statesession_websocket._common import RECEIVE_SIZE

#: The goal for reconnecting and receiving 1,000 replayed messages, in seconds.
GOAL = 0.050

HOST = "127.0.0.1"

#: trio-websocket settings of the library's WebSocket transport, used by every peer here.
MAX_MESSAGE = SessionConfig().max_frame
RECEIVE_BUFFER = RECEIVE_SIZE


def connect(port: int) -> Any:
    """A client connection to 127.0.0.1:port, set up the same way for every run."""
    return open_websocket(
        HOST,
        port,
        "/",
        use_ssl=False,
        max_message_size=MAX_MESSAGE,
        receive_buffer_size=RECEIVE_BUFFER,
    )


def payloads(count: int, size: int) -> list[str]:
    """``count`` distinct strings of ``size`` ASCII characters."""
    return [f"{i:08d}".ljust(size, ".")[:size] for i in range(1, count + 1)]


def msg_frames(data: list[str]) -> list[str]:
    """The ``msg`` frames carrying ``data``, seq 1, 2, ..., as the server writes them."""
    return [msg_text(seq, encode_message_data(item)) for seq, item in enumerate(data, start=1)]


async def receive_frame(ws: WebSocketConnection) -> dict[str, Any]:
    try:
        text = await ws.get_message()
    except ConnectionClosed as exc:
        raise BenchError(f"the connection closed early: {exc.reason}") from None
    frame: dict[str, Any] = json.loads(text)
    return frame


async def receive_stream(ws: WebSocketConnection, data: list[str]) -> None:
    """Receive ``msg`` seq 1..len(data), in order, each carrying its item of ``data``."""
    for seq, item in enumerate(data, start=1):
        frame = await receive_frame(ws)
        if frame.get("type") != "msg" or frame.get("seq") != seq or frame.get("data") != item:
            shown = {k: v for k, v in frame.items() if k != "data"}
            raise BenchError(f"expected msg {seq} with its payload, got {shown!r}")


class Burst:
    """The app: once told to, sends its messages (to a client that has left)."""

    def __init__(self, data: list[str]) -> None:
        self.data = data
        self.go: dict[str, trio.Event] = {}
        self.sent: dict[str, trio.Event] = {}

    @staticmethod
    def event(events: dict[str, trio.Event], session_id: str) -> trio.Event:
        return events.setdefault(session_id, trio.Event())

    async def app(self, session: statesession.Session) -> None:
        await self.event(self.go, session.id).wait()
        for item in self.data:
            await session.send(item)
        self.event(self.sent, session.id).set()
        async for _ in session:
            pass


class States:
    """Lets the benchmark wait for a session to reach a state (a lifecycle observer)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], trio.Event] = {}

    def observe(self, session: statesession.Session, event: str, source: str, target: str) -> None:
        waiting = self._waiting.pop((session.id, target), None)
        if waiting is not None:
            waiting.set()

    async def reach(self, session: statesession.Session, state: str) -> None:
        if session.state != state:
            await self._waiting.setdefault((session.id, state), trio.Event()).wait()


async def resume_once(
    port: int,
    manager: statesession.SessionManager,
    burst: Burst,
    states: States,
    durations: list[Span],
) -> None:
    """One session: welcome, leave, buffer, then time the reconnect and replay."""
    data = burst.data
    with bounded(10, "a first connection to be welcomed"):
        async with connect(port) as ws:
            await ws.send_message(encode_frame(HelloFrame()))
            welcome = await receive_frame(ws)
            if welcome.get("type") != "welcome":
                raise BenchError(f"expected a welcome, got {welcome!r}")
        # Leaving the block closed the WebSocket politely (1000), without a bye.
    session = manager.sessions[welcome["session"]]
    with bounded(10, "the session to buffer the messages for its absent client"):
        await states.reach(session, "reconnecting")
        Burst.event(burst.go, session.id).set()
        await Burst.event(burst.sent, session.id).wait()
    buffered = session.statistics().buffered_messages
    if buffered != len(data):
        raise BenchError(f"the session buffered {buffered} messages, not {len(data)}")
    await trio.testing.wait_all_tasks_blocked()

    hello = encode_frame(
        HelloFrame(
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
            ack=0,
            resume=True,
        )
    )
    with bounded(10, "the reconnect and the replay"):
        stopwatch = Stopwatch()
        async with connect(port) as ws:
            await ws.send_message(hello)
            resumed = await receive_frame(ws)
            if resumed.get("type") != "welcome" or resumed.get("resumed") is not True:
                raise BenchError(f"expected a resumed welcome, got {resumed!r}")
            await receive_stream(ws, data)
            durations.append(stopwatch.stop())
            # Untimed: acknowledge everything, end the session, and check that nothing
            # was delivered twice.
            await ws.send_message(ack_text(len(data)))
            await ws.send_message(encode_frame(ByeFrame()))
            while (frame := await receive_frame(ws)).get("type") != "closed":
                if frame.get("type") == "msg":
                    raise BenchError(f"msg {frame.get('seq')} was delivered twice")
    with bounded(10, "the session to terminate"):
        await session.wait_terminated()
    burst.go.pop(session.id)
    burst.sent.pop(session.id)


async def bare_once(port: int, data: list[str], durations: list[Span]) -> None:
    """The baseline: a fresh connection to the bare server, which sends every frame."""
    with bounded(10, "the bare server's frames"):
        stopwatch = Stopwatch()
        async with connect(port) as ws:
            await receive_stream(ws, data)
            durations.append(stopwatch.stop())


#: The library's WebSocket transports, each served from the same manager.
TRANSPORTS = ("websocket", "websockets")


async def run(messages: int, size: int, runs: int) -> tuple[list[Span], dict[str, list[Span]]]:
    """Alternate baseline and session runs; return their durations (seconds)."""
    data = payloads(messages, size)
    frames = msg_frames(data)

    async def bare_server(request: WebSocketRequest) -> None:
        ws = await request.accept()
        for frame in frames:
            await ws.send_message(frame)
        with suppress(ConnectionClosed):
            await ws.get_message()  # until the client closes

    burst = Burst(data)
    states = States()
    config = SessionConfig(
        buffer_messages=messages,
        buffer_bytes=max(1024 * 1024, sum(map(len, frames))),
        max_frame=MAX_MESSAGE,
    )
    bare: list[Span] = []
    kernels: dict[str, list[Span]] = {name: [] for name in TRANSPORTS}
    async with (
        trio.open_nursery() as nursery,
        statesession.open_manager(burst.app, config=config) as manager,
    ):
        manager.add_observer(states.observe)
        with bounded(10, "the servers to listen"):
            ports: dict[str, int] = {}
            for name in TRANSPORTS:
                url: str = await nursery.start(
                    partial(statesession.serve, manager, f"ws://{HOST}:0/", transport=name)
                )
                ports[name] = int(url.rstrip("/").rsplit(":", 1)[1])
            server = await nursery.start(
                partial(
                    serve_websocket,
                    bare_server,
                    HOST,
                    0,
                    None,
                    max_message_size=MAX_MESSAGE,
                    receive_buffer_size=RECEIVE_BUFFER,
                )
            )
        warm_up: list[Span] = []
        await bare_once(server.port, data, warm_up)
        for name in TRANSPORTS:
            await resume_once(ports[name], manager, burst, states, warm_up)
        for _ in range(runs):
            await bare_once(server.port, data, bare)
            for name in TRANSPORTS:
                await resume_once(ports[name], manager, burst, states, kernels[name])
        nursery.cancel_scope.cancel()
    return bare, kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages buffered")
    parser.add_argument("--size", type=int, default=100, help="characters per message")
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    try:
        bare, kernels = trio.run(run, args.messages, args.size, args.runs)
    except* BenchError as group:
        sys.exit(f"resume: {first_leaf(group)}")
    base_wall = statistics.median(span.wall for span in bare)
    base_cpu = statistics.median(span.cpu for span in bare)
    rows = [("baseline: fresh connection, bare server", (base_wall, base_cpu), "")]
    for name, spans in kernels.items():
        wall = statistics.median(span.wall for span in spans)
        cpu = statistics.median(span.cpu for span in spans)
        verdict = "met" if wall <= GOAL else "MISSED"
        if wall > GOAL and cpu <= GOAL:
            verdict += " (met in CPU time)"
        label = f"reconnect + replay, {name} transport"
        rows.append((label, (wall, cpu), f"wall <= {GOAL * 1e3:g} ms: {verdict}"))
    print(
        f"{args.messages:,} messages of {args.size} bytes over loopback WebSocket, "
        f"median of {args.runs} runs"
    )
    print(f"{'':<42}{'wall ms':>9}{'ratio':>8}{'CPU ms':>9}{'ratio':>8}  goal")
    for label, (w, c), goal in rows:
        print(
            f"{label:<42}{w * 1e3:>9.1f}{w / base_wall:>7.2f}x{c * 1e3:>9.1f}"
            f"{c / base_cpu:>7.2f}x  {goal}".rstrip()
        )


if __name__ == "__main__":
    main()
