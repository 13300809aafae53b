"""The session manager: admission, authentication, observers, and shutdown."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import statesession
from statesession import SessionConfig
from statesession.testing import memory_channel_pair

from ..helpers import echo_app, live_tasks, serving


async def test_manager_limits_total_sessions(autojump_clock: trio.testing.MockClock) -> None:
    """Past max_sessions a new client is refused with session_limit and a reason."""
    async with serving(config=SessionConfig(max_sessions=2)) as served:
        await served.new_session()
        await served.new_session()
        peer = await served.peer()
        error = await peer.hello()
        assert error["code"] == "session_limit"
        assert error["fatal"] is True
        assert "limit of 2 sessions (max_sessions)" in error["message"]
        await peer.expect_closed()
        assert served.manager.statistics().refused == 1


async def test_manager_limits_sessions_per_principal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Past max_sessions_per_principal that principal's next hello is refused session_limit,
    naming it, while another principal is welcomed."""
    config = SessionConfig(max_sessions_per_principal=1)
    async with serving(config=config, authenticate=lambda auth: auth["user"]) as served:
        ann = await served.peer()
        assert (await ann.hello(auth={"user": "ann"}))["type"] == "welcome"
        ann_again = await served.peer()
        error = await ann_again.hello(auth={"user": "ann"})
        assert error["code"] == "session_limit"
        assert "'ann' holds its limit of 1 session" in error["message"]
        bob = await served.peer()
        assert (await bob.hello(auth={"user": "bob"}))["type"] == "welcome"


async def test_manager_authentication_failure_is_bad_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An authenticate that raises refuses the hello with a fatal bad_token giving the reason;
    what it returns is the session's principal."""

    async def authenticate(auth: Any) -> str:
        await trio.lowlevel.checkpoint()
        if auth != "secret":
            raise PermissionError("unknown key")
        return "ann"

    async with serving(authenticate=authenticate) as served:
        refused = await served.peer()
        error = await refused.hello(auth="guess")
        assert error == {
            "type": "error",
            "code": "bad_token",
            "fatal": True,
            "message": "authentication failed: unknown key",
        }
        peer = await served.peer()
        welcome = await peer.hello(auth="secret")
        session = served.manager.sessions[welcome["session"]]
        assert session.principal == "ann"


async def test_manager_token_is_bound_to_its_principal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With authentication, another principal cannot resume a session even with its
    token."""
    async with serving(authenticate=lambda auth: auth) as served:
        owner = await served.peer()
        welcome = await owner.hello(auth="ann")
        thief = await served.peer()
        error = await thief.hello(session=welcome["session"], token=welcome["token"], auth="eve")
        assert error["code"] == "bad_token"
        assert "another principal" in error["message"]
        friend = await served.peer()
        joined = await friend.hello(session=welcome["session"], token=welcome["token"], auth="ann")
        assert joined["type"] == "welcome"


async def test_manager_shutdown_terminates_every_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Leaving open_manager tells every client server_shutdown, runs every cascade, and
    returns with no session task left."""
    closed: list[str] = []

    async def app(session: statesession.Session) -> None:
        session.add_resource("db", lambda: closed.append(session.id))
        session.start_soon(trio.sleep_forever)
        async for message in session:
            await session.send(message.data)

    async with trio.open_nursery() as nursery:
        async with statesession.open_manager(app) as manager:
            peers = []
            for _ in range(3):
                server, client = memory_channel_pair()
                nursery.start_soon(manager.serve_channel, server)
                peer_channel = client
                await peer_channel.send('{"type":"hello","v":1}')
                peers.append(peer_channel)
            for channel in peers:
                assert '"welcome"' in await channel.receive()
            ids = list(manager.sessions)
            # a connection still in its handshake when the server stops
            server, lingering = memory_channel_pair()
            nursery.start_soon(manager.serve_channel, server)
            await trio.testing.wait_all_tasks_blocked()
        assert len(manager) == 0
        assert sorted(closed) == sorted(ids)
        for channel in peers:
            frames = [await channel.receive(), await channel.receive()]
            assert frames[-1] == '{"type":"closed","reason":"server_shutdown"}'
        assert '"code":"server_shutdown"' in await lingering.receive()
        assert not [t for t in live_tasks() if any(t.name.startswith(i) for i in ids)]


