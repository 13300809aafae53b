"""The session runtime: owned tasks, resources, the cleanup cascade, windows, heartbeats."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import statesession
from statesession import Outcome, SessionClosedError, SessionConfig
from statesession.testing import FaultyChannel, MemoryChannel, memory_channel_pair

from ..helpers import RawPeer, Served, echo_app, live_tasks, serving, session_tasks

FAST = SessionConfig(cancel_grace=0.5, cleanup_timeout=2.0)


async def only_session(served: Served) -> statesession.Session:
    await trio.testing.wait_all_tasks_blocked()
    (session,) = served.manager.sessions.values()
    return session


async def test_session_welcome_and_echo(autojump_clock: trio.testing.MockClock) -> None:
    """A new session is welcomed with its id, a secret token, and the server's timings."""
    async with serving() as served:
        peer, welcome = await served.new_session()
        assert welcome["v"] == 1
        assert welcome["resumed"] is False
        assert welcome["state"] == "active"
        assert welcome["ack"] == 0
        assert (welcome["heartbeat"], welcome["window"]) == (10.0, 30.0)
        assert len(welcome["token"]) >= 32  # 24 random bytes, url-safe base64
        await peer.send({"type": "msg", "seq": 1, "data": {"q": "hi"}})
        assert await peer.receive_type("msg") == {"type": "msg", "seq": 1, "data": {"q": "hi"}}
        session = served.manager.sessions[welcome["session"]]
        assert session.state == "active"
        assert session.statistics().received_messages == 1


