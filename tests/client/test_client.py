"""The Python client: handshake, refusals, reconnect with backoff, resume, liveness."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import statesession
from statesession import Backoff, Channel, RemoteError, ResumeGapError, SessionClosedError
from statesession.testing import FaultyChannel, memory_channel_pair

from ..helpers import Served, echo_app, serving


def connector(
    served: Served, **faults: Any
) -> tuple[Callable[[], Awaitable[Channel]], list[FaultyChannel]]:
    made: list[FaultyChannel] = []

    async def connect() -> Channel:
        channel = FaultyChannel(await served.open_channel(), **faults)
        made.append(channel)
        return channel

    return connect, made


async def test_client_round_trip_and_bye(autojump_clock: trio.testing.MockClock) -> None:
    """A message round-trips; leaving the block ends the session with bye (terminated), and a
    later send raises SessionClosedError."""
    async with serving() as served:
        connect, _ = connector(served)
        async with statesession.open_client(connect) as client:
            assert client.session_id in served.manager.sessions
            await client.send({"n": 1})
            assert await client.receive() == {"n": 1}
            session = served.manager.sessions[client.session_id or ""]
        assert client.closed_reason == "bye"
        await session.wait_terminated()
        assert session.state == "terminated"
        with pytest.raises(SessionClosedError):
            await client.send("late")


async def test_client_refusal_raises_at_open(autojump_clock: trio.testing.MockClock) -> None:
    """A resume the server refuses raises RemoteError unknown_session from open_client."""
    async with serving() as served:
        connect, _ = connector(served)
        with pytest.raises(RemoteError) as info:
            async with statesession.open_client(connect, session="nope", token="t"):
                pass
        assert info.value.code == "unknown_session"


async def test_client_resume_gap_is_its_own_error(autojump_clock: trio.testing.MockClock) -> None:
    """Resuming past what the replay buffer still holds raises ResumeGapError from open_client."""

    async def chatty(session: statesession.Session) -> None:
        for i in range(10):
            await session.send(i)
        await trio.sleep_forever()

    config = statesession.SessionConfig(buffer_messages=2, overflow="drop_oldest")
    async with serving(chatty, config=config) as served:
        _, welcome = await served.new_session()
        await trio.testing.wait_all_tasks_blocked()
        connect, _ = connector(served)
        with pytest.raises(ResumeGapError, match="no longer held"):
            async with statesession.open_client(
                connect,
                session=welcome["session"],
                token=welcome["token"],
                client=welcome["client"],
            ):
                pass


async def test_client_reconnects_with_exponential_backoff_and_jitter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Failed connects are retried with growing, jittered delays; then the session goes on."""
    attempts: list[float] = []
    async with serving() as served:

        async def flaky() -> Channel:
            attempts.append(trio.current_time())
            if len(attempts) < 6:
                raise OSError("connection refused")
            return await served.open_channel()

        backoff = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.5)
        async with statesession.open_client(flaky, backoff=backoff) as client:
            await client.send("hi")
            assert await client.receive() == "hi"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    bases = [0.1, 0.2, 0.4, 0.8, 1.0]
    for gap, base in zip(gaps, bases, strict=True):
        assert base * 0.5 <= gap <= base * 1.5


