"""The cleanup report tells the truth: every task, resource and connection a session
held is accounted for, an overrun says so, and no step of the cascade is lost when
another interrupts it."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import statesession
from statesession import Channel, MemoryStore, Outcome, SessionConfig
from statesession.testing import memory_channel_pair

from ..helpers import RawPeer, serving

FAST = SessionConfig(cancel_grace=1.0, cleanup_timeout=2.0, send_timeout=1.0)


async def started_session(served: Any) -> tuple[RawPeer, statesession.Session]:
    peer, welcome = await served.new_session()
    await trio.testing.wait_all_tasks_blocked()
    return peer, served.manager.sessions[welcome["session"]]


@pytest.mark.parametrize("how", ["add_resource", "enter_resource"])
async def test_report_resource_taken_during_the_grace_period_is_closed_and_reported(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    """A task that, in its grace period, hands the session a resource does not leak it:
    the cascade closes it with the others and the report lists it."""
    closed: list[str] = []

    class Late:
        async def __aenter__(self) -> str:
            return "late"

        async def __aexit__(self, *exc: object) -> None:
            closed.append("late")

    async def finisher(session: statesession.Session) -> None:
        async for _ in session:  # ends when the session starts terminating
            pass
        if how == "add_resource":
            session.add_resource("late", lambda: closed.append("late"))
        else:
            await session.enter_resource("late", Late())

    async def app(session: statesession.Session) -> None:
        session.add_resource("early", lambda: closed.append("early"))
        session.start_soon(finisher, session, name="finisher")
        await trio.sleep_forever()  # cancelled after the grace period

    async with serving(app, config=FAST) as served:
        _, session = await started_session(served)
        session.terminate("admin")
        report = await session.wait_terminated()
    assert report is not None
    assert closed == ["late", "early"]
    assert [(i.name, i.outcome) for i in report.resources] == [
        ("late", Outcome.CLOSED),
        ("early", Outcome.CLOSED),
    ]
    assert session.state == "terminated"


@pytest.mark.parametrize("trick", ["shield", "swallow"])
async def test_report_close_that_overran_is_forced(
    autojump_clock: trio.testing.MockClock, trick: str
) -> None:
    """A close that runs past its timeout -- because it shields itself, or swallows the
    cancellation -- is reported forced, with its real duration, and its force runs."""
    forced: list[str] = []

    async def close() -> None:
        if trick == "shield":
            with trio.CancelScope(shield=True):
                await trio.sleep(5)
        else:
            try:
                await trio.sleep(5)
            except trio.Cancelled:
                return

    async def app(session: statesession.Session) -> None:
        session.add_resource(
            "stubborn", close, force=lambda: forced.append("stubborn"), cleanup_timeout=1.0
        )
        await trio.sleep_forever()

    async with serving(app, config=FAST) as served:
        _, session = await started_session(served)
        session.terminate("admin")
        report = await session.wait_terminated()
    assert report is not None
    (item,) = report.resources
    assert item.outcome is Outcome.FORCED
    assert item.duration >= 1.0
    assert forced == ["stubborn"]


class StuckChannel(Channel):
    """A channel whose peer reads nothing and whose receive ignores cancellation for a
    while (a transport with a bug): aborting it does not end it at once."""

    def __init__(self, inner: Channel, stuck_for: float) -> None:
        self.inner = inner
        self.stuck_for = stuck_for
        self.aborted = trio.Event()

    async def send(self, frame: str) -> None:
        if frame.startswith('{"type":"welcome"'):
            await self.inner.send(frame)
            return
        await trio.sleep_forever()  # the peer stopped reading

    async def receive(self) -> str | bytes:
        try:
            return await self.inner.receive()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await trio.sleep(self.stuck_for)
            raise

    async def aclose(self, error: str | None = None) -> None:
        await self.inner.aclose()


async def test_report_connection_that_would_not_go_is_a_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A session never reaches terminated with a connection still attached: one that does
    not detach within cleanup_timeout after being aborted is reported failed, and the
    session goes to error."""
    async with serving(config=FAST) as served:
        server_side, client_side = memory_channel_pair()
        stuck = StuckChannel(server_side, stuck_for=30.0)
        served.nursery.start_soon(served.manager.serve_channel, stuck)
        peer = RawPeer(client_side)
        welcome = await peer.hello()
        session = served.manager.sessions[welcome["session"]]
        session.terminate("admin")
        report = await session.wait_terminated()
        assert report is not None
        assert session.state == "error"
        (item,) = report.connections
        assert item.outcome is Outcome.FAILED
        assert "still attached" in (item.error or "")
        assert not report.clean


