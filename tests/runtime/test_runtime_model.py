"""A hypothesis state machine over the whole runtime, on a virtual clock.

It interleaves connects, clients joining a session (two to four per session), sends both
ways, cuts, resumes with right and wrong tokens, window expiry (by moving the clock),
passivation (on demand and at window expiry) and rehydration (by resuming), setup and
health-check hooks that are slow, fail or say unhealthy, resources that close, fail or
hang, background tasks, app crashes and terminations, and a shutdown in the middle of all
that followed by a new manager on the same store (for SQLite: the file closed and opened
again, as a restarted process would). After every step it checks that every session is
in a legal state, that no task of a session that left memory is alive (walking trio's
task tree), that every resource was closed exactly once and is in the report with every
task, and that each side received the other's messages exactly once, in order -- across
every time a session was saved and brought back, and across restarts.

Trio runs in a helper thread with a MockClock that only moves when a rule moves it; each
rule is a coroutine run there, followed by waiting until every task is blocked and no
worker thread (the SQLite store's) is running. How many examples run is set by the
hypothesis profile (``HYPOTHESIS_PROFILE``, see ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import trio
import trio.testing
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import statesession
from statesession import Outcome, SessionConfig, SessionStore
from statesession._lifecycle.events import STATES
from statesession.testing import MemoryChannel, memory_channel_pair

from ..helpers import examples, session_tasks

T = TypeVar("T")

# The heartbeat timeout is longer than the window, so that one jump of the clock past the
# window (31 s) leaves connected clients connected while it makes the session forget the
# clients that were away; a jump of 61 s drops everyone.
CONFIG = SessionConfig(
    reconnect_window=30,
    heartbeat_interval=10,
    heartbeat_timeout=45,
    cancel_grace=1,
    cleanup_timeout=2,
    buffer_messages=40,
    max_clients=4,
)
MAX_CLIENTS = 8  # model clients, over every session
HOOK_MODES = ["ok", "ok", "slow", "fail", "unhealthy"]
SLOW_SETUP = 5.0  # virtual seconds a slow setup takes


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
        """Run ``fn(*args)`` in trio, then settle: until every task is blocked and no
        worker thread is running (a task waiting for a thread looks blocked)."""
        result = trio.from_thread.run(fn, *args, trio_token=self.token)
        while trio.from_thread.run(self._settled, trio_token=self.token) > 0:
            time.sleep(0.0005)  # a worker thread is still at work: give it real time
        return result

    @staticmethod
    async def _settled() -> int:
        await trio.testing.wait_all_tasks_blocked()
        return trio.to_thread.current_default_thread_limiter().statistics().borrowed_tokens

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
        self.client: str | None = None  # set by the first welcome
        self.joiner = False  # joined a session another client created
        self.join_ack: int | None = None  # a joiner's hello.ack (None or 0)
        self.frames: list[dict[str, Any]] = []  # every frame of the current connection
        self.seqs: list[int] = []  # every server msg seq, across connections
        self.next_seq = 1
        self.server_acked = 0
        self.channel: MemoryChannel | None = None
        self.connected = False
        self.gone = False  # refused for good (terminated, unknown, ...)
        self.errors: list[str] = []
        self.closed: str | None = None
        self.resumed = 0  # welcomes with resumed: true

    async def open(self, model: RuntimeModel, token: str | None) -> None:
        server, client = memory_channel_pair(buffer=1000)
        if self.channel is not None:
            self.channel.cut()  # give up on a connection still waiting for its welcome
        self.channel = client
        self.frames = []
        model.trio.nursery.start_soon(model.manager.serve_channel, server)
        hello: dict[str, Any] = {"type": "hello", "v": 1}
        if self.session is not None and self.client is None:  # join
            hello.update(session=self.session, token=token)
            if self.join_ack is not None:
                hello["ack"] = self.join_ack
        elif self.session is not None:  # resume
            hello.update(session=self.session, token=token, client=self.client, resume=True)
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
                assert frame["resumed"] is (self.client is not None), frame
                self.resumed += frame["resumed"]
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
                    "session_limit",
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
    STORE: ClassVar[str] = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.trio = TrioThread()
        self.apps: list[AppControl] = []  # every incarnation of every session
        self.clients: list[ModelClient] = []
        self.hook_mode = "ok"
        self.restarts = 0
        self.directory = Path(tempfile.mkdtemp(prefix="statesession-model-"))
        self.trio.run(self._open_store)
        self.trio.run(self._open_manager)

    # -- the store and the manager, each held open by a task -------------------------------

    async def _hold(
        self, opening: Callable[[], Any], keep: Callable[[Any], None]
    ) -> tuple[trio.Event, trio.Event]:
        ready, stop, done = trio.Event(), trio.Event(), trio.Event()

        async def hold() -> None:
            async with opening() as opened:
                keep(opened)
                ready.set()
                await stop.wait()
            done.set()

        self.trio.nursery.start_soon(hold)
        await ready.wait()
        return stop, done

    async def _open_store(self) -> None:
        location = "memory" if self.STORE == "memory" else self.directory / "sessions.db"

        def keep(store: SessionStore) -> None:
            self.store = store

        self._store_stop, self._store_done = await self._hold(
            lambda: statesession.open_store(location), keep
        )

    async def _open_manager(self) -> None:
        async def app(session: statesession.Session) -> None:
            control = AppControl(session)
            self.apps.append(control)
            await control.run()

        async def setup(session: statesession.Session) -> None:
            if self.hook_mode == "slow":
                await trio.sleep(SLOW_SETUP)
            elif self.hook_mode == "fail":
                raise RuntimeError("setup failed on purpose")

        async def health_check(session: statesession.Session) -> bool:
            return self.hook_mode != "unhealthy"

        def keep(manager: statesession.SessionManager) -> None:
            self.manager = manager

        self._manager_stop, self._manager_done = await self._hold(
            lambda: statesession.open_manager(
                app, config=CONFIG, store=self.store, setup=setup, health_check=health_check
            ),
            keep,
        )

    async def _shut_down(self) -> None:
        """Stop the manager, letting every cascade run to its end on the virtual clock."""
        self.trio.clock.autojump_threshold = 0
        try:
            self._manager_stop.set()
            await self._manager_done.wait()
        finally:
            self.trio.clock.autojump_threshold = float("inf")
        self.check_terminated_sessions()
        for control in self.apps:
            assert control.session.state in {"terminated", "error", "passivated"}
            assert session_tasks(control.session.id) == []

    async def _close_store(self) -> None:
        self._store_stop.set()
        await self._store_done.wait()

    def teardown(self) -> None:
        for control in self.apps:
            event(f"session reached {control.session.state}")
            if control.session.reason:
                event(f"session ended by {control.session.reason}")
        if any(client.resumed for client in self.clients):
            event("a client resumed")
        if any(client.joiner and client.client for client in self.clients):
            event("a client joined a session")
        if any(client.seqs for client in self.clients):
            event("a client received messages")
        if self.restarts:
            event("the server restarted")
        try:
            self.trio.run(self._shut_down)
            self.trio.run(self._close_store)
        finally:
            self.trio.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- rules -----------------------------------------------------------------------------

    @initialize()
    def first_client(self) -> None:
        """Every example starts with a client creating a session."""
        self.new_client()

    @precondition(lambda self: len(self.clients) < MAX_CLIENTS)
    @rule()
    def new_client(self) -> None:
        client = ModelClient(len(self.clients))
        self.clients.append(client)
        self.trio.run(client.open, self, None)

    @precondition(lambda self: len(self.clients) < MAX_CLIENTS)
    @rule(which=st.integers(0, 7), everything=st.booleans())
    def join(self, which: int, everything: bool) -> None:
        """A new client joins the session another client is in, with its token."""
        other = self.pick_client(which)
        if other is None or other.session is None or other.token is None:
            return
        client = ModelClient(len(self.clients))
        client.session, client.token, client.joiner = other.session, other.token, True
        client.join_ack = 0 if everything else None
        self.clients.append(client)
        self.trio.run(client.open, self, other.token)

    @rule(which=st.integers(0, 7), right_token=st.sampled_from([True, True, True, False]))
    def reconnect(self, which: int, right_token: bool) -> None:
        client = self.pick_client(which)
        if client is None or client.connected or client.session is None or client.gone:
            return
        self._reconnect(client, right_token)

    @rule(which=st.integers(0, 7))
    def cut_and_resume(self, which: int) -> None:
        """A connection drops and its client comes straight back."""
        client = self.pick_client(which)
        if client is None or client.session is None or client.gone:
            return
        if client.connected:
            self._cut(client)
        self._reconnect(client, True)

    def _reconnect(self, client: ModelClient, right_token: bool) -> None:
        assert client.session is not None
        session_id = client.session
        token = client.token if right_token else "x" * 32
        before = len(client.errors)
        live = self.manager.sessions.get(session_id)
        stored = self.trio.run(self.store.load, session_id) is not None
        exists = live is not None or stored
        self.trio.run(client.open, self, token)
        if live is not None and live.state == "passivated":
            return  # being saved: the answer comes once it is in the store
        if self.hook_mode != "ok" and live is None:
            return  # brought back through hooks that are slow, fail or say unhealthy
        if not right_token:
            # a live or saved session refuses the token; an ended one is only a tombstone
            assert client.errors[before:] == (["bad_token"] if exists else ["terminated"])
            assert not client.connected
        elif not exists:
            assert client.errors[before:] == ["terminated"]

    @rule(which=st.integers(0, 7))
    def cut(self, which: int) -> None:
        client = self.pick_client(which)
        if client is not None and client.connected:
            self._cut(client)

    def _cut(self, client: ModelClient) -> None:
        channel = client.channel
        assert channel is not None

        async def cut() -> None:
            channel.cut()
            client.connected = False
            await trio.lowlevel.checkpoint()

        self.trio.run(cut)

    @rule(which=st.integers(0, 7), count=st.integers(1, 3))
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

    @rule(which=st.integers(0, 7))
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

    @rule(mode=st.sampled_from(HOOK_MODES))
    def hooks_behave(self, mode: str) -> None:
        """From now on, setup (run at every creation and rehydration) is quick, slow or
        fails, and the health check passes or fails."""
        self.hook_mode = mode

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

    @rule(seconds=st.sampled_from([0.5, 1.5, 5, 11, 31, 61]))
    def advance_time(self, seconds: float) -> None:
        async def advance() -> None:
            self.trio.clock.jump(seconds)
            await trio.lowlevel.checkpoint()

        self.trio.run(advance)

    @precondition(lambda self: self.restarts < 2)
    @rule()
    def restart(self) -> None:
        """The server shuts down in the middle of whatever is going on, and a new one
        starts on the same store (for SQLite, the file is closed and opened again)."""
        self.restarts += 1
        self.trio.run(self._shut_down)
        for client in self.clients:
            assert not client.connected, "a shutdown closes every connection"
        if self.STORE != "memory":
            self.trio.run(self._close_store)
            self.trio.run(self._open_store)
        self.trio.run(self._open_manager)

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
            if client.seqs:
                # a creator's stream starts at 1; a joiner's wherever the server began it
                first = client.seqs[0] if client.joiner else 1
                assert client.seqs == list(range(first, first + len(client.seqs))), client.seqs
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


class SQLiteRuntimeModel(RuntimeModel):
    STORE = "sqlite"


MODEL_SETTINGS = settings(
    max_examples=examples(1000),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
RuntimeModel.TestCase.settings = MODEL_SETTINGS
SQLiteRuntimeModel.TestCase.settings = settings(MODEL_SETTINGS, max_examples=examples(60))
TestRuntimeModel = RuntimeModel.TestCase
TestRuntimeModelSQLite = SQLiteRuntimeModel.TestCase
