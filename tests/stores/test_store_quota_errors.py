"""A store whose statistics() fails has no quota for the moment; attaches and resumes are
not touched by it."""

from __future__ import annotations

import trio
import trio.testing

import statesession
from statesession import MemoryStore, SessionConfig, StoreError, StoreStatistics

from ..helpers import serving


class UncountableStore(MemoryStore):
    """A working store whose statistics() cannot answer right now."""

    def statistics(self) -> StoreStatistics:
        raise StoreError("statistics backend unreachable")


async def idle_app(session: statesession.Session) -> None:
    await trio.sleep_forever()


async def test_attach_survives_a_store_whose_statistics_fail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A second client joining a live, active session is welcomed, and the session stays
    active, whatever statistics() raises (nothing is being saved)."""
    config = SessionConfig(reconnect_window=30)
    async with serving(idle_app, config=config, store=UncountableStore()) as served:
        _first, welcome = await served.new_session()
        session = served.manager.sessions[welcome["session"]]
        joiner = await served.peer()
        answer = await joiner.hello(session=welcome["session"], token=welcome["token"])
        await trio.testing.wait_all_tasks_blocked()
        state, reason = session.state, session.reason
    assert answer["type"] == "welcome", answer
    assert (state, reason) == ("active", None)


async def test_resume_survives_a_store_whose_statistics_fail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client resuming a reconnecting session (within its window) is welcomed back."""
    config = SessionConfig(reconnect_window=30)
    async with serving(idle_app, config=config, store=UncountableStore()) as served:
        first, welcome = await served.new_session()
        await first.aclose()
        await trio.sleep(1)
        back = await served.peer()
        answer = await back.hello(
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
            resume=True,
        )
    assert answer["type"] == "welcome", answer
