"""Passivation and rehydration: sessions leave memory for the store and come back."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import statesession
from statesession import MemoryStore, Outcome, SessionConfig, SessionStore
from statesession.testing import MemoryChannel

from ..helpers import RawPeer, Served, live_tasks, session_tasks
from ..helpers import serving as serving_without_store


@asynccontextmanager
async def serving(
    app: Any,
    *,
    store: SessionStore | None = None,
    config: SessionConfig | None = None,
    **options: Any,
) -> AsyncIterator[Served]:
    async with serving_without_store(
        app, config=config, store=store or MemoryStore(), **options
    ) as served:
        yield served


def counter_app(log: list[str]) -> Any:
    """Counts turns in session.data; answers each message with three numbered parts;
    registers a resource to show that passivation closes it."""

    async def app(session: statesession.Session) -> None:
        session.data.setdefault("turns", 0)
        session.add_resource("sandbox", lambda: log.append(f"closed {session.id}"))
        async for message in session:
            session.data["turns"] += 1
            for part in range(3):
                await session.send(f"{message.data}:{part}:turn{session.data['turns']}")

    return app


async def resume(served: Served, welcome: dict[str, Any], ack: int) -> RawPeer:
    peer = await served.peer()
    answer = await peer.hello(
        session=welcome["session"],
        token=welcome["token"],
        client=welcome["client"],
        resume=True,
        ack=ack,
    )
    assert answer["type"] == "welcome", answer
    assert answer["resumed"] is True
    return peer


async def test_passivation_on_window_expiry_and_rehydration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a store, a session nobody resumes within the window is saved and leaves
    memory -- no task, every resource closed -- and comes back when its client returns:
    same data, unacknowledged messages replayed, exactly once."""
    closed: list[str] = []
    async with serving(counter_app(closed)) as served:
        peer, welcome = await served.new_session()
        session_id = welcome["session"]
        await peer.send({"type": "msg", "seq": 1, "data": "a"})
        parts = [await peer.receive_type("msg") for _ in range(3)]
        await peer.send({"type": "ack", "seq": 1})  # parts 2 and 3 stay unacknowledged
        session = served.manager.sessions[session_id]
        assert isinstance(peer.channel, statesession.testing.MemoryChannel)
        peer.channel.cut()
        await session._wait_gone()
        assert session.state == "passivated"
        assert trio.current_time() == pytest.approx(30, abs=0.5)
        assert session_id not in served.manager.sessions
        assert session_tasks(session_id) == []
        assert closed == [f"closed {session_id}"]
        assert session.report is not None
        assert session.report.reason == "passivated (window_expired)"
        assert [(i.name, i.outcome) for i in session.report.resources] == [
            ("sandbox", Outcome.CLOSED)
        ]

        again = await resume(served, welcome, ack=1)
        replayed = [await again.receive_type("msg") for _ in range(2)]
        assert replayed == parts[1:]
        await again.send({"type": "msg", "seq": 2, "data": "b"})
        fresh = [(await again.receive_type("msg"))["data"] for _ in range(3)]
        assert fresh == ["b:0:turn2", "b:1:turn2", "b:2:turn2"]
        assert [m["seq"] for m in replayed] == [2, 3]


async def test_passivation_can_be_turned_off_for_window_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With window_expiry="terminate" a session whose reconnect window runs out is terminated
    (window_expired), not passivated."""
    config = SessionConfig(window_expiry="terminate")
    async with serving(counter_app([]), config=config) as served:
        peer, welcome = await served.new_session()
        session = served.manager.sessions[welcome["session"]]
        peer.channel.cut()  # type: ignore[attr-defined]
        report = await session.wait_terminated()
        assert session.state == "terminated"
        assert report is not None
        assert report.reason == "window_expired"


async def test_passivation_waits_while_the_app_is_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A busy app (an agent loop running) is never passivated: the expiry waits until it
    is done."""

    async def agent(session: statesession.Session) -> None:
        with session.busy():
            await trio.sleep(100)
        async for _ in session:
            pass

    async with serving(agent) as served:
        peer, welcome = await served.new_session()
        session = served.manager.sessions[welcome["session"]]
        peer.channel.cut()  # type: ignore[attr-defined]
        await trio.sleep(60)
        assert session.state == "reconnecting"
        await session._wait_gone()
        assert session.state == "passivated"
        assert trio.current_time() == pytest.approx(100, abs=0.5)


