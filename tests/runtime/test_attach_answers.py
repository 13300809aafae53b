"""A session that is alive is attached, or its client is told to try again; only a
session gone for good is answered `terminated`. The Python client retries what the server
may lift later, and resends what the server never took."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

import statesession
from statesession import MemoryStore, SessionConfig, StoreError
from statesession.testing import MemoryChannel

from ..helpers import RawPeer, Served, serving

CONFIG = SessionConfig(reconnect_window=30, heartbeat_interval=10, heartbeat_timeout=30)


def resume_frame(welcome: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "hello",
        "v": 1,
        "session": welcome["session"],
        "token": welcome["token"],
        "client": welcome["client"],
        "resume": True,
    }


async def cut(peer: RawPeer) -> None:
    assert isinstance(peer.channel, MemoryChannel)
    peer.channel.cut()
    await trio.testing.wait_all_tasks_blocked()


async def test_busy_session_past_its_window_is_attached_not_terminated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A store-backed session kept past its reconnect window because its app is busy is
    alive: a resume attaches it."""
    release = trio.Event()

    async def busy_app(session: statesession.Session) -> None:
        with session.busy():
            await release.wait()
        await trio.sleep_forever()

    async with serving(busy_app, config=CONFIG, store=MemoryStore()) as served:
        peer, welcome = await served.new_session()
        await cut(peer)
        await trio.sleep(CONFIG.reconnect_window + 5)
        session = served.manager.sessions[welcome["session"]]
        assert session.state == "reconnecting"  # busy: not passivated
        again = await served.peer()
        answer = await again.hello(
            **{k: v for k, v in resume_frame(welcome).items() if k not in ("type", "v")}
        )
        assert answer["type"] == "welcome", answer
        assert session.state == "active"
        release.set()


async def test_resume_racing_a_passivation_is_attached_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A resume whose attach comes right after the session began to be saved waits for
    the save, brings the session back and is welcomed (never answered terminated)."""
    store = MemoryStore()
    async with serving(config=CONFIG, store=store) as served:
        peer, welcome = await served.new_session()
        await cut(peer)
        again = await served.open_channel()
        assert isinstance(again, MemoryChannel)
        # Deliver the hello and ask for the passivation in one step: the passivation's job
        # is queued before the attach the hello will ask for.
        again._send.send_nowait(json.dumps(resume_frame(welcome)))
        assert served.manager.passivate(welcome["session"])
        answer = json.loads(await again.receive())
        assert answer["type"] == "welcome", answer
        assert answer["resumed"] is True


class FlakyStore(MemoryStore):
    """A memory store whose loads fail until told otherwise (a store that is down)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def load(self, session_id: str) -> statesession.Snapshot | None:
        if self.down:
            await trio.lowlevel.checkpoint()
            raise StoreError("the database is locked")
        return await super().load(session_id)


async def test_store_failing_to_load_is_unavailable_not_terminated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A passivated session whose store cannot load it right now is answered unavailable
    (retryable); once the store is back the same resume is welcomed."""
    store = FlakyStore()
    async with serving(config=CONFIG, store=store) as served:
        _, welcome = await served.new_session()
        served.manager.passivate(welcome["session"])
        await trio.testing.wait_all_tasks_blocked()
        assert welcome["session"] not in served.manager.sessions
        store.down = True
        refused = await served.peer()
        await refused.send(resume_frame(welcome))
        answer = await refused.receive()
        assert (answer["code"], answer["fatal"]) == ("unavailable", True)
        store.down = False
        again = await served.peer()
        await again.send(resume_frame(welcome))
        assert (await again.receive())["type"] == "welcome"


async def test_full_server_answers_a_returning_session_unavailable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A passivated session that cannot come back because the server holds max_sessions is
    told unavailable (try again), not session_limit."""
    config = SessionConfig(max_sessions=1)
    async with serving(config=config, store=MemoryStore()) as served:
        _, first = await served.new_session()
        served.manager.passivate(first["session"])
        await trio.testing.wait_all_tasks_blocked()
        await served.new_session()  # the server is full again
        peer = await served.peer()
        await peer.send(resume_frame(first))
        answer = await peer.receive()
        assert (answer["code"], answer["fatal"]) == ("unavailable", True)
        assert "max_sessions" in answer["message"]


