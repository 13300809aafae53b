"""Resuming is told apart from joining: a client the session no longer knows is refused
(never processed twice), `welcome.resumed` says which it was, and only what the protocol
allows is accepted."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import trio
import trio.testing

import statesession
from statesession import ProtocolError, ResumeGapError, SessionConfig
from statesession.protocol import HelloFrame, decode_client_frame
from statesession.testing import MemoryChannel

from ..client.test_client import connector
from ..helpers import RawPeer, Served, serving

CONFIG = SessionConfig(reconnect_window=30, heartbeat_interval=10, heartbeat_timeout=30)


def recording_app(received: list[tuple[str, int]]) -> Any:
    async def app(session: statesession.Session) -> None:
        async for message in session:
            received.append((message.client, message.seq))

    return app


async def keep_answering_pings(peer: RawPeer) -> None:
    """Keep a raw peer alive: answer every ping (what a healthy client does), until the
    server closes it."""
    with contextlib.suppress(statesession.ChannelError):
        while True:
            frame = await peer.receive(timeout=1000)
            if frame["type"] == "ping":
                await peer.send({"type": "pong"})


async def forgotten_joiner(served: Served) -> tuple[dict[str, Any], dict[str, Any]]:
    """A session whose first client stays; a second client joins, sends msg 1, is cut and
    stays away for longer than the window, so that the session forgets it."""
    first, welcome = await served.new_session()
    served.nursery.start_soon(keep_answering_pings, first)
    joiner = await served.peer()
    joined = await joiner.hello(session=welcome["session"], token=welcome["token"], ack=0)
    assert joined["type"] == "welcome"
    await joiner.send({"type": "msg", "seq": 1, "data": "once"})
    await trio.testing.wait_all_tasks_blocked()
    assert isinstance(joiner.channel, MemoryChannel)
    joiner.channel.cut()
    await trio.sleep(CONFIG.reconnect_window + CONFIG.heartbeat_interval + 1)
    return welcome, joined


async def test_resume_of_a_forgotten_client_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client the session has forgotten that comes back to resume -- even with ack 0 --
    is refused with resume_gap, and what it sent is never processed twice."""
    received: list[tuple[str, int]] = []
    async with serving(recording_app(received), config=CONFIG) as served:
        welcome, joined = await forgotten_joiner(served)
        back = await served.peer()
        answer = await back.hello(
            session=welcome["session"],
            token=welcome["token"],
            client=joined["client"],
            ack=0,
            resume=True,
        )
        assert (answer["type"], answer["code"], answer["fatal"]) == ("error", "resume_gap", True)
        assert joined["client"] in answer["message"]
        assert "no longer remembers" in answer["message"]
    assert received == [(joined["client"], 1)]


async def test_open_client_surfaces_a_forgotten_client_instead_of_resending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """open_client that was forgotten while away raises ResumeGapError on its next use;
    the app received its message once."""
    received: list[tuple[str, int]] = []
    async with serving(recording_app(received), config=CONFIG) as served:
        first, welcome = await served.new_session()
        served.nursery.start_soon(keep_answering_pings, first)
        connect, made = connector(served)

        async def away_too_long() -> None:
            async with statesession.open_client(
                connect,
                session=welcome["session"],
                token=welcome["token"],
                backoff=statesession.Backoff(initial=45, maximum=45, jitter=0),
                give_up_after=100,
            ) as client:
                await client.send("once")
                await trio.testing.wait_all_tasks_blocked()
                made[-1].cut()
                await trio.sleep(60)
                with trio.fail_after(100):  # virtual time: a re-admitted client waits
                    await client.receive()

        with pytest.raises(ResumeGapError, match="no longer remembers"):
            await away_too_long()
        assert len(received) == 1


async def test_welcome_says_resumed_only_for_a_resume(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """welcome.resumed is false for a new session and for a client joining it, true only
    for a client continuing its own stream."""
    async with serving(config=CONFIG) as served:
        _, welcome = await served.new_session()
        assert welcome["resumed"] is False
        joiner = await served.peer()
        joined = await joiner.hello(session=welcome["session"], token=welcome["token"])
        assert joined["resumed"] is False
        again = await served.peer()
        resumed = await again.hello(
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
            resume=True,
        )
        assert resumed["resumed"] is True
        assert resumed["client"] == welcome["client"]


async def test_join_with_a_client_id_the_session_knows_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A join (no hello.resume) naming a client the session already has is refused with
    bad_frame, pointing at hello.resume: a join must be a new client."""
    async with serving(config=CONFIG) as served:
        _, welcome = await served.new_session()
        peer = await served.peer()
        answer = await peer.hello(
            session=welcome["session"], token=welcome["token"], client=welcome["client"], ack=0
        )
        assert (answer["code"], answer["fatal"]) == ("bad_frame", True)
        assert "hello.resume" in answer["message"]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"ack": 0}, "hello.ack needs hello.session"),
        ({"ack": 3}, "hello.ack needs hello.session"),
        ({"resume": True}, "hello.resume needs hello.session"),
        ({"session": "s", "token": "t", "resume": True}, "hello.resume needs hello.client"),
        ({"session": "s", "token": "t", "resume": "yes"}, "hello.resume must be a boolean"),
        ({"session": "s", "token": "t", "ack": 4}, "a joining client has received nothing"),
    ],
)
def test_hello_fields_that_do_not_go_together_are_bad_frames(
    fields: dict[str, Any], fragment: str
) -> None:
    """The codec refuses a hello whose fields contradict each other, naming the rule."""
    import json

    with pytest.raises(ProtocolError, match=fragment) as caught:
        decode_client_frame(json.dumps({"type": "hello", "v": 1, **fields}), max_frame=4096)
    assert caught.value.code == "bad_frame"


def test_hello_resume_round_trips() -> None:
    """hello.resume is encoded and decoded."""
    from statesession.protocol import encode_frame

    frame = HelloFrame(session="s", token="t", client="c", ack=0, resume=True)
    assert decode_client_frame(encode_frame(frame), max_frame=4096) == frame


async def test_new_session_hello_with_ack_zero_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """hello with ack 0 and no session is a bad_frame, as the protocol says."""
    async with serving(config=CONFIG) as served:
        peer = await served.peer()
        answer = await peer.hello(ack=0)
        assert (answer["code"], answer["fatal"]) == ("bad_frame", True)
        assert len(served.manager) == 0


async def test_resuming_client_from_a_new_process_numbers_on_from_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """open_client resuming a client it has no memory of (given session, token and
    client) numbers its messages on from what the server has taken, so none is dropped
    as a duplicate."""
    received: list[tuple[str, int]] = []
    async with serving(recording_app(received), config=CONFIG) as served:
        peer, welcome = await served.new_session()
        for seq in (1, 2):
            await peer.send({"type": "msg", "seq": seq, "data": seq})
        await trio.testing.wait_all_tasks_blocked()
        await peer.aclose()
        connect, _ = connector(served)
        async with statesession.open_client(
            connect, session=welcome["session"], token=welcome["token"], client=welcome["client"]
        ) as client:
            await client.send("third")
            await trio.testing.wait_all_tasks_blocked()
    assert received == [(welcome["client"], 1), (welcome["client"], 2), (welcome["client"], 3)]
