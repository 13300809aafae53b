"""Peers that reset their TCP connection at any point of the WebSocket upgrade are
ordinary: the server serves on, and its log gets no error or traceback for them (anyone
can do it at will, so a line per reset would let a peer flood the log)."""

from __future__ import annotations

import logging
import socket
import struct

import pytest
import trio

import statesession

from ..helpers import echo_app
from ..network import net_server

WS_TRANSPORTS = ["websocket", "websockets"]
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
#: What the peer sends before it resets the connection.
SENT_FIRST = {
    "nothing": b"",
    "half an upgrade request": UPGRADE[:40],
    "a whole upgrade request": UPGRADE,
}


@pytest.mark.parametrize("sent", list(SENT_FIRST))
@pytest.mark.parametrize("transport", WS_TRANSPORTS)
async def test_websocket_server_resets_during_the_upgrade_log_no_error(
    transport: str, sent: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Twenty peers that each send part or all of an upgrade request and reset leave no
    warning, error or traceback in the log, and the server answers the next client."""
    caplog.set_level(logging.DEBUG)
    async with net_server(transport, echo_app) as server:
        host, port = server.url.split("//")[1].rstrip("/").rsplit(":", 1)
        for _ in range(20):
            stream = await trio.open_tcp_stream(host, int(port))
            if SENT_FIRST[sent]:
                await stream.send_all(SENT_FIRST[sent])
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
        await trio.sleep(0.3)  # (the server gets to each reset)
        async with statesession.open_client(server.url, transport=transport) as client:
            await client.send("still serving")
            assert await client.receive() == "still serving"
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]
