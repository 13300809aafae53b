"""A hypothesis state machine over the whole runtime, on a virtual clock.

It interleaves connects, sends both ways, cuts, resumes with right and wrong tokens,
window expiry (by moving the clock), passivation (on demand and at window expiry) and
rehydration (by resuming), resources that close, fail or hang, background tasks, app
crashes and terminations; after every step it checks that every session is in a legal
state, that no task of a session that left memory is alive (walking trio's task tree),
that every resource was closed exactly once and is in the report with every task, and that
each side received the other's messages exactly once, in order -- across every time a
session was saved and brought back.

Trio runs in a helper thread with a MockClock that only moves when a rule moves it; each
rule is a coroutine run there, followed by waiting until every task is blocked.
MODEL_EXAMPLES=<n> in the environment runs more examples than the suite's 150.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import statesession
from statesession import MemoryStore, Outcome, SessionConfig
from statesession._chart import STATES
from statesession.testing import MemoryChannel, memory_channel_pair

from .helpers import session_tasks

T = TypeVar("T")

CONFIG = SessionConfig(
    reconnect_window=30,
    heartbeat_interval=10,
    heartbeat_timeout=30,
    cancel_grace=1,
    cleanup_timeout=2,
    buffer_messages=40,
    max_clients=4,
)


class TrioThread:
    """A trio run in a helper thread, driven from the test thread one coroutine at a time."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        trio.run(self._main, clock=self.clock)

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def settled() -> T:
            result = await fn(*args)
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(settled, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


class AppControl:
    """What the model knows about one session's app."""

    def __init__(self, session: statesession.Session) -> None:
        self.session = session
        self.commands, self._inbox = trio.open_memory_channel[tuple[str, Any]](100)
        self.received: dict[str, list[int]] = {}
        self.resources: dict[str, str] = {}  # name -> how it closes
        self.closes: Counter[str] = Counter()
        self.workers: list[str] = []

    async def run(self) -> None:
        session = self.session

        async def listen() -> None:
            async for message in session:
                self.received.setdefault(message.client, []).append(message.seq)

        session.start_soon(listen, name="listen")
        async for command, argument in self._inbox:
            if command == "send":
                for i in range(argument):
                    session.start_soon(session.send, {"n": i}, name="sender")
            elif command == "resource":
                self._add_resource(argument)
            elif command == "spawn":
                name = f"worker-{len(self.workers)}"
                self.workers.append(name)
                session.start_soon(trio.sleep_forever, name=name)
            elif command == "crash":
                raise RuntimeError("app crashed on purpose")

    def _add_resource(self, kind: str) -> None:
        name = f"{kind}-{len(self.resources)}"
        self.resources[name] = kind

        async def close() -> None:
            self.closes[name] += 1
            if kind == "fail":
                raise OSError(f"{name} refused to close")
            if kind == "hang":
                await trio.sleep_forever()

        self.session.add_resource(name, close)


class ModelClient:
    """A client speaking raw frames, recording exactly what it received."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.session: str | None = None
        self.token: str | None = None
        self.client: str | None = None
        self.frames: list[dict[str, Any]] = []  # every frame of the current connection
        self.seqs: list[int] = []  # every server msg seq, across connections
        self.next_seq = 1
        self.server_acked = 0
        self.channel: MemoryChannel | None = None
        self.connected = False
        self.gone = False  # refused for good (terminated, unknown, ...)
        self.errors: list[str] = []
        self.closed: str | None = None

    async def open(self, model: RuntimeModel, token: str | None) -> None:
        server, client = memory_channel_pair(buffer=1000)
        if self.channel is not None:
            self.channel.cut()  # give up on a connection still waiting for its welcome
        self.channel = client
        self.frames = []
        model.trio.nursery.start_soon(model.manager.serve_channel, server)
        hello: dict[str, Any] = {"type": "hello", "v": 1}
        if self.session is not None:
            hello.update(
                session=self.session,
                token=token,
                client=self.client,
                resume=True,
            )
            if self.seqs:
                hello["ack"] = self.seqs[-1]
        await client.send(json.dumps(hello))
        model.trio.nursery.start_soon(self.read, client)

    async def read(self, channel: MemoryChannel) -> None:
        try:
            await self._read(channel)
        except statesession.ChannelError:
            if channel is self.channel:
                self.connected = False

    async def _read(self, channel: MemoryChannel) -> None:
        while True:
            frame = json.loads(await channel.receive())
            if channel is not self.channel:
                return  # a connection this client gave up on
            self.frames.append(frame)
            kind = frame["type"]
            if kind == "welcome":
                self.connected = True
                self.session, self.token, self.client = (
                    frame["session"],
                    frame["token"],
                    frame["client"],
                )
                self.server_acked = frame["ack"]
                for seq in range(frame["ack"] + 1, self.next_seq):
                    await self.send_msg(channel, seq)
            elif kind == "msg":
                self.seqs.append(frame["seq"])
                await channel.send(json.dumps({"type": "ack", "seq": frame["seq"]}))
            elif kind == "ping":
                await channel.send('{"type":"pong"}')
            elif kind == "ack":
                self.server_acked = max(self.server_acked, frame["seq"])
            elif kind == "error":
                self.errors.append(frame["code"])
                if frame["fatal"] and frame["code"] in {
                    "terminated",
                    "unknown_session",
                    "resume_gap",
                }:
                    self.gone = True
            elif kind == "closed":
                self.closed = frame["reason"]
                self.gone = True

    async def send_msg(self, channel: MemoryChannel, seq: int) -> None:
        try:
            await channel.send(json.dumps({"type": "msg", "seq": seq, "data": seq}))
        except statesession.ChannelError:
            self.connected = False


class RuntimeModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.trio = TrioThread()
        self.apps: list[AppControl] = []  # every incarnation of every session
        self.clients: list[ModelClient] = []
        self.store = MemoryStore()
        self.manager_exit = self.trio.run(self._open_manager)

    async def _open_manager(self) -> trio.Event:
        ready, stop, done = trio.Event(), trio.Event(), trio.Event()

        async def app(session: statesession.Session) -> None:
            control = AppControl(session)
            self.apps.append(control)
            await control.run()

        async def hold() -> None:
            async with statesession.open_manager(app, config=CONFIG, store=self.store) as manager:
                self.manager = manager
                ready.set()
                await stop.wait()
            done.set()

        self.trio.nursery.start_soon(hold)
        await ready.wait()
        self._stop_manager, self._manager_done = stop, done
        return done

    def teardown(self) -> None:
        async def shut_down() -> None:
            self.trio.clock.autojump_threshold = 0  # let every cascade run to its end
            self._stop_manager.set()
            await self._manager_done.wait()
            self.check_terminated_sessions()
            for control in self.apps:
                assert control.session.state in {"terminated", "error", "passivated"}
                assert session_tasks(control.session.id) == []

        for control in self.apps:
            event(f"session reached {control.session.state}")
            if control.session.reason:
                event(f"session ended by {control.session.reason}")
        for client in self.clients:
            if any(f["type"] == "welcome" and f["resumed"] for f in client.frames):
                event("a client resumed")
            if client.seqs:
                event("a client received messages")
        try:
            self.trio.run(shut_down)
        finally:
            self.trio.close()

    # -- rules -----------------------------------------------------------------------------

    @rule()
    def new_client(self) -> None:
        if len(self.clients) < 4:
            client = ModelClient(len(self.clients))
            self.clients.append(client)
            self.trio.run(client.open, self, None)

    @rule(which=st.integers(0, 3), right_token=st.booleans())
    def reconnect(self, which: int, right_token: bool) -> None:
        client = self.pick_client(which)
        if client is None or client.connected or client.session is None or client.gone:
            return
        token = client.token if right_token else "x" * 32
        before = len(client.errors)
        live = self.manager.sessions.get(client.session)
        exists = live is not None or client.session in self.store._snapshots
        self.trio.run(client.open, self, token)
        if live is not None and live.state == "passivated":
            return  # being saved: the answer comes once it is in the store
        if not right_token:
            # a live or saved session refuses the token; an ended one is only a tombstone
            assert client.errors[before:] == (["bad_token"] if exists else ["terminated"])
            assert not client.connected
        elif not exists:
            assert client.errors[before:] == ["terminated"]

    @rule(which=st.integers(0, 3))
    def cut(self, which: int) -> None:
        client = self.pick_client(which)
        if client is not None and client.connected and client.channel is not None:
            channel = client.channel

            async def cut() -> None:
                channel.cut()
                client.connected = False
                await trio.lowlevel.checkpoint()

            self.trio.run(cut)

    @rule(which=st.integers(0, 3), count=st.integers(1, 3))
    def client_sends(self, which: int, count: int) -> None:
        client = self.pick_client(which)
        if client is None or not client.connected or client.channel is None:
            return
        channel = client.channel

        async def send() -> None:
            for _ in range(count):
                seq = client.next_seq
                client.next_seq += 1
                await client.send_msg(channel, seq)

        self.trio.run(send)

    @rule(which=st.integers(0, 3))
    def bye(self, which: int) -> None:
        client = self.pick_client(which)
        if client is not None and client.connected and client.channel is not None:
            self.trio.run(client.channel.send, '{"type":"bye"}')

    @rule(which=st.integers(0, 5), count=st.integers(1, 5))
    def app_sends(self, which: int, count: int) -> None:
        self.command(which, "send", count)

    @rule(which=st.integers(0, 5), kind=st.sampled_from(["ok", "ok", "fail", "hang"]))
    def add_resource(self, which: int, kind: str) -> None:
        self.command(which, "resource", kind)

    @rule(which=st.integers(0, 5))
    def spawn_task(self, which: int) -> None:
        self.command(which, "spawn", None)

    @rule(which=st.integers(0, 5))
    def crash_app(self, which: int) -> None:
        self.command(which, "crash", None)

    @rule(which=st.integers(0, 5))
    def passivate(self, which: int) -> None:
        control = self.pick_app(which)
        if control is not None:
            self.trio.run(self._passivate, control)

    async def _passivate(self, control: AppControl) -> None:
        self.manager.passivate(control.session.id)
        await trio.lowlevel.checkpoint()

    @rule(which=st.integers(0, 5))
    def terminate(self, which: int) -> None:
        control = self.pick_app(which)
        if control is not None:
            self.trio.run(self._terminate, control)

    async def _terminate(self, control: AppControl) -> None:
        self.manager.terminate(control.session.id, "admin")
        await trio.lowlevel.checkpoint()

    @rule(seconds=st.sampled_from([0.5, 1.5, 5, 11, 31]))
    def advance_time(self, seconds: float) -> None:
        async def advance() -> None:
            self.trio.clock.jump(seconds)
            await trio.lowlevel.checkpoint()

        self.trio.run(advance)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def states_are_legal(self) -> None:
        for control in self.apps:
            assert control.session.state in STATES

    @invariant()
    def terminated_sessions_left_nothing(self) -> None:
        self.trio.run(self._check_terminated)

    async def _check_terminated(self) -> None:
        self.check_terminated_sessions()

    def check_terminated_sessions(self) -> None:
        for control in self.apps:
            session = control.session
            if session.state != "terminated" and session.report is None:
                continue
            gone = session.state in ("terminated", "passivated") and session._finished
            if gone and session.id not in self.manager.sessions:
                assert session_tasks(session.id) == [], session_tasks(session.id)
            report = session.report
            assert report is not None
            # every resource closed exactly once, and accounted for in one pass
            resources = [item for p in report.passes() for item in p.resources]
            assert sorted(item.name for item in resources) == sorted(control.resources)
            assert all(control.closes[name] == 1 for name in control.resources)
            outcomes = {item.name: item.outcome for item in resources}
            for name, kind in control.resources.items():
                expected = {"ok": Outcome.CLOSED, "fail": Outcome.FAILED, "hang": Outcome.FORCED}[
                    kind
                ]
                assert outcomes[name] is expected, (name, outcomes[name])
            # every worker still running at termination was forced
            task_outcomes = {item.name: item.outcome for p in report.passes() for item in p.tasks}
            for worker in control.workers:
                assert task_outcomes.get(worker, Outcome.FORCED) is Outcome.FORCED
            if report.reason.startswith("passivated"):
                assert session.state == "passivated"
                assert report.clean or any(
                    item.outcome is Outcome.FAILED for item in report.resources
                )
            elif session.state == "passivated":  # its save is under way
                pass
            else:
                assert session.state == ("terminated" if report.clean else "error")

    @invariant()
    def messages_arrive_exactly_once_in_order(self) -> None:
        for client in self.clients:
            assert client.seqs == list(range(1, len(client.seqs) + 1)), client.seqs
        # Per session, across every incarnation (saved and brought back), per client.
        received: dict[tuple[str, str], list[int]] = {}
        for control in self.apps:
            for client_id, seqs in control.received.items():
                received.setdefault((control.session.id, client_id), []).extend(seqs)
        for seqs in received.values():
            assert seqs == list(range(1, len(seqs) + 1)), seqs

    # -- helpers -------------------------------------------------------------------------------

    def pick_client(self, which: int) -> ModelClient | None:
        return self.clients[which % len(self.clients)] if self.clients else None

    def pick_app(self, which: int) -> AppControl | None:
        return self.apps[which % len(self.apps)] if self.apps else None

    def command(self, which: int, command: str, argument: Any) -> None:
        control = self.pick_app(which)
        if control is None or control.session.closing:
            return
        self.trio.run(control.commands.send, (command, argument))


RuntimeModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("MODEL_EXAMPLES", "150")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRuntimeModel = RuntimeModel.TestCase
