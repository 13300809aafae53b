"""The store quota does not apply when the server stops: live sessions, and one being
brought back, are saved."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import statesession
from statesession import MemoryStore, SessionConfig

from ..helpers import serving


async def idle_app(session: statesession.Session) -> None:
    await trio.sleep_forever()


async def test_rehydration_cut_short_at_the_quota_keeps_the_snapshot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A session whose setup is running after a resume brought it back goes back to the
    store when the server stops, although the store is at its quota (the quota counts
    this very session)."""
    store = MemoryStore()
    setups = 0

    async def setup(session: statesession.Session) -> None:
        nonlocal setups
        setups += 1
        if setups > 1:  # the rehydration: still setting up when the server stops
            await trio.sleep_forever()

    config = SessionConfig(reconnect_window=5, max_stored_sessions=1)
    states: list[Any] = []
    async with serving(idle_app, config=config, store=store, setup=setup) as served:
        first, welcome = await served.new_session()
        session_id = welcome["session"]
        await first.aclose()
        await trio.sleep(10)  # the window expires: saved to the store
        assert session_id not in served.manager.sessions
        assert store.statistics().snapshots == 1
        back = await served.peer()
        await back.send(
            {
                "type": "hello",
                "v": 1,
                "session": session_id,
                "token": welcome["token"],
                "client": welcome["client"],
                "resume": True,
            }
        )
        await trio.testing.wait_all_tasks_blocked()
        states.append(served.manager.sessions[session_id].state)
    assert states == ["initializing"]
    record = await store.record(session_id)
    assert record is not None
    assert (record.state, record.snapshot) == ("passivated", True), record


async def test_shutdown_at_the_quota_saves_live_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a store, the server stopping passivates every live session (clients are told
    server_shutdown and may resume from the next server) -- the quota is documented to
    stop only window expiry and idle or admin passivations."""
    store = MemoryStore()
    config = SessionConfig(reconnect_window=5, max_stored_sessions=1)
    async with serving(idle_app, config=config, store=store) as served:
        gone, _first = await served.new_session()
        await gone.aclose()
        await trio.sleep(10)  # saved: the store is at its quota
        live, welcome = await served.new_session()
        session = served.manager.sessions[welcome["session"]]
        last_words: list[dict[str, Any]] = []

        async def listen() -> None:
            while True:
                frame = await live.receive(timeout=100)
                last_words.append(frame)
                if frame["type"] in ("error", "closed"):
                    return

        served.nursery.start_soon(listen)
        await trio.testing.wait_all_tasks_blocked()
    assert session.reason == "server_shutdown"
    assert session.state == "passivated", (session.state, last_words)
