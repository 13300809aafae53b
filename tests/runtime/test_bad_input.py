"""Bad input: every malformed or hostile frame gets its documented error, closes at most
its own connection, and leaves every other session working."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from statesession import ChannelError, MemoryStore, SessionConfig
from statesession.testing import MemoryChannel

from ..helpers import RawPeer, Served, serving

CONFIG = SessionConfig(max_frame=4096, buffer_bytes=64 * 1024)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving(config=CONFIG) as served:
        yield served


async def bystander_still_works(served: Served, bystander: RawPeer, seq: int) -> None:
    await bystander.send({"type": "msg", "seq": seq, "data": f"still here {seq}"})
    assert (await bystander.receive_type("msg"))["data"] == f"still here {seq}"


BEFORE_HELLO = [
    ("{not json", "bad_frame", "not valid JSON"),
    (b"\x00\xff garbage \xfe", "bad_frame", "not UTF-8"),
    ("[]", "bad_frame", "must be a JSON object"),
    ('{"type":"msg","seq":1,"data":1}', "bad_frame", "first frame must be hello, got msg"),
    ('{"type":"ack","seq":1}', "bad_frame", "first frame must be hello, got ack"),
    ('{"type":"teleport"}', "bad_frame", "unknown frame type 'teleport'"),
    ('{"type":"hello","v":2}', "bad_version", "version 2 is not supported"),
    ('{"type":"hello"}', "bad_version", 'integer field "v"'),
    ('{"type":"hello","v":1,"ack":"7"}', "bad_frame", "hello.ack must be an integer"),
    ('{"type":"hello","v":1,"session":"nope","token":"t"}', "unknown_session", "'nope'"),
    ('{"type":"ping","pad":"' + "x" * 5000 + '"}', "frame_too_large", "over the limit"),
]


@pytest.mark.parametrize(("frame", "code", "fragment"), BEFORE_HELLO)
async def test_bad_input_before_welcome_is_fatal(
    autojump_clock: trio.testing.MockClock, served: Served, frame: Any, code: str, fragment: str
) -> None:
    """Any error before welcome gets error{fatal:true} and closes only that connection."""
    bystander, _ = await served.new_session()
    peer = await served.peer()
    await peer.send(frame)
    error = await peer.receive()
    assert error["type"] == "error"
    assert error["code"] == code
    assert fragment in error["message"]
    assert error["fatal"] is True
    await peer.expect_closed()
    await bystander_still_works(served, bystander, 1)


AFTER_WELCOME = [
    ("{not json", "bad_frame", "not valid JSON"),
    ('{"type":"msg","seq":"one","data":1}', "bad_frame", "msg.seq must be an integer"),
    ('{"type":"msg","seq":1}', "bad_frame", 'needs a field "data"'),
    ('{"type":"ack","seq":99}', "bad_frame", "sent only up to seq 0"),
    ('{"type":"nonsense"}', "bad_frame", "unknown frame type 'nonsense'"),
    ('{"type":"hello","v":1}', "bad_frame", "hello may only be the first frame"),
]


@pytest.mark.parametrize(("frame", "code", "fragment"), AFTER_WELCOME)
async def test_bad_input_after_welcome_is_reported_and_survived(
    autojump_clock: trio.testing.MockClock, served: Served, frame: str, code: str, fragment: str
) -> None:
    """A bad frame in a running session is answered with a non-fatal error; the same
    connection keeps working."""
    peer, _ = await served.new_session()
    await peer.send(frame)
    error = await peer.receive_type("error")
    assert (error["code"], error["fatal"]) == (code, False)
    assert fragment in error["message"]
    await bystander_still_works(served, peer, 1)


async def test_bad_input_seq_jump_is_fatal_for_the_connection_only(
    autojump_clock: trio.testing.MockClock, served: Served
) -> None:
    """A client whose seqs jump lost track: its connection ends, its session survives and
    it can resume."""
    peer, welcome = await served.new_session()
    await bystander_still_works(served, peer, 1)
    await peer.send({"type": "msg", "seq": 5, "data": "skip"})
    error = await peer.receive_type("error")
    assert error["code"] == "bad_frame"
    assert error["fatal"] is True
    assert "jumped from 1 to 5" in error["message"]
    await peer.expect_closed()
    again = await served.peer()
    resumed = await again.hello(
        session=welcome["session"],
        token=welcome["token"],
        client=welcome["client"],
        resume=True,
        ack=1,
    )
    assert resumed["ack"] == 1
    await bystander_still_works(served, again, 2)


async def test_bad_input_oversized_frame_after_welcome_is_fatal(
    autojump_clock: trio.testing.MockClock, served: Served
) -> None:
    """A msg over max_frame after the welcome is fatal frame_too_large and closes only that
    connection; another session keeps working."""
    bystander, _ = await served.new_session()
    peer, _ = await served.new_session()
    await peer.send({"type": "msg", "seq": 1, "data": "x" * 5000})
    error = await peer.receive_type("error")
    assert (error["code"], error["fatal"]) == ("frame_too_large", True)
    await peer.expect_closed()
    await bystander_still_works(served, bystander, 1)


async def test_bad_input_oversized_frame_caught_by_the_transport(
    autojump_clock: trio.testing.MockClock, served: Served
) -> None:
    """A transport that enforces the limit itself reports it the same way."""
    peer = RawPeer(await served.open_channel(max_frame=250))
    await peer.send({"type": "hello", "v": 1, "auth": "x" * 300})
    error = await peer.receive()
    assert (error["code"], error["fatal"]) == ("frame_too_large", True)
    assert "over the limit of 250 bytes" in error["message"]


async def test_bad_input_wrong_token(
    autojump_clock: trio.testing.MockClock, served: Served
) -> None:
    """A resume with the wrong token is refused with a fatal bad_token and closed, and the
    session's own client keeps working."""
    bystander, welcome = await served.new_session()
    thief = await served.peer()
    error = await thief.hello(session=welcome["session"], token="A" * 32)
    assert error == {
        "type": "error",
        "code": "bad_token",
        "message": "wrong token for this session",
        "fatal": True,
    }
    await thief.expect_closed()
    await bystander_still_works(served, bystander, 1)