async def test_idle_sessions_are_passivated_and_the_client_waits_to_be_needed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An active session idle for passivate_after is saved; its client is told
    (state passivated), stays away until it has something to send, then resumes it."""
    config = SessionConfig(passivate_after=60)
    async with serving(counter_app([]), config=config) as served:
        connects = 0

        async def connect() -> statesession.Channel:
            nonlocal connects
            connects += 1
            return await served.open_channel()

        async with statesession.open_client(connect) as client:
            await client.send("hi")
            assert [await client.receive() for _ in range(3)][-1] == "hi:2:turn1"
            await trio.sleep(59)
            assert len(served.manager) == 1
            await trio.sleep(2)
            assert len(served.manager) == 0
            assert client.statistics().dormant
            await trio.sleep(3600)
            assert connects == 1  # it did not come back on its own
            await client.send("again")
            assert [await client.receive() for _ in range(3)][-1] == "again:2:turn2"
            assert connects == 2


async def test_busy_sessions_are_not_passivated_when_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A busy session stays in memory past passivate_after, and leaves once idle that long after
    its busy block ends."""

    async def agent(session: statesession.Session) -> None:
        with session.busy():
            await trio.sleep(1000)
        async for _ in session:
            pass

    async with serving(agent, config=SessionConfig(passivate_after=60)) as served:
        await served.new_session()
        await trio.sleep(900)
        assert len(served.manager) == 1
        await trio.sleep(200)
        assert len(served.manager) == 0


async def test_untaken_client_messages_are_resent_and_processed_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Messages the app had not taken when the session was saved were never acknowledged:
    the client sends them again after the resume, and the app gets each once."""
    taken: list[int] = []

    async def slow(session: statesession.Session) -> None:
        async for message in session:
            taken.append(message.data)
            await trio.sleep(10)

    async with serving(slow) as served:
        peer, welcome = await served.new_session()
        for seq in (1, 2, 3):
            await peer.send({"type": "msg", "seq": seq, "data": seq})
        await trio.sleep(1)
        assert served.manager.passivate(welcome["session"])
        await served.manager.sessions[welcome["session"]]._wait_gone()
        again = await served.peer()
        answer = await again.hello(
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
            resume=True,
            ack=0,
        )
        assert answer["ack"] == 1  # the app had taken only the first
        for seq in (2, 3):
            await again.send({"type": "msg", "seq": seq, "data": seq})
        await trio.sleep(100)
        assert taken == [1, 2, 3]


async def test_shutdown_saves_every_session_for_the_next_server(
    thread_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Stopping a manager with a store passivates its sessions (clients are told
    server_shutdown, not closed); a new manager on the same file serves their resume."""
    path = tmp_path / "sessions.db"
    async with statesession.open_store(path) as store:
        async with serving(counter_app([]), store=store) as served:
            peer, welcome = await served.new_session()
            await peer.send({"type": "msg", "seq": 1, "data": "x"})
            for _ in range(3):  # the app has answered in full (unacknowledged)
                await peer.receive_type("msg")
        error = await peer.receive_type("error")
        assert error["code"] == "server_shutdown"
        assert "saved" in error["message"]
        assert [(r.state, r.snapshot) for r in await store.sessions()] == [("passivated", True)]
    async with (
        statesession.open_store(path) as store,
        serving(counter_app([]), store=store) as served,
    ):
        again = await resume(served, welcome, ack=1)
        assert [(await again.receive_type("msg"))["data"] for _ in range(2)] == [
            "x:1:turn1",
            "x:2:turn1",
        ]
        await again.send({"type": "msg", "seq": 2, "data": "y"})
        assert (await again.receive_type("msg"))["data"] == "y:0:turn2"


