"""Observers: every event reaches the observers that take it, in order, and one that
raises is logged without harming the session or the others."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import trio
import trio.testing

import statesession
from statesession import (
    CleanupReport,
    MemoryStore,
    ProtocolError,
    SessionObserver,
    SessionRecord,
)
from statesession.testing import MemoryChannel

from ..helpers import serving


class Recorder(SessionObserver):
    """Every event, as a tuple."""

    wants_messages = True

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def transition(self, session: Any, event: str, source: str, target: str) -> None:
        self.events.append(("transition", session.id, event, source, target))

    def attached(self, session: Any, client: str, peer: str, resumed: bool) -> None:
        self.events.append(("attached", session.id, client, resumed))

    def detached(self, session: Any, client: str, peer: str) -> None:
        self.events.append(("detached", session.id, client))

    def message(self, session: Any, direction: Literal["in", "out"], text: str) -> None:
        self.events.append(("message", session.id, direction, text))

    def refused(self, peer: str, error: ProtocolError) -> None:
        self.events.append(("refused", error.code))

    def resume(self, session_id: str, client: str | None, outcome: str) -> None:
        self.events.append(("resume", session_id, client, outcome))

    def cleanup_report(self, session: Any, report: CleanupReport) -> None:
        self.events.append(("cleanup_report", session.id, report.reason))

    def passivated(self, session: Any, reason: str) -> None:
        self.events.append(("passivated", session.id, reason))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] == kind]


def cut(peer: Any) -> None:
    assert isinstance(peer.channel, MemoryChannel)
    peer.channel.cut()


async def test_observer_told_every_kind_of_event(autojump_clock: trio.testing.MockClock) -> None:
    """An observer overriding every method is told of attaches, detaches, messages both
    ways, transitions, resume outcomes (resumed, joined, bad_token, unknown_session),
    refusals, a passivation with its cleanup report, and a termination's report."""
    recorder = Recorder()
    async with serving(store=MemoryStore()) as served:
        served.manager.add_observer(recorder)
        peer, welcome = await served.new_session()
        sid, client = welcome["session"], welcome["client"]
        await peer.send({"type": "msg", "seq": 1, "data": "hi"})
        assert (await peer.receive_type("msg"))["data"] == "hi"
        cut(peer)
        session = served.manager.sessions[sid]
        await trio.testing.wait_all_tasks_blocked()
        assert session.state == "reconnecting"
        _, answer = await served.resume(welcome, token="x" * 32)
        assert answer["code"] == "bad_token"
        _, answer = await served.resume(welcome, session="nosuchsession")
        assert answer["code"] == "unknown_session"
        _, answer = await served.resume(welcome, ack=1)
        assert answer["type"] == "welcome"
        _, answer = await served.resume(welcome, client="other", resume=False)
        assert answer["type"] == "welcome"
        versioned = await served.peer()
        assert (await versioned.hello(v=99))["code"] == "bad_version"
        assert served.manager.passivate(sid, reason="test")
        await session.wait_saved()

    assert recorder.of("attached") == [
        ("attached", sid, client, False),
        ("attached", sid, client, True),
        ("attached", sid, "other", False),
    ]
    assert recorder.of("detached")[0] == ("detached", sid, client)
    assert {("detached", sid, client), ("detached", sid, "other")} <= set(recorder.of("detached"))
    assert recorder.of("message") == [
        ("message", sid, "in", f'{{"client":"{client}","seq":1,"data":"hi"}}'),
        ("message", sid, "out", '{"type":"msg","seq":1,"data":"hi"}'),
    ]
    assert recorder.of("resume") == [
        ("resume", sid, client, "bad_token"),
        ("resume", "nosuchsession", client, "unknown_session"),
        ("resume", sid, client, "resumed"),
        ("resume", sid, "other", "joined"),
    ]
    assert [code for _, code in recorder.of("refused")] == [
        "bad_token",
        "unknown_session",
        "bad_version",
    ]
    assert recorder.of("passivated") == [("passivated", sid, "test")]
    assert recorder.of("cleanup_report") == [("cleanup_report", sid, "passivated (test)")]
    assert [e[2:] for e in recorder.of("transition")] == [
        ("activate", "initializing", "active"),
        ("detach", "active", "reconnecting"),
        ("attach", "reconnecting", "active"),
        ("passivate", "active", "passivated"),
    ]
    # Attaching is told after the attach, detaching after the detach.
    kinds = [event[0] for event in recorder.events]
    assert kinds.index("attached") < kinds.index("message")