async def test_manager_refuses_new_connections_after_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A manager that has shut down answers a new hello with server_shutdown."""
    async with statesession.open_manager(echo_app) as manager:
        pass
    server, client = memory_channel_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager.serve_channel, server)
        await client.send('{"type":"hello","v":1}')
        assert '"code":"server_shutdown"' in await client.receive()


async def test_manager_body_exception_is_raised_as_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An error in the code inside open_manager comes out unwrapped, after every session
    was cleaned up."""
    closed: list[str] = []

    async def app(session: statesession.Session) -> None:
        session.add_resource("r", lambda: closed.append("r"))
        await trio.sleep_forever()

    with pytest.raises(KeyError, match="oops"):  # noqa: PT012 - the raise is the subject
        async with statesession.open_manager(app) as manager:
            server, client = memory_channel_pair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(manager.serve_channel, server)
                await client.send('{"type":"hello","v":1}')
                assert '"welcome"' in await client.receive()
                nursery.cancel_scope.cancel()
            raise KeyError("oops")
    assert closed == ["r"]


async def test_manager_cancelled_still_cleans_up(autojump_clock: trio.testing.MockClock) -> None:
    """Cancelling the code around the manager still runs every cascade (shielded)."""
    closed: list[str] = []

    async def app(session: statesession.Session) -> None:
        async def close() -> None:
            await trio.sleep(1)
            closed.append("r")

        session.add_resource("r", close)
        await trio.sleep_forever()

    with trio.move_on_after(5):
        async with serving(app) as served:
            await served.new_session()
            await trio.sleep_forever()
    assert closed == ["r"]