async def test_rehydration_checks_the_token_and_principal_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Resuming a passivated session with a wrong token, or its token under another principal,
    is refused bad_token and brings nothing back."""
    async with serving(counter_app([]), authenticate=lambda auth: auth) as served:
        owner = await served.peer()
        welcome = await owner.hello(auth="ann")
        assert served.manager.passivate(welcome["session"])
        await served.manager.sessions[welcome["session"]]._wait_gone()
        thief = await served.peer()
        assert (await thief.hello(session=welcome["session"], token="x" * 32, auth="ann"))[
            "code"
        ] == "bad_token"
        other = await served.peer()
        refused = await other.hello(session=welcome["session"], token=welcome["token"], auth="eve")
        assert refused["code"] == "bad_token"
        assert len(served.manager) == 0  # nothing was brought back for them


async def test_a_corrupt_snapshot_is_reported_and_kept(
    thread_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A snapshot of an unknown version is answered terminated (cannot be restored, version 7),
    brings nothing back, and stays in the file."""
    path = tmp_path / "sessions.db"
    async with (
        statesession.open_store(path) as store,
        serving(counter_app([]), store=store) as served,
    ):
        _, welcome = await served.new_session()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE sessions SET snapshot = '{\"v\": 7}'")
    async with (
        statesession.open_store(path) as store,
        serving(counter_app([]), store=store) as served,
    ):
        peer = await served.peer()
        answer = await peer.hello(session=welcome["session"], token=welcome["token"])
        assert answer["code"] == "terminated"
        assert "cannot be restored" in answer["message"]
        assert "version 7" in answer["message"]
        assert len(served.manager) == 0
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT snapshot FROM sessions").fetchone()[0] == '{"v": 7}'


