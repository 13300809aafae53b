"""A failure inside a session's actor (a bug in the runtime, not the app) still runs the
cleanup cascade: resources are closed, waiters are answered, the report says why."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import statesession
from statesession import Outcome
from statesession._runtime.connection import Connection

from ..helpers import serving, session_tasks


async def test_actor_job_failure_runs_the_cascade(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job of the actor that raises (here: attaching the first connection) terminates the
    session through its lifecycle: what setup registered is closed and reported, the client
    gets a fatal error instead of waiting for ever, and no task of the session is left."""
    closed: list[str] = []

    async def setup(session: statesession.Session) -> None:
        session.add_resource("sandbox", lambda: closed.append("sandbox"))

    def broken_attach(self: Connection, *args: object) -> None:
        raise RuntimeError("attach broke")

    monkeypatch.setattr(Connection, "attach", broken_attach)
    async with serving(setup=setup) as served:
        peer = await served.peer()
        answer = await peer.hello()
        assert answer["type"] == "error"
        assert answer["fatal"] is True
        await peer.expect_closed()
        await trio.testing.wait_all_tasks_blocked()
        assert len(served.manager) == 0
    assert closed == ["sandbox"]


async def test_actor_job_failure_is_in_the_report(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session that suffered an internal failure ends with reason internal_error and a
    report naming the exception; its resources are closed exactly once."""
    sessions: list[statesession.Session] = []
    closes: list[str] = []

    async def app(session: statesession.Session) -> None:
        sessions.append(session)
        session.add_resource("db", lambda: closes.append("db"))
        await trio.sleep_forever()

    async with serving(app) as served:
        peer, _ = await served.new_session()
        await trio.testing.wait_all_tasks_blocked()
        (session,) = sessions

        def fail() -> None:
            raise RuntimeError("a bug in a job")

        session._post(fail)
        report = await session.wait_terminated()
        assert report is not None
        assert session.reason == "internal_error"
        assert report.error is not None
        assert "a bug in a job" in report.error
        assert [(i.name, i.outcome) for i in report.resources] == [("db", Outcome.CLOSED)]
        assert await peer.receive_type("closed") == {"type": "closed", "reason": "internal_error"}
        await trio.testing.wait_all_tasks_blocked()
        assert session_tasks(session.id) == []
    assert closes == ["db"]