async def test_session_terminated_leaves_no_task_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After terminated, no task the session started is alive (walking trio's task tree),
    and the report accounts for every one of them."""
    started = trio.Event()

    async def app(session: statesession.Session) -> None:
        for i in range(5):
            session.start_soon(trio.sleep_forever, name=f"worker-{i}")

        async def polite() -> None:
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(0.1)

        session.start_soon(polite)
        started.set()
        async for _ in session:
            pass

    async with serving(app, config=FAST) as served:
        peer, welcome = await served.new_session()
        await started.wait()
        session = served.manager.sessions[welcome["session"]]
        assert len(session_tasks(session.id)) == 8  # actor, app, 6 workers
        await peer.send({"type": "bye"})
        assert await peer.receive_type("closed") == {"type": "closed", "reason": "bye"}
        report = await session.wait_terminated()
        await trio.testing.wait_all_tasks_blocked()
        assert session.state == "terminated"
        assert session_tasks(session.id) == []
        assert report is not None
        assert report.clean
        outcomes = {item.name: item.outcome for item in report.tasks}
        assert outcomes["app"] is Outcome.CLOSED
        assert {outcomes[f"worker-{i}"] for i in range(5)} == {Outcome.FORCED}
        (polite,) = [name for name in outcomes if name.endswith("polite")]
        assert outcomes[polite] is Outcome.FORCED
        assert session.id not in served.manager.sessions


async def test_session_resources_close_in_reverse_with_each_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Resources close newest first, each under its own timeout: the one that overruns is
    forced, the one that raises fails, and a failure sends the session to error."""
    closed: list[str] = []
    forced: list[str] = []

    async def app(session: statesession.Session) -> None:
        async def slow() -> None:
            closed.append("slow")
            await trio.sleep(100)

        def broken() -> None:
            closed.append("broken")
            raise OSError("disk on fire")

        async def fine() -> None:
            closed.append("fine")

        session.add_resource("fine", fine)
        session.add_resource(
            "slow", slow, force=lambda: forced.append("slow"), cleanup_timeout=1.0
        )
        session.add_resource("broken", broken)
        session.add_resource("sync", lambda: closed.append("sync"))
        session.terminate("admin")
        await trio.sleep_forever()

    async with serving(app, config=FAST) as served:
        _, welcome = await served.new_session()
        session = served.manager.sessions.get(welcome["session"]) or None
        assert session is not None
        report = await session.wait_terminated()
        assert report is not None
        assert closed == ["sync", "broken", "slow", "fine"]
        assert forced == ["slow"]
        items = {item.name: item for item in report.resources}
        assert [i.name for i in report.resources] == ["sync", "broken", "slow", "fine"]
        assert items["sync"].outcome is Outcome.CLOSED
        assert items["broken"].outcome is Outcome.FAILED
        assert items["broken"].error == "OSError: disk on fire"
        assert items["slow"].outcome is Outcome.FORCED
        assert items["slow"].duration == pytest.approx(1.0)
        assert items["fine"].outcome is Outcome.CLOSED
        assert not report.clean
        assert session.state == "error"
        assert report.reason == "admin"


async def test_session_task_that_outlives_cancellation_fails_the_cleanup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A task still running after cancellation plus cleanup_timeout is reported failed;
    the manager still shuts the session down once it ends."""

    async def stubborn() -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(60)

    async def app(session: statesession.Session) -> None:
        session.start_soon(stubborn)
        async for _ in session:
            pass

    async with serving(app, config=FAST) as served:
        peer, welcome = await served.new_session()
        session = served.manager.sessions[welcome["session"]]
        await peer.send({"type": "bye"})
        report = await session.wait_terminated()
        assert report is not None
        (item,) = [i for i in report.tasks if i.name.endswith("stubborn")]
        assert item.outcome is Outcome.FAILED
        assert item.error == "still running after cancellation"
        assert session.state == "error"
    assert session_tasks(session.id) == []


async def test_session_app_crash_ends_only_that_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An app that raises terminates its own session (reason app_error); the others keep
    working and nothing reaches the manager."""

    async def app(session: statesession.Session) -> None:
        async for message in session:
            if message.data == "crash":
                raise ValueError("boom")
            await session.send(message.data)

    async with serving(app, config=FAST) as served:
        victim, victim_welcome = await served.new_session()
        bystander, _ = await served.new_session()
        await victim.send({"type": "msg", "seq": 1, "data": "crash"})
        assert await victim.receive_type("closed") == {"type": "closed", "reason": "app_error"}
        session = served.manager.sessions.get(victim_welcome["session"])
        if session is not None:
            await session.wait_terminated()
        await bystander.send({"type": "msg", "seq": 1, "data": "still here"})
        assert (await bystander.receive_type("msg"))["data"] == "still here"
        assert len(served.manager) == 1


async def test_session_failed_task_reports_the_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A background task that raises terminates the session with reason task_failed, and
    the report names the error."""
    sessions: list[statesession.Session] = []

    async def app(session: statesession.Session) -> None:
        sessions.append(session)

        async def fails() -> None:
            raise KeyError("missing")

        session.start_soon(fails)
        await trio.sleep_forever()

    async with serving(app, config=FAST) as served:
        peer, _ = await served.new_session()
        assert await peer.receive_type("closed") == {"type": "closed", "reason": "task_failed"}
        report = await sessions[0].wait_terminated()
        assert report is not None
        assert report.error == "KeyError: 'missing'"
        assert sessions[0].state == "terminated"


async def test_session_app_returning_completes_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An app that returns completes its session: its last message, then closed completed, then
    the channel closes."""

    async def app(session: statesession.Session) -> None:
        await session.send("bye now")

    async with serving(app) as served:
        peer, _ = await served.new_session()
        assert (await peer.receive_type("msg"))["data"] == "bye now"
        assert await peer.receive_type("closed") == {"type": "closed", "reason": "completed"}
        await peer.expect_closed()


async def test_session_refuses_operations_once_terminating(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """start_soon and send raise SessionClosedError once terminating; add_resource still
    takes a resource (closed and reported with the others) until the cleanup has closed
    them, and raises after that."""
    errors: list[str] = []
    closed: list[str] = []
    sessions: list[statesession.Session] = []

    async def app(session: statesession.Session) -> None:
        sessions.append(session)
        try:
            async for _ in session:
                pass
        finally:
            for attempt in (
                lambda: session.start_soon(trio.sleep, 1),
                lambda: session.add_resource("late", lambda: closed.append("late")),
            ):
                try:
                    attempt()
                except SessionClosedError as exc:
                    errors.append(exc.reason)
            try:
                await session.send("late")
            except SessionClosedError as exc:
                errors.append(exc.reason)

    async with serving(app) as served:
        peer, _ = await served.new_session()
        await peer.send({"type": "bye", "reason": "done"})
        await peer.receive_type("closed")
        (session,) = sessions
        report = await session.wait_terminated()
        assert report is not None
        assert [i.name for i in report.resources] == ["late"]
        with pytest.raises(SessionClosedError, match="takes no more"):
            session.add_resource("too late", lambda: None)
    assert errors == ["bye", "bye"]
    assert closed == ["late"]


async def test_session_enter_resource_exits_the_context_manager(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """enter_resource enters the context manager, gives the app its value, and exits it when the
    session terminates."""
    log: list[str] = []

    class Sandbox:
        async def __aenter__(self) -> str:
            log.append("enter")
            return "sandbox-1"

        async def __aexit__(self, *exc: object) -> None:
            log.append("exit")

    async def app(session: statesession.Session) -> None:
        value = await session.enter_resource("sandbox", Sandbox())
        await session.send(value)
        async for _ in session:
            pass

    async with serving(app) as served:
        peer, _ = await served.new_session()
        assert (await peer.receive_type("msg"))["data"] == "sandbox-1"
        await peer.send({"type": "bye"})
        await peer.receive_type("closed")
    assert log == ["enter", "exit"]


@pytest.mark.parametrize(
    ("hooks", "reason"),
    [
        ({"setup": "raise"}, "setup_failed"),
        ({"health_check": False}, "health_check_failed"),
    ],
)
async def test_session_activation_needs_setup_and_health(
    autojump_clock: trio.testing.MockClock, hooks: dict[str, Any], reason: str
) -> None:
    """A session whose allocation fails or whose health check fails never becomes active;
    its client is refused and what setup registered is cleaned up."""
    cleaned: list[str] = []
    ran: list[str] = []

    async def setup(session: statesession.Session) -> None:
        session.add_resource("scratch", lambda: cleaned.append("scratch"))
        if hooks.get("setup") == "raise":
            raise RuntimeError("no sandbox available")

    async def health_check(session: statesession.Session) -> bool:
        return bool(hooks.get("health_check", True))

    async def app(session: statesession.Session) -> None:
        ran.append("app")

    async with serving(app, setup=setup, health_check=health_check) as served:
        peer = await served.peer()
        error = await peer.hello()
        assert error["type"] == "error"
        assert error["code"] == "terminated"
        assert reason in error["message"]
        assert error["fatal"] is True
        await peer.expect_closed()
        await trio.testing.wait_all_tasks_blocked()
        assert len(served.manager) == 0
    assert cleaned == ["scratch"]
    assert ran == []


async def test_session_resumes_within_the_window_with_replay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A cut connection leaves the session reconnecting; resuming with the token within
    the window replays every message above the client's ack, in order."""

    async def app(session: statesession.Session) -> None:
        async for message in session:
            for i in range(3):
                await session.send(f"{message.data}-{i}")

    async with serving(app) as served:
        peer, welcome = await served.new_session()
        session = served.manager.sessions[welcome["session"]]
        await peer.send({"type": "msg", "seq": 1, "data": "a"})
        first = await peer.receive_type("msg")
        assert first["seq"] == 1
        assert isinstance(peer.channel, MemoryChannel)
        peer.channel.cut()
        await trio.testing.wait_all_tasks_blocked()
        assert session.state == "reconnecting"
        await trio.sleep(20)
        again = await served.peer()
        resumed = await again.hello(
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
            resume=True,
            ack=1,
        )
        assert resumed["resumed"] is True
        assert resumed["ack"] == 1
        assert [(await again.receive_type("msg"))["data"] for _ in range(2)] == ["a-1", "a-2"]
        assert session.state == "active"


async def test_session_replay_goes_out_in_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Resuming replays what is buffered with a few send_many calls of about BATCH_BYTES
    each, not one send per message, and in order."""
    from statesession._runtime.connection import BATCH_BYTES

    async def app(session: statesession.Session) -> None:
        async for message in session:
            for i in range(message.data):
                await session.send(f"{i:04d}" + "x" * 96)

    config = SessionConfig(buffer_messages=2000)
    async with serving(app, config=config) as served:
        peer, welcome = await served.new_session()
        await peer.send({"type": "msg", "seq": 1, "data": 1000})
        await peer.receive_type("msg")
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(peer.channel, MemoryChannel)
        peer.channel.cut()
        await trio.testing.wait_all_tasks_blocked()
        server_end, client_end = memory_channel_pair()
        batches: list[list[str]] = []

        class Batching(FaultyChannel):
            """Takes batches (as a transport that writes them at once does)."""

            async def send_many(self, frames: Any) -> None:
                batches.append(list(frames))
                await super().send_many(frames)

        served.nursery.start_soon(served.manager.serve_channel, Batching(server_end))
        again = RawPeer(client_end)
        await again.hello(
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
            resume=True,
            ack=0,
        )
        got = [(await again.receive_type("msg"))["data"] for _ in range(1000)]
        assert got == [f"{i:04d}" + "x" * 96 for i in range(1000)]
        replayed = [frame for batch in batches for frame in batch if '"msg"' in frame]
        assert len(replayed) == 1000
        assert len(batches) <= 4
        assert all(sum(map(len, batch)) < BATCH_BYTES + 200 for batch in batches)


async def test_session_send_timeout_bounds_each_send_not_their_sum(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sends that each take less than send_timeout keep the connection however long they
    add up to; one send that takes longer drops it."""
    config = SessionConfig(send_timeout=1.0, heartbeat_interval=60, heartbeat_timeout=120)
    async with serving(config=config) as served:
        server_end, client_end = memory_channel_pair()
        slow = FaultyChannel(server_end, delay=0.4)
        served.nursery.start_soon(served.manager.serve_channel, slow)
        peer = RawPeer(client_end)
        welcome = await peer.hello()
        session = served.manager.sessions[welcome["session"]]
        for seq in range(1, 11):
            await peer.send({"type": "msg", "seq": seq, "data": seq})
        echoed = [(await peer.receive_type("msg", timeout=30))["data"] for _ in range(10)]
        assert echoed == list(range(1, 11))
        assert session.statistics().connections == 1
        slow.delay = 2.0
        await peer.send({"type": "msg", "seq": 11, "data": 11})
        await trio.sleep(5)
        assert session.state == "reconnecting"
        assert session.statistics().connections == 0


async def test_session_idle_connection_holds_no_writer_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A connection's writer ends after WRITER_IDLE seconds with nothing to send; the
    next frame to send -- a message, a ping -- starts another, and nothing is lost."""
    from statesession._runtime.connection import WRITER_IDLE

    def writers() -> int:
        return sum("_write_loop" in task.name for task in live_tasks())

    config = SessionConfig(heartbeat_interval=10 * WRITER_IDLE, heartbeat_timeout=100.0)
    async with serving(config=config) as served:
        peer, _ = await served.new_session()
        await trio.testing.wait_all_tasks_blocked()
        assert writers() == 1
        await trio.sleep(WRITER_IDLE * 1.5)
        assert writers() == 0
        for seq in (1, 2, 3):
            await peer.send({"type": "msg", "seq": seq, "data": seq})
        assert [(await peer.receive_type("msg"))["data"] for _ in range(3)] == [1, 2, 3]
        assert writers() == 1
        await trio.sleep(WRITER_IDLE * 1.5)
        assert writers() == 0
        # The heartbeat's ping starts a writer too.
        await peer.receive_type("ping", timeout=20 * WRITER_IDLE)
        await peer.send({"type": "pong"})
        await trio.sleep(WRITER_IDLE * 1.5)
        assert writers() == 0


async def test_session_several_receivers_share_messages_and_cancelling_one_loses_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three tasks wait in receive at once (the first waits on its own, the others on a
    lot); each message goes to exactly one of them; a receive cancelled while waiting
    takes nothing with it."""
    got: list[tuple[int, Any]] = []
    cancelled = trio.Event()

    async def app(session: statesession.Session) -> None:
        with trio.move_on_after(1):
            await session.receive()  # cancelled while waiting: loses nothing
        cancelled.set()

        async def take(index: int) -> None:
            while True:
                got.append((index, (await session.receive()).data))

        for index in range(3):
            session.start_soon(take, index)
        await trio.sleep_forever()

    async with serving(app) as served:
        peer, _ = await served.new_session()
        await cancelled.wait()
        await trio.testing.wait_all_tasks_blocked()
        for seq in range(1, 31):
            await peer.send({"type": "msg", "seq": seq, "data": seq})
            if seq % 3 == 0:
                await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(data for _, data in got) == list(range(1, 31))
        assert {index for index, _ in got} == {0, 1, 2}


async def test_session_a_channel_bug_while_writing_ends_only_that_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A channel whose send raises something that is not a ChannelError (a transport's
    bug) ends its own connection -- the session waits to be resumed -- and nothing else:
    the manager and another session carry on."""

    class Buggy(FaultyChannel):
        async def send(self, frame: str) -> None:
            if '"type":"msg"' in frame:
                raise RuntimeError("a bug in a transport")
            await super().send(frame)

    async with serving() as served:
        bystander, _ = await served.new_session()
        server_end, client_end = memory_channel_pair()
        served.nursery.start_soon(served.manager.serve_channel, Buggy(server_end))
        victim = RawPeer(client_end)
        welcome = await victim.hello()
        session = served.manager.sessions[welcome["session"]]
        await victim.send({"type": "msg", "seq": 1, "data": "echo me"})
        await victim.expect_closed()
        await trio.testing.wait_all_tasks_blocked()
        assert session.state == "reconnecting"
        await bystander.send({"type": "msg", "seq": 1, "data": "fine"})
        assert (await bystander.receive_type("msg"))["data"] == "fine"


async def test_session_connection_cancelled_from_outside_closes_after_its_writer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The task serving a connection is cancelled (the server stops serving) while the
    connection's writer is stuck sending: the channel is closed only once the writer has
    stopped, never under a send in progress."""
    events: list[str] = []

    class Watched(FaultyChannel):
        async def send(self, frame: str) -> None:
            events.append("send begins")
            try:
                await super().send(frame)
            finally:
                events.append("send ends")

        async def aclose(self, error: str | None = None) -> None:
            events.append("aclose")
            await super().aclose(error)

    async with serving() as served:
        server_end, client_end = memory_channel_pair(buffer=0)
        peer = RawPeer(client_end)
        serving_scope = trio.CancelScope()

        async def serve() -> None:
            with serving_scope:
                await served.manager.serve_channel(Watched(server_end))

        served.nursery.start_soon(serve)
        await peer.hello()
        await peer.send({"type": "msg", "seq": 1, "data": "x"})
        await trio.sleep(0.5)  # the echo's send now waits: the client reads nothing
        assert events[-1] == "send begins"
        serving_scope.cancel()
        # The connection has send_timeout for its goodbye; then the writer is dropped.
        await trio.sleep(served.manager.config.send_timeout + 1)
        assert "aclose" in events
        assert "send ends" not in events[events.index("aclose") :]


async def test_session_window_expiry_terminates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Without a store, a session nobody resumes within the window is terminated, and a
    late resume is told so."""
    async with serving() as served:
        peer, welcome = await served.new_session()
        session = served.manager.sessions[welcome["session"]]
        assert isinstance(peer.channel, MemoryChannel)
        peer.channel.cut()
        report = await session.wait_terminated()
        assert session.state == "terminated"
        assert report is not None
        assert report.reason == "window_expired"
        assert trio.current_time() == pytest.approx(30.0, abs=0.1)
        late = await served.peer()
        error = await late.hello(session=welcome["session"], token=welcome["token"])
        assert error["code"] == "terminated"
        assert "window_expired" in error["message"]


async def test_session_heartbeat_pings_idle_peers_and_drops_silent_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An idle peer is pinged every interval; one that answers stays, one that stays
    silent past the timeout is dropped and the session goes to reconnecting."""
    async with serving() as served:
        lively, _ = await served.new_session()
        silent, welcome = await served.new_session()
        quiet_session = served.manager.sessions[welcome["session"]]

        async def answer_pings() -> None:
            while True:
                frame = await lively.receive(timeout=100)
                if frame["type"] == "ping":
                    await lively.send({"type": "pong"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_pings)
            assert (await silent.receive(timeout=11))["type"] == "ping"
            assert trio.current_time() == pytest.approx(10.0, abs=0.1)
            await silent.expect_closed(timeout=25)
            assert trio.current_time() == pytest.approx(30.0, abs=0.1)
            await trio.testing.wait_all_tasks_blocked()
            assert quiet_session.state == "reconnecting"
            await trio.sleep(60)
            assert served.manager.statistics().connections == 1
            nursery.cancel_scope.cancel()


async def test_session_connections_share_and_each_gets_every_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under share a second connection joins as another client, and both get every message the
    app sends, in the same order."""
    async with serving() as served:
        first, welcome = await served.new_session()
        second = await served.peer()
        joined = await second.hello(session=welcome["session"], token=welcome["token"])
        assert joined["type"] == "welcome"
        assert joined["client"] != welcome["client"]
        await first.send({"type": "msg", "seq": 1, "data": "from first"})
        await second.send({"type": "msg", "seq": 1, "data": "from second"})
        got_first = [(await first.receive_type("msg"))["data"] for _ in range(2)]
        got_second = [(await second.receive_type("msg"))["data"] for _ in range(2)]
        assert got_first == got_second
        assert sorted(got_first) == ["from first", "from second"]


async def test_session_takeover_policy_closes_the_old_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under takeover a new connection closes the old one (closed taken_over) and carries the
    session on."""
    async with serving(config=SessionConfig(attach_policy="takeover")) as served:
        first, welcome = await served.new_session()
        second = await served.peer()
        await second.hello(session=welcome["session"], token=welcome["token"])
        assert await first.receive_type("closed") == {"type": "closed", "reason": "taken_over"}
        await first.expect_closed()
        await second.send({"type": "msg", "seq": 1, "data": "mine now"})
        assert (await second.receive_type("msg"))["data"] == "mine now"


async def test_session_same_client_reconnecting_replaces_its_old_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that reconnects while its old connection still looks alive (half-open)
    replaces it."""
    async with serving() as served:
        old, welcome = await served.new_session()
        new = await served.peer()
        await new.hello(
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
            resume=True,
        )
        assert await old.receive_type("closed") == {"type": "closed", "reason": "replaced"}
        await old.expect_closed()
        await trio.testing.wait_all_tasks_blocked()
        assert served.manager.statistics().connections == 1


async def test_session_duplicate_client_messages_are_processed_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A resent client message is dropped and acknowledged again."""
    received: list[Any] = []

    async def app(session: statesession.Session) -> None:
        async for message in session:
            received.append((message.client, message.seq, message.data))

    async with serving(app) as served:
        peer, welcome = await served.new_session()
        await peer.send({"type": "msg", "seq": 1, "data": "x"})
        assert await peer.receive_type("ack") == {"type": "ack", "seq": 1}
        await peer.send({"type": "msg", "seq": 1, "data": "x"})
        assert await peer.receive_type("ack") == {"type": "ack", "seq": 1}
        await peer.send({"type": "msg", "seq": 2, "data": "y"})
        assert await peer.receive_type("ack") == {"type": "ack", "seq": 2}
        await trio.testing.wait_all_tasks_blocked()
        assert received == [(welcome["client"], 1, "x"), (welcome["client"], 2, "y")]


async def test_session_backpressure_waits_for_acks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a full buffer, send waits until the client acknowledges."""
    progress: list[int] = []

    async def app(session: statesession.Session) -> None:
        for i in range(1, 6):
            await session.send(i)
            progress.append(i)
        await trio.sleep_forever()

    async with serving(app, config=SessionConfig(buffer_messages=3)) as served:
        peer, _ = await served.new_session()
        for _ in range(3):
            await peer.receive_type("msg")
        await trio.testing.wait_all_tasks_blocked()
        assert progress == [1, 2, 3]
        await peer.send({"type": "ack", "seq": 2})
        await trio.testing.wait_all_tasks_blocked()
        assert progress == [1, 2, 3, 4, 5]


async def test_session_drop_oldest_never_blocks_and_reports_the_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With drop_oldest, send never waits; a client resuming from a dropped message gets
    resume_gap instead of a silent hole."""

    async def app(session: statesession.Session) -> None:
        async for _ in session:
            for i in range(10):
                await session.send(i)

    config = SessionConfig(buffer_messages=3, overflow="drop_oldest")
    async with serving(app, config=config) as served:
        peer, welcome = await served.new_session()
        assert isinstance(peer.channel, MemoryChannel)
        peer.channel.cut()
        await trio.testing.wait_all_tasks_blocked()
        # An unbuffered channel: the server can only send as fast as this peer reads.
        again = await served.peer(buffer=0)
        resumed = await again.hello(
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
            resume=True,
            ack=0,
        )
        assert resumed["type"] == "welcome"
        await again.send({"type": "msg", "seq": 1, "data": "go"})
        await trio.testing.wait_all_tasks_blocked()
        session = served.manager.sessions[welcome["session"]]
        assert session.statistics().dropped_messages == 7
        seqs = []
        while (frame := await again.receive())["type"] != "error":
            if frame["type"] == "msg":
                seqs.append(frame["seq"])
        # Whatever reached the client is a gapless prefix; then the gap is reported.
        assert seqs == list(range(1, len(seqs) + 1))
        assert frame["code"] == "resume_gap"
        assert frame["fatal"] is True
        assert f"messages {len(seqs) + 1}..7 were dropped" in frame["message"]
        await again.expect_closed()
        third = await served.peer()
        gap = await third.hello(
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
            resume=True,
            ack=1,
        )
        assert gap["code"] == "resume_gap"
        assert "messages 2..7 are no longer held" in gap["message"]


async def test_session_statistics_count(autojump_clock: trio.testing.MockClock) -> None:
    """A session's statistics count its connection, client, buffered message and its bytes,
    messages each way and its task."""
    async with serving() as served:
        peer, welcome = await served.new_session()
        await peer.send({"type": "msg", "seq": 1, "data": "x"})
        await peer.receive_type("msg")
        stats = served.manager.sessions[welcome["session"]].statistics()
        assert attrs.asdict(stats) == {
            "state": "active",
            "connections": 1,
            "clients": 1,
            "buffered_messages": 1,
            "buffered_bytes": len('{"type":"msg","seq":1,"data":"x"}'),
            "dropped_messages": 0,
            "sent_messages": 1,
            "received_messages": 1,
            "tasks": 1,
            "resources": 0,
        }


async def test_session_terminate_from_the_manager(autojump_clock: trio.testing.MockClock) -> None:
    """manager.terminate ends a live session with the given reason and returns False for an
    unknown id."""
    async with serving(echo_app) as served:
        peer, welcome = await served.new_session()
        assert served.manager.terminate(welcome["session"], "admin")
        assert not served.manager.terminate("nope")
        assert await peer.receive_type("state") == {"type": "state", "state": "terminating"}
        assert await peer.receive_type("closed") == {"type": "closed", "reason": "admin"}


async def test_session_raw_peer_helper_types(autojump_clock: trio.testing.MockClock) -> None:
    """The helpers' RawPeer speaks real frames (guards the other tests' assumptions)."""
    async with serving() as served:
        peer = await served.peer()
        assert isinstance(peer, RawPeer)
        await peer.send({"type": "ping"})
        error = await peer.receive()
        assert error["code"] == "bad_frame"
        assert "first frame must be hello" in error["message"]


async def test_session_app_interrupted_mid_reply_by_bye_ends_clean(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An app whose send() raises SessionClosedError because the client said bye in the
    middle of a reply ends cleanly: terminated, not error."""
    sessions: list[statesession.Session] = []

    async def agent(session: statesession.Session) -> None:
        sessions.append(session)
        async for message in session:
            await trio.sleep(0.1)
            for word in f"you said {message.data}".split():
                await session.send({"token": word})

    async with serving(agent) as served:
        peer, _ = await served.new_session()
        await peer.send({"type": "msg", "seq": 1, "data": "hi"})
        await peer.send({"type": "bye"})
        report = await sessions[0].wait_terminated()
        assert sessions[0].state == "terminated"
        assert report is not None
        assert report.clean
        assert [(item.name, item.outcome) for item in report.tasks] == [("app", Outcome.CLOSED)]


async def test_session_acknowledges_client_messages_as_the_app_takes_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An ack means the app has the message, so a busy app slows its client down instead
    of the server queueing without bound -- and the connection is still read meanwhile
    (pings answered, the peer not taken for dead)."""
    taken: list[int] = []

    async def busy(session: statesession.Session) -> None:
        await trio.sleep(100)  # a long tool call
        async for message in session:
            taken.append(message.seq)

    async with serving(busy) as served:
        peer, _ = await served.new_session()
        for seq in range(1, 71):
            await peer.send({"type": "msg", "seq": seq, "data": seq})
        frames = []
        while trio.current_time() < 99:
            with trio.move_on_after(5):
                frame = await peer.receive(timeout=10)
                frames.append(frame["type"])
                if frame["type"] == "ping":
                    await peer.send({"type": "pong"})
        assert "ack" not in frames
        assert "ping" in frames
        await trio.sleep(2)
        assert taken == list(range(1, 71))
        acked = [(await peer.receive_type("ack"))["seq"]]
        while acked[-1] < 70:
            acked.append((await peer.receive_type("ack"))["seq"])
        assert acked == sorted(set(acked))  # cumulative, coalesced, never backwards
        assert served.manager.statistics().connections == 1


async def test_session_delays_and_coalesces_its_acks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Acks are cumulative and delayed: one ack per ack_every messages, the rest after
    ack_delay; a ping asks for the held-back ack at once."""
    config = SessionConfig(ack_delay=0.5, ack_every=10)
    async with serving(echo_app, config=config) as served:
        peer, _ = await served.new_session()
        acks: list[tuple[int, float]] = []

        async def exchange(first: int, last: int) -> None:
            for seq in range(first, last + 1):
                await peer.send({"type": "msg", "seq": seq, "data": seq})
            echoed = 0
            while echoed < last - first + 1:
                frame = await peer.receive(timeout=10)
                if frame["type"] == "ack":
                    acks.append((frame["seq"], trio.current_time()))
                elif frame["type"] == "msg":
                    echoed += 1

        started = trio.current_time()
        await exchange(1, 25)  # 10 and 20 are acked at once, 25 after the delay
        assert [seq for seq, _ in acks] == [10, 20]
        frame = await peer.receive_type("ack", timeout=10)
        assert frame["seq"] == 25
        assert trio.current_time() - started == pytest.approx(0.5, abs=0.05)

        acks.clear()
        await exchange(26, 28)
        assert acks == []  # held back for ack_delay ...
        await peer.send({"type": "ping"})  # ... unless the client asks
        frames = [await peer.receive(timeout=0.1), await peer.receive(timeout=0.1)]
        assert {"type": "ack", "seq": 28} in frames
        assert {"type": "pong"} in frames


async def echo_numbers(client: statesession.Client, count: int) -> None:
    """Send 0..count-1 while receiving their echoes, which must come back in order."""
    async with trio.open_nursery() as nursery:

        async def produce() -> None:
            for i in range(count):
                await client.send(i)

        nursery.start_soon(produce)
        assert [await client.receive() for _ in range(count)] == list(range(count))


async def test_a_buffer_smaller_than_the_ack_batch_does_not_wait_for_the_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server whose replay buffer fills before the client would ack asks for the ack
    (a ping), and open_client sends it at once; likewise a client whose max_pending is
    smaller than the server's ack batch."""
    config = SessionConfig(buffer_messages=4, ack_delay=5.0)
    async with (
        serving(echo_app, config=config) as served,
        statesession.open_client(served.open_channel, ack_delay=5.0, max_pending=3) as client,
    ):
        await echo_numbers(client, 100)
        # Without asking, each batch would wait for a 5 s ack delay.
        assert trio.current_time() < 5


async def test_session_echo_with_concurrent_send_and_receive_never_stalls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client sending and receiving at once, through a small buffer, keeps flowing: no
    stall until a heartbeat drops the connection, no reconnect."""
    config = SessionConfig(buffer_messages=10)
    async with (
        serving(echo_app, config=config) as served,
        statesession.open_client(served.open_channel) as client,
    ):
        await echo_numbers(client, 300)
        assert client.statistics().connects == 1
        assert trio.current_time() < 1


async def test_session_send_checks_the_exact_frame_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A message whose frame is exactly max_frame fits; one byte more is refused."""
    results: list[str] = []

    async def app(session: statesession.Session) -> None:
        envelope = len('{"type":"msg","seq":1,"data":""}')
        await session.send("x" * (512 - envelope))
        results.append("fit")
        try:
            await session.send("x" * (512 - envelope + 1))
        except statesession.MessageTooLargeError as exc:
            results.append(str(exc))
        await trio.sleep_forever()

    async with serving(app, config=SessionConfig(max_frame=512, buffer_bytes=1000)) as served:
        peer, _ = await served.new_session()
        assert len(json.dumps(await peer.receive_type("msg"), separators=(",", ":"))) == 512
        await trio.testing.wait_all_tasks_blocked()
    assert results[0] == "fit"
    assert "frame of 513 bytes is over max_frame (512 bytes)" in results[1]


def test_session_layers_add_no_per_session_dict() -> None:
    """Session is one slotted object across its layers: no layer gives it a __dict__ (an
    idle session's memory is a benchmarked requirement)."""
    from statesession._runtime.session import Session

    assert all("__dict__" not in layer.__dict__ for layer in Session.__mro__[:-1])
    assert all("__slots__" in layer.__dict__ for layer in Session.__mro__[:-1])