async def test_observer_told_termination_report(autojump_clock: trio.testing.MockClock) -> None:
    """A session ended by its client's bye tells its cleanup report, after the
    transition into terminating and before the one into terminated."""
    recorder = Recorder()
    async with serving() as served:
        served.manager.add_observer(recorder)
        peer, welcome = await served.new_session()
        await peer.send({"type": "bye"})
        await peer.receive_type("closed")
        await served.manager.sessions[welcome["session"]].wait_terminated()
    kinds = [(e[0], e[-1]) for e in recorder.events if e[0] in ("transition", "cleanup_report")]
    assert kinds[-3:] == [
        ("transition", "terminating"),
        ("cleanup_report", "bye"),
        ("transition", "terminated"),
    ]


async def test_observer_methods_left_alone_are_never_called(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An observer is told only what it overrides, and messages only when it wants
    them: one overriding message() without wants_messages is never given a message."""
    calls: list[str] = []

    class Quiet(SessionObserver):
        def message(self, session: Any, direction: Literal["in", "out"], text: str) -> None:
            calls.append(text)

        def attached(self, session: Any, client: str, peer: str, resumed: bool) -> None:
            calls.append("attached")

    async with serving() as served:
        served.manager.add_observer(Quiet())
        peer, _ = await served.new_session()
        await peer.send({"type": "msg", "seq": 1, "data": "hi"})
        await peer.receive_type("msg")
    assert calls == ["attached"]


async def test_observer_that_raises_is_logged_and_the_rest_go_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An application observer that raises on every event is logged (naming it), and
    the session, the store's record and the observers after it are unaffected."""

    class Broken(SessionObserver):
        wants_messages = True

        def transition(self, *args: Any) -> None:
            raise RuntimeError("transition bug")

        def message(self, *args: Any) -> None:
            raise RuntimeError("message bug")

        def attached(self, *args: Any) -> None:
            raise RuntimeError("attached bug")

        def __repr__(self) -> str:
            return "<Broken>"

    recorder = Recorder()
    store = MemoryStore()
    async with serving(store=store) as served:
        served.manager.add_observer(Broken())
        served.manager.add_observer(recorder)
        peer, welcome = await served.new_session()
        await peer.send({"type": "msg", "seq": 1, "data": "hi"})
        assert (await peer.receive_type("msg"))["data"] == "hi"
        record = await store.record(welcome["session"])
    assert record is not None
    assert record.state == "active"
    assert len(recorder.of("message")) == 2
    assert recorder.of("attached")
    for what in ("transition", "message", "attached"):
        assert f"lifecycle observer <Broken> raised: {what} bug" in caplog.text


async def test_observer_store_recorder_comes_first(autojump_clock: trio.testing.MockClock) -> None:
    """The store has a session's record by the time an application observer is told of
    the transition that made it."""
    noted: dict[str, str] = {}

    class Noting(MemoryStore):
        def note(self, record: SessionRecord) -> None:
            noted[record.id] = record.state
            super().note(record)

    seen: list[str | None] = []

    def check(session: statesession.Session, event: str, source: str, target: str) -> None:
        seen.append(noted.get(session.id))

    async with serving(store=Noting()) as served:
        served.manager.add_observer(check)
        await served.new_session()
    assert seen[0] == "active"


async def test_observer_of_the_wrong_kind_is_refused() -> None:
    """add_observer refuses what is neither a SessionObserver nor callable, saying so."""
    async with serving() as served:
        with pytest.raises(TypeError, match="SessionObserver or a callable"):
            served.manager.add_observer(42)  # type: ignore[arg-type]
