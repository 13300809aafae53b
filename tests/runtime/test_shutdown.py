"""Shutting down: it goes through each session's actor and chart (no stale reading of a
state from outside), loses no session being brought back, is not held by a late resume,
says goodbye even when the code around the manager is cancelled, and is bounded."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

import statesession
from statesession import Channel, MemoryStore, SessionConfig
from statesession.testing import MemoryChannel, memory_channel_pair

from ..helpers import RawPeer, echo_app, serving

CONFIG = SessionConfig(reconnect_window=30, send_timeout=2, cleanup_timeout=3)


def resume_frame(welcome: dict[str, Any]) -> str:
    return json.dumps(
        {
            "type": "hello",
            "v": 1,
            "session": welcome["session"],
            "token": welcome["token"],
            "client": welcome["client"],
            "resume": True,
        }
    )


async def passivated_session(store: MemoryStore) -> dict[str, Any]:
    """A session created, then saved to ``store`` by a manager that stopped."""
    async with serving(config=CONFIG, store=store) as served:
        _, welcome = await served.new_session()
    assert welcome["session"] in store._snapshots
    return welcome


async def test_shutdown_while_a_session_is_being_brought_back_keeps_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A session being rehydrated when the server stops is saved again, not destroyed: the
    next server brings it back."""
    store = MemoryStore()
    welcome = await passivated_session(store)
    setup_started = trio.Event()

    async def slow_setup(session: statesession.Session) -> None:
        setup_started.set()
        await trio.sleep(100)

    async with serving(config=CONFIG, store=store, setup=slow_setup) as served:
        peer = await served.peer()
        await peer.send(resume_frame(welcome))
        await setup_started.wait()
        (session,) = served.manager.sessions.values()
        assert session.state == "initializing"
    assert session.state == "passivated"
    assert welcome["session"] in store._snapshots
    async with serving(config=CONFIG, store=store) as served:
        again = await served.peer()
        await again.send(resume_frame(welcome))
        assert (await again.receive())["type"] == "welcome"


async def test_snapshot_is_dropped_only_once_the_session_is_active(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While a session is being brought back (setup running) the store still holds its
    snapshot; once it is active, the snapshot is dropped."""
    store = MemoryStore()
    welcome = await passivated_session(store)
    release = trio.Event()

    async def setup(session: statesession.Session) -> None:
        await release.wait()

    async with serving(config=CONFIG, store=store, setup=setup) as served:
        peer = await served.peer()
        await peer.send(resume_frame(welcome))
        await trio.testing.wait_all_tasks_blocked()
        assert welcome["session"] in store._snapshots
        release.set()
        assert (await peer.receive())["type"] == "welcome"
        await trio.testing.wait_all_tasks_blocked()
        assert welcome["session"] not in store._snapshots


async def test_resume_just_before_shutdown_does_not_hold_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A session brought back from the store just before the server began to stop (its
    actor has not run yet) does not hold shutdown for a reconnect window: it is saved
    again, for server_shutdown, not window_expired."""
    store = MemoryStore()
    welcome = await passivated_session(store)
    async with statesession.open_manager(echo_app, config=CONFIG, store=store) as manager:
        # What a resume's handshake does; the manager is left right after, with no
        # checkpoint in between, so the session's actor has not started yet.
        await manager._rehydrate(welcome["session"], welcome["token"], None)
        begun = trio.current_time()
    assert trio.current_time() - begun < CONFIG.reconnect_window
    assert welcome["session"] in store._snapshots
    record = await store.record(welcome["session"])
    assert record is not None
    assert (record.state, record.reason) == ("passivated", "server_shutdown")


async def test_cancelling_around_the_manager_still_says_goodbye(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When the code around open_manager is cancelled, attached clients are still sent
    their last frame (the writers are not cancelled with it)."""
    async with trio.open_nursery() as transports:
        server_side, client_side = memory_channel_pair()
        peer = RawPeer(client_side)
        with trio.CancelScope() as around:
            async with statesession.open_manager(echo_app, config=CONFIG) as manager:
                transports.start_soon(manager.serve_channel, server_side)
                assert (await peer.hello())["type"] == "welcome"
                around.cancel()
                await trio.sleep_forever()
        frames = []
        with trio.move_on_after(5):
            while True:
                try:
                    frames.append(json.loads(await client_side.receive()))
                except statesession.ChannelError:
                    break
        assert {"type": "closed", "reason": "server_shutdown"} in frames


class RecordingChannel(Channel):
    """A memory channel that records how it was closed: with which error code, and
    whether its caller's deadline had already passed."""

    def __init__(self, inner: MemoryChannel, *, handshake: float = 0.0) -> None:
        self.inner = inner
        self.handshake = handshake
        self.closed_with: list[str | None] = []
        self.close_took: float | None = None

    async def send(self, frame: str) -> None:
        await self.inner.send(frame)

    async def receive(self) -> str | bytes:
        return await self.inner.receive()

    async def aclose(self, error: str | None = None) -> None:
        self.closed_with.append(error)
        begun = trio.current_time()
        try:
            # A close handshake that waits for a peer that never answers (as a WebSocket
            # close does), bounded only by the caller's deadline.
            await trio.sleep(self.handshake)
        finally:
            self.close_took = trio.current_time() - begun
            await self.inner.aclose()


async def test_shutdown_with_a_store_closes_with_server_shutdown_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a store, a connection told error server_shutdown is closed with that code (a
    WebSocket closes 4009), not as a normal close."""
    async with serving(config=CONFIG, store=MemoryStore()) as served:
        server_side, client_side = memory_channel_pair()
        recording = RecordingChannel(server_side)
        served.nursery.start_soon(served.manager.serve_channel, recording)
        peer = RawPeer(client_side)
        assert (await peer.hello())["type"] == "welcome"
    assert recording.closed_with == ["server_shutdown"]


async def test_goodbye_to_a_peer_that_does_not_read_is_bounded_by_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that stopped reading costs shutdown at most about send_timeout: once its
    connection is aborted, its channel is closed at once, not after another close
    handshake of its own."""
    async with serving(config=CONFIG) as served:
        server_side, client_side = memory_channel_pair(buffer=0)
        recording = RecordingChannel(server_side, handshake=60)
        served.nursery.start_soon(served.manager.serve_channel, recording)
        await client_side.send('{"type":"hello","v":1}')
        welcome = json.loads(await client_side.receive())
        session = served.manager.sessions[welcome["session"]]
        session.start_soon(session.send, "nobody reads this")
        await trio.testing.wait_all_tasks_blocked()
        begun = trio.current_time()
    assert trio.current_time() - begun <= CONFIG.send_timeout + 0.5
    assert recording.close_took is not None
    assert recording.close_took <= 0.5


async def test_refused_connection_is_let_go_quickly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A connection refused before its welcome (it never said hello) gets its error and
    its close within a short linger, not send_timeout twice over."""
    config = SessionConfig(handshake_timeout=1, send_timeout=10)
    async with serving(config=config) as served:
        server_side, client_side = memory_channel_pair()
        recording = RecordingChannel(server_side, handshake=60)
        begun = trio.current_time()
        await served.manager.serve_channel(recording)
        took = trio.current_time() - begun
        assert recording.closed_with == ["handshake_timeout"]
        assert took <= config.handshake_timeout + 2.5
        frame = json.loads(await client_side.receive())
        assert frame["code"] == "handshake_timeout"