async def test_client_gives_up_when_the_server_stays_away(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With every reconnect failing, receive raises ChannelBrokenError after give_up_after (5
    s), naming the last connect error."""
    async with serving() as served:
        connect, made = connector(served)
        up = True

        async def maybe() -> Channel:
            if not up:
                raise OSError("host unreachable")
            return await connect()

        async with statesession.open_client(maybe, give_up_after=5) as client:
            up = False
            made[0].cut()
            with pytest.raises(
                statesession.ChannelBrokenError,
                match=r"for 5 s; giving up \(last error: connect failed: host",
            ):
                await client.receive()
            assert trio.current_time() == pytest.approx(5, abs=1.5)


async def test_client_resumes_after_a_cut_without_loss(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After a cut the client reconnects once and receives every message once, in order."""

    async def app(session: statesession.Session) -> None:
        async for message in session:
            for i in range(5):
                await session.send(f"{message.data}.{i}")

    async with serving(app) as served:
        connect, made = connector(served)
        async with statesession.open_client(connect) as client:
            await client.send("a")
            assert await client.receive() == "a.0"
            made[-1].cut()
            await client.send("b")
            got = [await client.receive() for _ in range(9)]
            assert got == [f"a.{i}" for i in range(1, 5)] + [f"b.{i}" for i in range(5)]
            assert client.statistics().connects == 2


async def test_client_detects_a_silent_server_and_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that goes silent (half-open connection) is given up on after three
    heartbeats; the client reconnects and resumes."""
    async with serving() as served:
        connect, made = connector(served)
        async with statesession.open_client(connect) as client:
            made[0].silence()
            await client.send("still there?")
            assert await client.receive() == "still there?"
            assert client.statistics().connects == 2
            assert 30 <= trio.current_time() <= 35


async def test_client_iteration_ends_when_the_server_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Iterating a client yields every message and ends when the app returns, with closed_reason
    completed and state terminated."""

    async def app(session: statesession.Session) -> None:
        for i in range(3):
            await session.send(i)

    async with serving(app) as served:
        connect, _ = connector(served)
        async with statesession.open_client(connect) as client:
            assert [data async for data in client] == [0, 1, 2]
            assert client.closed_reason == "completed"
            assert client.state == "terminated"


async def test_client_refuses_an_answer_that_is_not_protocol_v1(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server answering hello with garbage is a protocol error, not a reason to retry."""

    async def impostor() -> Channel:
        server, client = memory_channel_pair()
        await server.send("HTTP/1.1 400 Bad Request")
        return client

    with pytest.raises(statesession.ProtocolError, match="not valid JSON"):
        async with statesession.open_client(impostor):
            pass


async def test_client_refuses_bad_arguments() -> None:
    """open_client refuses a session without its token with ValueError."""
    with pytest.raises(ValueError, match="go together"):
        async with statesession.open_client(echo_connect_never, session="s"):
            pass


async def echo_connect_never() -> Channel:  # pragma: no cover - never called
    raise AssertionError


async def test_client_message_size_and_type_checks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """send refuses data over max_frame (MessageTooLargeError) or not JSON (TypeError), and
    still sends what fits."""
    async with serving() as served:
        connect, _ = connector(served)
        async with statesession.open_client(connect, max_frame=300) as client:
            with pytest.raises(statesession.MessageTooLargeError):
                await client.send("x" * 300)
            with pytest.raises(TypeError, match="JSON-serializable"):
                await client.send(object())
            await client.send("fits")
            assert await client.receive() == "fits"


async def test_client_close_while_disconnected_completes_on_resume(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """bye queued while the connection is down is sent after resuming."""
    async with serving() as served:
        connect, made = connector(served)
        async with statesession.open_client(connect) as client:
            made[0].cut()
            await client.close("done")
            assert client.closed_reason == "bye"
            assert client.statistics().connects == 2


async def test_client_over_a_raw_memory_pair(autojump_clock: trio.testing.MockClock) -> None:
    """The client needs nothing but a Channel factory."""
    async with trio.open_nursery() as nursery, statesession.open_manager(echo_app) as manager:

        async def connect() -> Channel:
            server, client = memory_channel_pair()
            nursery.start_soon(manager.serve_channel, server)
            return client

        async with statesession.open_client(connect) as client:
            await client.send([1, 2])
            assert await client.receive() == [1, 2]


async def test_client_fatal_error_mid_session_is_raised_as_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A fatal error from the server after the welcome reaches the user as that error,
    from receive(), not wrapped in an exception group."""

    async def app(session: statesession.Session) -> None:
        async for _ in session:
            pass

    config = statesession.SessionConfig(max_frame=64 * 1024)
    async with serving(app, config=config) as served:
        connect, _ = connector(served)
        async with statesession.open_client(connect) as client:
            await client.send("x" * 100_000)
            with pytest.raises(RemoteError, match="frame_too_large"):
                await client.receive()


async def test_client_joins_a_session_as_another_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a session's id and token but its own client id, a client joins and gets every
    message the server still holds, then the live ones."""

    async def app(session: statesession.Session) -> None:
        for i in range(3):
            await session.send(i)
        async for message in session:
            await session.send(message.data)

    async with serving(app) as served:
        first, welcome = await served.new_session()
        for _ in range(3):
            await first.receive_type("msg")
        await first.send({"type": "ack", "seq": 2})
        connect, _ = connector(served)
        async with statesession.open_client(
            connect, session=welcome["session"], token=welcome["token"]
        ) as client:
            assert client.client_id != welcome["client"]
            assert await client.receive() == 2
            await client.send("joined")
            assert await client.receive() == "joined"
