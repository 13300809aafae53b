"""What the WebSocket transports refuse, and how: frames are JSON text, so a text message
that is not UTF-8 fails the connection with close code 1007 (invalid frame payload data),
a binary message with 1003 (unsupported data), and a frame that breaks the WebSocket
protocol with 1002, on the server's channels and the client's alike, with a log line
naming the peer. Driven by a WebSocket peer built by hand over real sockets on
127.0.0.1."""

from __future__ import annotations

import logging

import pytest
import trio

import statesession
from statesession import ChannelBrokenError

from ..helpers import echo_app
from ..network import BINARY, CONT, TEXT, RawWebSocket, net_server, raw_websocket_server

WS_TRANSPORTS = ["websocket", "websockets"]

#: What a peer sends, as frames ``(opcode, payload, fin)``, and the close code it earns;
#: a frame whose opcode is negated is masked the wrong way (a client's frames must be
#: masked, a server's must not).
REFUSED = {
    "a frame masked the wrong way": ([(-TEXT, b'{"type":"ping"}', True)], 1002),
    "text that is not UTF-8": ([(TEXT, b'{"type":"\xff\xfe"}', True)], 1007),
    "text not UTF-8 across fragments": (
        [(TEXT, b'{"type":"\xc3', False), (CONT, b'\x28"}', True)],
        1007,
    ),
    "a binary message": ([(BINARY, b'{"type":"ping"}', True)], 1003),
    "a fragmented binary message": (
        [(BINARY, b'{"type":', False), (CONT, b'"ping"}', True)],
        1003,
    ),
}


async def _send_all(raw: RawWebSocket, frames: list[tuple[int, bytes, bool]]) -> None:
    for opcode, payload, fin in frames:
        if opcode < 0:
            await raw.send_frame(-opcode, payload, fin=fin, masked=not raw.client)
        else:
            await raw.send_frame(opcode, payload, fin=fin)


def _logged(caplog: pytest.LogCaptureFixture, transport: str, peer: str, code: int) -> bool:
    return any(
        record.name == f"statesession.{transport}"
        and peer in record.getMessage()
        and str(code) in record.getMessage()
        for record in caplog.records
    )


@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.parametrize("transport", WS_TRANSPORTS)
async def test_a_server_fails_the_connection_of_a_client_that_sends_what_is_not_json_text(
    transport: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After a hello and its welcome, what is not UTF-8 text, or breaks the protocol, is
    answered with a close frame carrying 1007, 1003 or 1002, then the end of the stream,
    and a log line names the client."""
    caplog.set_level(logging.INFO)
    frames, code = REFUSED[case]
    async with (
        net_server(transport, echo_app) as server,
        await RawWebSocket.connect(server.url) as raw,
    ):
        await raw.send_frame(TEXT, b'{"type":"hello","v":1}')
        opcode, welcome = await raw.next_frame() or (None, b"")
        assert (opcode, welcome[:18]) == (TEXT, b'{"type":"welcome",')
        await _send_all(raw, frames)
        assert await raw.close_code() == code
        await raw.wait_ended()
        assert _logged(caplog, transport, raw.name, code)


@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.parametrize("transport", WS_TRANSPORTS)
async def test_a_client_channel_fails_the_connection_of_a_server_that_sends_what_is_not_json_text(
    transport: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client channel hands up the frames before, then raises ChannelBrokenError for what
    is not UTF-8 text or breaks the protocol, answers it with a close frame carrying
    1007, 1003 or 1002, and logs it."""
    caplog.set_level(logging.INFO)
    frames, code = REFUSED[case]
    loaded = statesession.load_transport(transport)
    async with raw_websocket_server() as (url, arrived), trio.open_nursery() as nursery:
        channel = await loaded.connect(url, nursery=nursery, max_frame=65536)
        raw = await arrived.receive()
        await raw.send_frame(TEXT, b'{"type":"pong"}')
        await _send_all(raw, frames)
        with trio.fail_after(5):
            assert await channel.receive() == '{"type":"pong"}'
            with pytest.raises(ChannelBrokenError, match=str(code)):
                await channel.receive()
        assert await raw.close_code() == code
        assert _logged(caplog, transport, channel.peer.split(":", 1)[1], code)
        await channel.aclose()
