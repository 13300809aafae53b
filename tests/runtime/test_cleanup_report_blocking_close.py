"""A close that overran its timeout without ever reaching a checkpoint is reported forced,
and its force runs."""

from __future__ import annotations

import trio
import trio.testing

import statesession
from statesession import SessionConfig

from ..helpers import serving


async def test_sync_close_that_overran_is_reported_forced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sync close that takes 20 s against a 1 s timeout is reported forced (with its
    duration), and its force runs."""
    forced: list[str] = []

    def slow_close() -> None:
        autojump_clock.jump(20)  # blocks the thread for 20 s (as time.sleep would)

    async def app(session: statesession.Session) -> None:
        session.add_resource(
            "blocking", slow_close, force=lambda: forced.append("blocking"), cleanup_timeout=1
        )
        await session.receive()

    async with serving(app, config=SessionConfig(cancel_grace=0.1)) as served:
        _, welcome = await served.new_session()
        session = served.manager.sessions[welcome["session"]]
        await trio.testing.wait_all_tasks_blocked()
        session.terminate("admin")
        report = await session.wait_terminated()
    assert report is not None
    (item,) = report.resources
    assert item.duration >= 20
    assert (item.outcome.value, forced) == ("forced", ["blocking"]), item