async def test_manager_observers_see_every_state_change(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Observers see each state change of a session in order, and one that raises is logged
    without stopping the others."""
    seen: list[tuple[str, str, str]] = []

    def broken(*args: object) -> None:
        raise RuntimeError("observer bug")

    async with serving() as served:
        served.manager.add_observer(lambda s, e, src, dst: seen.append((e, src, dst)))
        served.manager.add_observer(broken)
        peer, welcome = await served.new_session()
        await peer.send({"type": "bye"})
        await peer.receive_type("closed")
        await served.manager.sessions[welcome["session"]].wait_terminated()
    assert seen == [
        ("activate", "initializing", "active"),
        ("terminate", "active", "terminating"),
        ("finish", "terminating", "terminated"),
    ]
    assert "observer bug" in caplog.text


async def test_manager_statistics(autojump_clock: trio.testing.MockClock) -> None:
    """statistics() counts each thing apart: live sessions by state, attached
    connections, connections still in their handshake, sessions ever created, refusals,
    and closing once the manager shuts down."""
    async with serving() as served:
        await served.new_session()
        cut, _ = await served.new_session()
        assert isinstance(cut.channel, statesession.testing.MemoryChannel)
        cut.channel.cut()
        ended, welcome = await served.new_session()
        await ended.send({"type": "bye"})
        await ended.receive_type("closed")
        await served.manager.sessions[welcome["session"]].wait_terminated()
        refused = await served.peer()
        assert (await refused.hello(v=99))["type"] == "error"
        await refused.expect_closed()
        await served.peer()  # says nothing: still in its handshake
        await trio.testing.wait_all_tasks_blocked()
        stats = served.manager.statistics()
        assert stats.sessions == 2
        assert dict(stats.by_state) == {"active": 1, "reconnecting": 1}
        assert stats.connections == 1
        assert stats.handshakes == 1
        assert stats.created == 3
        assert stats.refused == 1
        assert stats.closing is False
    stats = served.manager.statistics()
    assert (stats.sessions, dict(stats.by_state), stats.connections) == (0, {}, 0)
    assert (stats.handshakes, stats.created, stats.refused) == (0, 3, 1)
    assert stats.closing is True


async def test_manager_resume_racing_termination_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A resume whose attach reaches the session just as it finishes terminating is told
    `terminated`, never left waiting."""
    gate = trio.Event()

    async def authenticate(auth: Any) -> str:
        if auth == "late":
            await gate.wait()
        return "ann"

    async def app(session: statesession.Session) -> None:
        session.add_resource("r", gate.set)  # releases the late resume mid-cascade
        async for _ in session:
            pass

    for _ in range(10):
        async with serving(app, authenticate=authenticate) as served:
            peer, welcome = await served.new_session()
            late = await served.peer()
            await late.send(
                {
                    "type": "hello",
                    "v": 1,
                    "auth": "late",
                    "session": welcome["session"],
                    "token": welcome["token"],
                    "client": "other",
                }
            )
            await trio.testing.wait_all_tasks_blocked()
            await peer.send({"type": "bye"})
            answer = await late.receive(timeout=60)
            assert (answer["type"], answer["code"]) == ("error", "terminated")
        gate = trio.Event()


async def test_manager_shutdown_during_authentication_creates_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A hello whose authentication finishes after shutdown began is refused with
    server_shutdown; no session is created behind the shutdown's back."""
    gate = trio.Event()
    started: list[str] = []

    async def authenticate(auth: Any) -> str:
        if auth == "late":
            await gate.wait()
        return "ann"

    async def app(session: statesession.Session) -> None:
        started.append(session.id)
        session.add_resource("slow", partial(trio.sleep, 2))
        async for _ in session:
            pass

    async with trio.open_nursery() as nursery:
        async with statesession.open_manager(app, authenticate=authenticate) as manager:
            first_server, first = memory_channel_pair()
            nursery.start_soon(manager.serve_channel, first_server)
            await first.send('{"type":"hello","v":1,"auth":"a"}')
            await first.receive()
            late_server, late = memory_channel_pair()
            nursery.start_soon(manager.serve_channel, late_server)
            await late.send('{"type":"hello","v":1,"auth":"late"}')
            await trio.testing.wait_all_tasks_blocked()
            began = trio.current_time()
            gate.set()
        assert trio.current_time() - began == pytest.approx(2, abs=0.1)
        assert len(started) == 1
        assert '"code":"server_shutdown"' in await late.receive()


async def test_manager_refused_or_abandoned_create_leaves_no_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A new-session hello that is refused, or whose handshake is cancelled, leaves no
    session waiting out its window (nobody else could hold its token)."""
    started: list[str] = []
    gate = trio.Event()

    async def setup(session: statesession.Session) -> None:
        await gate.wait()

    async def app(session: statesession.Session) -> None:
        started.append(session.id)
        await trio.sleep_forever()

    async with serving(app, setup=setup) as served:
        peer = await served.peer()
        error = await peer.hello(ack=7)
        assert error["code"] == "bad_frame"
        assert "hello.ack needs hello.session" in error["message"]
        assert len(served.manager) == 0
        assert started == []
        abandoned = await served.peer()
        await abandoned.send({"type": "hello", "v": 1})
        await trio.testing.wait_all_tasks_blocked()
        assert len(served.manager) == 1
        for scope in list(served.manager._handshakes):
            scope.cancel()
        gate.set()
        await trio.sleep(5)  # far less than the reconnect window
        assert len(served.manager) == 0


async def test_manager_flagged_sessions_do_not_count_against_limits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A session flagged in `error` stays for inspection but frees its admission slot."""

    def broken() -> None:
        raise OSError("cannot close")

    async def app(session: statesession.Session) -> None:
        session.add_resource("broken", broken)
        async for _ in session:
            pass

    config = SessionConfig(max_sessions=1, max_sessions_per_principal=1)
    async with serving(app, config=config, authenticate=lambda auth: "ann") as served:
        peer, welcome = await served.new_session()
        session = served.manager.sessions[welcome["session"]]
        await peer.send({"type": "bye"})
        await session.wait_terminated()
        assert session.state == "error"
        assert len(served.manager) == 1
        await served.new_session()
        assert served.manager.statistics().by_state == {"error": 1, "active": 1}