async def test_report_shielded_setup_does_not_hold_termination(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A setup hook that shields itself from cancellation holds termination for at most
    cleanup_timeout; the report names it as a task that did not stop."""
    setup_started = trio.Event()

    async def setup(session: statesession.Session) -> None:
        setup_started.set()
        with trio.CancelScope(shield=True):
            await trio.sleep(100)

    async with serving(config=FAST, setup=setup) as served:
        peer = await served.peer()
        await peer.send({"type": "hello", "v": 1})
        await setup_started.wait()
        (session,) = served.manager.sessions.values()
        begun = trio.current_time()
        session.terminate("admin")
        report = await session.wait_terminated()
        assert trio.current_time() - begun <= FAST.cleanup_timeout + FAST.send_timeout
        assert report is not None
        (item,) = [i for i in report.tasks if i.name == "setup"]
        assert item.outcome is Outcome.FAILED
        assert session.state == "error"


class SlowSaveStore(MemoryStore):
    """A memory store whose save waits until released (a slow disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.saving = trio.Event()
        self.release = trio.Event()

    async def save(self, snapshot: statesession.Snapshot) -> None:
        self.saving.set()
        await self.release.wait()
        await super().save(snapshot)


async def test_report_terminate_during_passivation_keeps_its_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A terminate that interrupts a passivation while it saves still reports the tasks
    the passivation stopped and every resource, once each."""
    store = SlowSaveStore()
    closes: list[str] = []

    async def app(session: statesession.Session) -> None:
        session.add_resource("db", lambda: closes.append("db"))
        session.start_soon(trio.sleep_forever, name="worker")
        await trio.sleep_forever()

    async with serving(app, config=FAST, store=store) as served:
        _, session = await started_session(served)
        served.manager.passivate(session.id)
        await store.saving.wait()
        session.terminate("admin")
        report = await session.wait_terminated()
    assert report is not None
    names = sorted(i.name for p in report.passes() for i in p.tasks)
    assert names == ["app", "worker"]
    assert [i.name for p in report.passes() for i in p.resources] == ["db"]
    assert closes == ["db"]


async def test_report_wait_terminated_after_a_retry_waits_for_the_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """terminate() on a session in error, then wait_terminated(), returns the retry's
    report (which links the first pass), not the first pass's."""
    attempts: list[int] = []

    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("not yet")

    async def app(session: statesession.Session) -> None:
        session.add_resource("flaky", flaky)
        await trio.sleep_forever()

    async with serving(app, config=FAST) as served:
        _, session = await started_session(served)
        session.terminate("admin")
        first = await session.wait_terminated()
        assert session.state == "error"
        session.terminate("retry")
        second = await session.wait_terminated()
        assert second is not first
        assert second is not None
        assert second.previous is first
        assert session.state == "terminated"


async def test_report_connection_items_are_clean_for_a_polite_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that reads its goodbye leaves no connection item failed."""
    async with serving(config=FAST) as served:
        peer, session = await started_session(served)
        session.terminate("admin")
        assert (await peer.receive_type("closed"))["reason"] == "admin"
        report = await session.wait_terminated()
        assert report is not None
        assert report.clean
        assert all(i.outcome is not Outcome.FAILED for i in report.connections)