async def test_principal_at_its_limit_is_told_unavailable_for_a_returning_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A passivated session whose principal holds max_sessions_per_principal live sessions
    is told unavailable (try again), not session_limit; the resume succeeds once the
    principal has room."""
    config = SessionConfig(max_sessions_per_principal=1)
    async with serving(
        config=config, store=MemoryStore(), authenticate=lambda auth: str(auth)
    ) as served:
        first = await (await served.peer()).hello(auth="alice")
        served.manager.passivate(first["session"])
        await trio.testing.wait_all_tasks_blocked()
        other = await served.peer()
        second = await other.hello(auth="alice")  # alice is at her limit again
        assert second["type"] == "welcome"
        peer = await served.peer()
        await peer.send({**resume_frame(first), "auth": "alice"})
        answer = await peer.receive()
        assert (answer["code"], answer["fatal"]) == ("unavailable", True)
        assert "max_sessions_per_principal" in answer["message"]
        await other.send({"type": "bye"})
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(5)  # (its cleanup)
        again = await served.peer()
        await again.send({**resume_frame(first), "auth": "alice"})
        assert (await again.receive())["type"] == "welcome"


@asynccontextmanager
async def switchable(store: MemoryStore) -> AsyncIterator[dict[str, Any]]:
    """A connect() that reaches whichever manager is current."""
    current: dict[str, Any] = {}

    async def connect() -> statesession.Channel:
        served: Served = current["served"]
        return await served.open_channel()

    current["connect"] = connect
    yield current


async def test_open_client_rides_out_a_restart(autojump_clock: trio.testing.MockClock) -> None:
    """During a clean restart the client's first retry reaches the stopping server, which
    answers server_shutdown; the client tries again and resumes from the next server,
    without losing or repeating a message."""
    store = MemoryStore()
    slow_close = trio.Event()
    got: list[Any] = []

    async def app(session: statesession.Session) -> None:
        session.add_resource("slow", slow_close.wait, cleanup_timeout=20)
        async for message in session:
            await session.send(message.data)

    stop_first = trio.Event()

    async def first_server(current: dict[str, Any]) -> None:
        async with serving(app, config=CONFIG, store=store) as served:
            current["served"] = served
            await stop_first.wait()

    async with switchable(store) as current, trio.open_nursery() as outer:
        outer.start_soon(first_server, current)
        await trio.testing.wait_all_tasks_blocked()
        async with statesession.open_client(
            current["connect"], backoff=statesession.Backoff(initial=1, jitter=0)
        ) as client:
            await client.send("one")
            got.append(await client.receive())
            stop_first.set()  # the first server stops; its session's close is slow
            await trio.sleep(3)  # the client's retries reach the stopping server
            slow_close.set()
            await trio.testing.wait_all_tasks_blocked()
            async with serving(app, config=CONFIG, store=store) as second:
                current["served"] = second
                await client.send("two")
                with trio.fail_after(30):
                    got.append(await client.receive())
    assert got == ["one", "two"]


async def test_open_client_resends_what_a_passivated_session_never_took(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A session passivated while the client's message waited, untaken, in its inbox:
    the client does not go dormant holding it; the session comes back and takes it."""
    taken: list[Any] = []
    start = trio.Event()
    took = trio.Event()

    async def slow_app(session: statesession.Session) -> None:
        if not session.data.get("back"):
            session.data["back"] = True
            await start.wait()  # first life: never takes a message
        async for message in session:
            taken.append(message.data)
            took.set()

    async with serving(slow_app, config=CONFIG, store=MemoryStore()) as served:

        async def connect() -> statesession.Channel:
            return await served.open_channel()

        async with statesession.open_client(connect) as client:
            await client.send("please")
            await trio.testing.wait_all_tasks_blocked()
            assert client.session_id is not None
            served.manager.passivate(client.session_id)
            with trio.fail_after(60):  # virtual time: a dormant client never sends it
                await took.wait()
    assert taken == ["please"]


class StuckStore(MemoryStore):
    """A memory store whose writes never become durable (a disk that stopped)."""

    async def flush(self) -> None:
        await trio.sleep_forever()


async def test_shutdown_with_a_store_that_cannot_write_is_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Leaving open_manager with a store that keeps failing to write returns after
    cleanup_timeout instead of waiting for the store for ever."""
    config = SessionConfig(cleanup_timeout=5)
    async with serving(config=config, store=StuckStore()) as served:
        await served.new_session()
        begun = trio.current_time()
    assert trio.current_time() - begun <= config.cleanup_timeout + config.send_timeout
