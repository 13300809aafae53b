"""Connections waiting for their welcome are bounded in number, per peer address
(``peer_handshakes``) and in all (``max_handshakes``): each may hold up to ``max_frame``
of a hello, so past the bound a connection is refused ``unavailable`` (retryable) before
anything is read from it. Over real TCP on 127.0.0.1."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
import trio

from statesession import SessionConfig
from statesession_tcp import FrameDecoder, encode_frame

from ..helpers import echo_app
from ..network import net_server

HALF_A_HELLO = struct.pack("!I", 512 * 1024) + b'{"type":"hello","v":1,"auth":"' + b"x" * 4096


async def open_tcp(url: str) -> trio.SocketStream:
    host, port = url.split("//")[1].rstrip("/").split(":")
    return await trio.open_tcp_stream(host, int(port))


async def first_frame(stream: trio.SocketStream) -> dict[str, Any]:
    decoder = FrameDecoder(1024 * 1024)
    with trio.fail_after(10):
        while (frame := decoder.next_frame()) is None:
            data = await stream.receive_some(65536)
            assert data, "the server closed the connection without a frame"
            decoder.feed(data)
    decoded: dict[str, Any] = json.loads(frame)
    return decoded


@pytest.mark.parametrize("limit", ["peer_handshakes", "max_handshakes"])
async def test_handshake_limits_refuse_one_connection_too_many_unavailable(limit: str) -> None:
    """With the limit's connections each half-way through a hello, the next is refused
    unavailable naming the limit; once one of them is gone, a new client is welcomed."""
    config = SessionConfig(handshake_timeout=60, **{limit: 4})
    async with net_server("tcp", echo_app, config=config) as server:
        waiting = [await open_tcp(server.url) for _ in range(4)]
        for stream in waiting:
            await stream.send_all(HALF_A_HELLO)
        await trio.sleep(0.2)
        assert server.manager.statistics().handshakes == 4
        extra = await open_tcp(server.url)
        refused = await first_frame(extra)
        assert (refused["type"], refused["code"], refused["fatal"]) == (
            "error",
            "unavailable",
            True,
        )
        assert limit in refused["message"]
        await extra.aclose()
        await waiting.pop().aclose()
        with trio.fail_after(10):
            while server.manager.statistics().handshakes > 3:  # noqa: ASYNC110 - polls the server
                await trio.sleep(0.01)
        welcomed = await open_tcp(server.url)
        await welcomed.send_all(encode_frame('{"type":"hello","v":1}'))
        assert (await first_frame(welcomed))["type"] == "welcome"
        for stream in [*waiting, welcomed]:
            await stream.aclose()
