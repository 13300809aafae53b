"""What the receiver refuses for its shape (values, depth) the sender refuses too: tuples
and dict or list subclasses count as JSON encodes them."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import pytest
import trio
import trio.testing

import statesession
from statesession import MessageTooLargeError, ProtocolError, SessionConfig
from statesession._core.codec import encode_message_data
from statesession.protocol import decode_client_frame, decode_server_frame

from ..client.test_client import connector
from ..helpers import serving

#: 25,000 (x, y) points: 75,001 JSON values, over MAX_VALUES (65,536); about 300 KB.
POINTS = [(i, i) for i in range(25_000)]


def deep_tuple(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = (value,)
    return value


def frame_of(data: Any) -> str:
    return '{{"type":"msg","seq":1,"data":{}}}'.format(json.dumps(data, separators=(",", ":")))


@pytest.mark.parametrize(
    "data",
    [
        POINTS,
        deep_tuple(100),
        OrderedDict((str(i), 0) for i in range(40_000)),
    ],
    ids=["list-of-tuples", "nested-tuples", "OrderedDict"],
)
def test_sender_refuses_what_the_receiver_refuses(data: Any) -> None:
    """Data that decode_client_frame/decode_server_frame refuse is refused by
    encode_message_data too (the check both send() methods use)."""
    text = frame_of(data)
    with pytest.raises(ProtocolError):
        decode_client_frame(text, max_frame=1 << 24)
    with pytest.raises(ProtocolError):
        decode_server_frame(text, max_frame=1 << 24)
    with pytest.raises(MessageTooLargeError):
        encode_message_data(data)


async def test_client_send_of_tuples_the_server_refuses_raises(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """client.send(list of tuples over MAX_VALUES) raises MessageTooLargeError instead of
    sending a frame the server answers with bad_frame (after which the client's next
    message is a seq jump and the client is cut off)."""
    received: list[Any] = []

    async def app(session: statesession.Session) -> None:
        async for message in session:
            received.append(message.data)

    async with serving(app) as served:
        connect, _ = connector(served)
        async with statesession.open_client(connect) as client:
            with pytest.raises(MessageTooLargeError):
                await client.send(POINTS)
            await client.send("after")
            with trio.move_on_after(5):
                while "after" not in received:  # noqa: ASYNC110 - polls what the app took
                    await trio.sleep(0.1)
    assert received == ["after"]


async def test_session_send_of_nested_tuples_the_client_refuses_raises(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """session.send(data nested 100 levels in tuples) raises MessageTooLargeError; it does
    not buffer a frame every client refuses (open_client then reconnects, is replayed the
    same frame, and so on for ever: the session's next messages never arrive)."""
    raised: list[BaseException] = []

    async def app(session: statesession.Session) -> None:
        try:
            await session.send(deep_tuple(100))
        except MessageTooLargeError as exc:
            raised.append(exc)
        await session.send("next")
        await trio.sleep_forever()

    config = SessionConfig(reconnect_window=30)
    async with serving(app, config=config) as served:
        connect, _made = connector(served)
        async with statesession.open_client(connect) as client:
            got: list[Any] = []
            with trio.move_on_after(10):
                got.append(await client.receive())
            connects = client.statistics().connects
            await client.close()
    assert raised, "session.send took data every client refuses"
    assert got == ["next"], f"the client never got the next message; it connected {connects} times"