async def test_a_session_lost_in_a_crash_is_explained(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A store that knows a session as live but holds no snapshot of it (its server died
    without saving it) says so, instead of 'unknown session'."""
    store = MemoryStore()
    async with serving(counter_app([]), store=store) as served:
        _, welcome = await served.new_session()
        await store.flush()
        manager = served.manager
        live = dict(manager._sessions)
        manager._sessions.clear()  # as a killed server: memory gone, store kept
        manager._all_gone.set()
        peer = await served.peer()
        answer = await peer.hello(session=welcome["session"], token=welcome["token"])
        assert answer["code"] == "terminated"
        assert "without saving it" in answer["message"]
        manager._sessions.update(live)  # (so that the manager still ends it)
        manager._all_gone = trio.Event()


async def test_concurrent_resumes_bring_one_session_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three resumes of one passivated session at once are all welcomed and bring it back once."""
    starts: list[str] = []

    async def app(session: statesession.Session) -> None:
        starts.append(session.id)
        async for message in session:
            await session.send(message.data)

    async with serving(app) as served:
        _, welcome = await served.new_session()
        served.manager.passivate(welcome["session"])
        await served.manager.sessions[welcome["session"]]._wait_gone()
        peers = [await served.peer() for _ in range(3)]
        for peer in peers:
            await peer.send(
                {"type": "hello", "v": 1, "session": welcome["session"], "token": welcome["token"]}
            )
        answers = [await peer.receive() for peer in peers]
        assert [a["type"] for a in answers] == ["welcome"] * 3
        assert len(served.manager) == 1
        assert starts == [welcome["session"]] * 2  # created once, brought back once


async def test_a_session_that_cannot_be_saved_is_terminated_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A session whose save fails on passivation is terminated (passivation_failed, with the
    error) and its resources are closed."""

    class Failing(MemoryStore):
        async def save(self, snapshot: statesession.Snapshot) -> None:
            raise OSError("disk full")

    closed: list[str] = []
    async with serving(counter_app(closed), store=Failing()) as served:
        _, welcome = await served.new_session()
        session = served.manager.sessions[welcome["session"]]
        served.manager.passivate(welcome["session"])
        report = await session.wait_terminated()
        assert session.state == "terminated"
        assert report is not None
        assert report.reason == "passivation_failed"
        assert report.error == "OSError: disk full"
        assert closed == [f"closed {welcome['session']}"]


async def test_a_session_whose_data_is_not_json_fails_alone(
    tmp_path: Path, thread_clock: trio.testing.MockClock
) -> None:
    """Data that cannot be saved ends its own session with a clear error; the others in
    the same write are saved and come back."""

    started = 0

    async def app(session: statesession.Session) -> None:
        nonlocal started
        started += 1
        session.data["value"] = {1, 2} if started == 1 else "fine"  # a set is not JSON
        async for _ in session:
            pass

    async with (
        statesession.open_store(tmp_path / "s.db") as store,
        serving(app, store=store) as served,
    ):
        _, bad = await served.new_session()
        _, good = await served.new_session()
        bad_session = served.manager.sessions[bad["session"]]
        served.manager.passivate(bad["session"])
        served.manager.passivate(good["session"])
        report = await bad_session.wait_terminated()
        assert report is not None
        assert report.reason == "passivation_failed"
        assert report.error is not None
        assert "session.data of session" in report.error
        assert "must be JSON" in report.error
        await store.flush()
        assert (await store.load(good["session"])) is not None
        back = await resume(served, good, ack=0)
        await back.aclose()


async def test_the_event_log_records_transitions_and_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With log_messages the log holds each transition and each message in and out, and the
    record ends terminated by bye with no snapshot."""
    store = MemoryStore(log_messages=True)
    async with serving(counter_app([]), store=store) as served:
        peer, welcome = await served.new_session()
        await peer.send({"type": "msg", "seq": 1, "data": "x"})
        await peer.receive_type("msg")
        await peer.send({"type": "bye"})
        await served.manager.sessions[welcome["session"]].wait_terminated()
    history = await store.history(welcome["session"])
    transitions = [(e.source, e.target) for e in history if e.kind == "transition"]
    assert transitions == [
        ("initializing", "active"),
        ("active", "terminating"),
        ("terminating", "terminated"),
    ]
    messages = [(e.event, json.loads(e.detail or "")) for e in history if e.kind == "message"]
    assert messages[0] == ("in", {"client": welcome["client"], "seq": 1, "data": "x"})
    assert messages[1][0] == "out"
    assert messages[1][1]["data"] == "x:0:turn1"
    record = await store.record(welcome["session"])
    assert record is not None
    assert (record.state, record.reason, record.snapshot) == ("terminated", "bye", False)


async def test_passivated_sessions_leave_no_task_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Passivated sessions leave none of their tasks alive, their own started tasks included."""

    async def app(session: statesession.Session) -> None:
        for _ in range(5):
            session.start_soon(trio.sleep_forever)
        async for _ in session:
            pass

    async with serving(app) as served:
        await trio.testing.wait_all_tasks_blocked()
        baseline = len(live_tasks())
        sessions = [await served.new_session() for _ in range(10)]
        for _, welcome in sessions:
            served.manager.passivate(welcome["session"])
        with trio.fail_after(60):
            while len(served.manager):  # noqa: ASYNC110
                await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked()
        for _, welcome in sessions:
            assert session_tasks(welcome["session"]) == []
        # what is left are the test's own serve_channel tasks for the closed connections
        assert len(live_tasks()) <= baseline + 10


async def test_passivation_keeps_untaken_messages_of_a_forgotten_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A message taken into the inbox from a client the session has since forgotten (away
    longer than the window while another client kept it active) reaches the app after a
    passivation and a resume, as it would had the session stayed in memory."""
    gate = trio.Event()
    taken: list[Any] = []

    async def gated(session: statesession.Session) -> None:
        await gate.wait()
        async for message in session:
            taken.append(message.data)

    config = SessionConfig(reconnect_window=1, heartbeat_interval=1, heartbeat_timeout=30)
    async with serving(gated, config=config) as served:
        _staying, welcome = await served.new_session()
        leaving = await served.peer()
        joined = await leaving.hello(session=welcome["session"], token=welcome["token"])
        assert joined["type"] == "welcome"
        await leaving.send({"type": "msg", "seq": 1, "data": "from the one who left"})
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(leaving.channel, MemoryChannel)
        leaving.channel.cut()
        await trio.sleep(3)  # the session forgets the client that left
        session = served.manager.sessions[welcome["session"]]
        assert joined["client"] not in session._delivery.clients
        assert served.manager.passivate(welcome["session"])
        await session._wait_gone()
        await resume(served, welcome, ack=0)
        gate.set()
        await trio.sleep(1)
        assert taken == ["from the one who left"]