async def test_bad_input_stale_ack_beyond_the_buffer_is_resume_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Resuming from an ack whose history was dropped is an explicit resume_gap."""

    async def chatty(session: Any) -> None:
        for i in range(20):
            await session.send(i)
        await trio.sleep_forever()

    config = SessionConfig(buffer_messages=5, overflow="drop_oldest")
    async with serving(chatty, config=config) as served:
        peer, welcome = await served.new_session()
        await peer.receive_type("msg")
        assert isinstance(peer.channel, MemoryChannel)
        peer.channel.cut()
        await trio.testing.wait_all_tasks_blocked()
        again = await served.peer()
        error = await again.hello(
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
            resume=True,
            ack=1,
        )
        assert error["code"] == "resume_gap"
        assert error["fatal"] is True
        assert "messages 2..15 are no longer held" in error["message"]


async def test_bad_input_frames_after_bye_get_terminated(
    autojump_clock: trio.testing.MockClock, served: Served
) -> None:
    """Messages sent after bye are refused with 'terminated' (not silently dropped), then
    the session is closed; the closed channel refuses anything more."""
    peer, _ = await served.new_session()
    await peer.send({"type": "bye"})
    await peer.send({"type": "msg", "seq": 1, "data": "too late"})
    frames = []
    while (frame := await peer.receive())["type"] != "closed":
        frames.append(frame)
    errors = [f for f in frames if f["type"] == "error"]
    assert errors
    assert errors[0]["code"] == "terminated"
    assert "msg 1 was not processed" in errors[0]["message"]
    await peer.expect_closed()
    with pytest.raises(ChannelError):
        await peer.send({"type": "ping"})


async def test_bad_input_handshake_timeout(
    autojump_clock: trio.testing.MockClock, served: Served
) -> None:
    """A connection that never says hello (slowloris) is dropped after handshake_timeout."""
    peer = await served.peer()
    error = await peer.receive(timeout=11)
    assert error["code"] == "handshake_timeout"
    assert trio.current_time() == pytest.approx(10.0, abs=0.01)
    await peer.expect_closed()
    assert served.manager.statistics().handshakes == 0


@pytest.mark.parametrize(
    "frame",
    [
        json.dumps({"type": "msg", "seq": 2**70, "data": 1}),
        json.dumps({"type": "ack", "seq": -5}),
        json.dumps({"type": "bye", "reason": ["not", "text"]}),
        '{"type":"msg","seq":1,"data":Infinity}',
        '{"type": "msg", "seq": 1, "data": ' + "[" * 50 + "]" * 50 + "}",
    ],
)
async def test_bad_input_odd_values_never_hurt_the_server(
    autojump_clock: trio.testing.MockClock, served: Served, frame: str
) -> None:
    """Edge values either work or get bad_frame; the connection stays usable."""
    peer, _ = await served.new_session()
    await peer.send(frame)
    await peer.send({"type": "ping"})
    while (answer := await peer.receive())["type"] != "pong":
        assert answer["type"] in {"error", "ack", "msg"}
        if answer["type"] == "error":
            assert answer["code"] == "bad_frame"
    assert len(served.manager) == 1


@pytest.mark.parametrize("when", ["as hello", "after welcome"])
async def test_bad_input_deeply_nested_json_is_a_bad_frame(
    autojump_clock: trio.testing.MockClock, served: Served, when: str
) -> None:
    """JSON nested past the parser's recursion limit is bad_frame, not a crash."""
    bystander, _ = await served.new_session()
    frame = "[" * 2000 + "]" * 2000  # under max_frame, past the parser's recursion limit
    if when == "as hello":
        peer = await served.peer()
    else:
        peer, _ = await served.new_session()
    await peer.send(frame)
    error = await peer.receive_type("error")
    assert error["code"] == "bad_frame"
    assert "too deeply" in error["message"]
    await bystander_still_works(served, bystander, 1)


async def test_bad_input_infinite_number_is_refused_before_it_reaches_the_log(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A number JSON cannot hold (1e400 decodes to infinity) is a non-fatal bad_frame even
    with messages logged to the store: no internal error, the connection keeps working,
    and nothing of it is logged."""
    store = MemoryStore(log_messages=True)
    async with serving(store=store) as served:
        peer, welcome = await served.new_session()
        await peer.send('{"type":"msg","seq":1,"data":1e400}')
        error = await peer.receive_type("error")
        assert (error["code"], error["fatal"]) == ("bad_frame", False)
        assert "1e400" in error["message"]
        await bystander_still_works(served, peer, 1)
        logged = [e.detail for e in await store.history(welcome["session"]) if e.detail]
        assert not any("1e400" in text or "Infinity" in text for text in logged)
