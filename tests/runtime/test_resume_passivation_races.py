"""A hello that meets a passivation is answered: a wrong token at once, a resume once
the save is done or has failed."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import statesession
from statesession import MemoryStore, SessionConfig

from ..helpers import serving


def broken_close() -> None:
    raise RuntimeError("the sandbox would not stop")


async def unsavable_app(session: statesession.Session) -> None:
    session.add_resource("sandbox", broken_close)
    session.data["handle"] = object()  # not JSON: the save fails
    await trio.sleep_forever()


async def resume_during_failing_passivation(token_ok: bool) -> dict[str, Any] | None:
    config = SessionConfig(reconnect_window=30, cancel_grace=1.0)
    async with serving(unsavable_app, config=config, store=MemoryStore()) as served:
        _first, welcome = await served.new_session()
        session_id = welcome["session"]
        session = served.manager.sessions[session_id]
        await trio.testing.wait_all_tasks_blocked()
        assert served.manager.passivate(session_id)
        await trio.testing.wait_all_tasks_blocked()
        assert session.state == "passivated"  # saving: its app is in its grace period
        back = await served.peer()
        await back.send(
            {
                "type": "hello",
                "v": 1,
                "session": session_id,
                "token": welcome["token"] if token_ok else "x" * 32,
                "client": welcome["client"],
                "resume": True,
            }
        )
        answer: dict[str, Any] | None = None
        with trio.move_on_after(120):
            answer = await back.receive(timeout=1000)
        if token_ok:
            assert session.state == "error"  # passivation_failed, and the sandbox leaked
        served.manager.terminate(session_id)  # (let the test end)
        return answer


async def test_resume_during_a_failing_passivation_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A resume that waited for a save that failed is answered (terminated), not left
    waiting for ever."""
    answer = await resume_during_failing_passivation(token_ok=True)
    assert answer is not None
    assert answer["type"] == "error", answer


async def test_hello_with_a_wrong_token_is_not_held_by_a_passivation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A hello with a wrong token is refused bad_token at once (or at least answered),
    whatever the session is doing: knowing an id must not let anyone park connections on
    the server."""
    answer = await resume_during_failing_passivation(token_ok=False)
    assert answer is not None
    assert answer.get("code") == "bad_token", answer
