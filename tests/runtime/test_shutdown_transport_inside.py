"""Cancelling the code around open_manager with the transport served inside its block
(the embedding docs/operating.md shows) still sends each attached client its last frame:
a connection whose serving task is cancelled says goodbye itself."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

import statesession
from statesession import SessionConfig

from ..helpers import echo_app

CONFIG = SessionConfig(reconnect_window=30, send_timeout=2, cleanup_timeout=3)


async def frames_until_closed(stream: trio.SocketStream) -> list[dict[str, Any]]:
    from statesession_tcp import FrameDecoder

    decoder = FrameDecoder(1 << 20)
    frames: list[dict[str, Any]] = []
    with trio.move_on_after(10):
        while True:
            while (frame := decoder.next_frame()) is not None:
                frames.append(json.loads(frame))
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            decoder.feed(chunk)
    return frames


async def test_cancelling_around_the_embedding_example_still_says_goodbye() -> None:
    """docs/operating.md's embedding (serve() in a nursery inside open_manager's block),
    over real TCP on 127.0.0.1: cancelling the code around it still sends an attached
    client its last frame (closed server_shutdown, without a store)."""
    from statesession_tcp import encode_frame

    with trio.fail_after(30):
        with trio.CancelScope() as around:
            async with (
                statesession.open_manager(echo_app, config=CONFIG) as manager,
                trio.open_nursery() as nursery,  # the transport, inside the manager's block
            ):
                url = await nursery.start(statesession.serve, manager, "tcp://127.0.0.1:0")
                host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
                stream = await trio.open_tcp_stream(host, int(port))
                await stream.send_all(encode_frame('{"type":"hello","v":1}'))
                while not manager.statistics().connections:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                around.cancel()
                await trio.sleep_forever()
        frames = await frames_until_closed(stream)
        await stream.aclose()
    kinds = [frame["type"] for frame in frames]
    assert kinds[0] == "welcome", frames
    last = frames[-1]
    assert (last["type"], last.get("code")) == ("error", "server_shutdown"), frames
