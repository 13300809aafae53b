"""Closing a WebSocket channel keeps to the caller's deadline: with time left it closes
politely (a close frame, a wait for the reply); out of time it closes the TCP connection
at once; either way it leaves no task and no socket behind. Over real sockets on
127.0.0.1, so the bounds are checked against trio's clock with a generous margin."""

from __future__ import annotations

import math

import pytest
import trio

import statesession
from statesession import Channel, SessionConfig

from ..network import RawWebSocket, raw_websocket_server

WS_TRANSPORTS = ["websocket", "websockets"]
#: Seconds a bounded close may overrun its deadline on a loaded machine.
MARGIN = 1.0


async def _held_server(
    transport: str, config: SessionConfig, nursery: trio.Nursery
) -> tuple[str, list[Channel]]:
    """Serve ``transport``, keeping each server channel for the test to close."""
    channels: list[Channel] = []

    async def handler(channel: Channel) -> None:
        channels.append(channel)
        await trio.sleep_forever()

    loaded = statesession.load_transport(transport)
    url = await nursery.start(
        lambda task_status: loaded.serve(
            handler, "ws://127.0.0.1:0/", config=config, task_status=task_status
        )
    )
    return url, channels


@pytest.mark.parametrize("peer", ["idle", "with a full send buffer"])
async def test_a_server_channel_whose_peer_never_answers_closes_within_the_deadline(
    peer: str,
) -> None:
    """On the trio-websocket transport, a server channel whose client upgraded, then never
    reads nor answers the close, is closed within a 2 s deadline (its own close_timeout
    being 10 s): its socket is released and the client sees the close frame, then the
    end of the stream."""
    config = SessionConfig(send_timeout=10.0, max_frame=1 << 20)
    async with trio.open_nursery() as nursery:
        url, channels = await _held_server("websocket", config, nursery)
        async with await RawWebSocket.connect(url) as raw:
            with trio.fail_after(5):
                while not channels:  # noqa: ASYNC110 - the server's handler fills it
                    await trio.sleep(0.01)
            channel = channels[0]
            if peer == "with a full send buffer":
                with trio.move_on_after(1.0) as filling:
                    while True:
                        await channel.send("x" * 65536)
                assert filling.cancelled_caught
            start = trio.current_time()
            with trio.move_on_after(2.0):
                await channel.aclose()
            took = trio.current_time() - start
            assert took < 2.0 + MARGIN, f"aclose took {took:.2f} s under a 2 s deadline"
            assert channel.stream.socket.fileno() == -1  # type: ignore[attr-defined]
            await raw.wait_ended(timeout=10)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("deadline", ["already passed", "passing during the close"])
@pytest.mark.parametrize("transport", WS_TRANSPORTS)
async def test_a_client_channel_closed_against_a_deadline_leaves_no_task_behind(
    transport: str, deadline: str
) -> None:
    """A client channel closed when the caller is out of time -- already, or while waiting
    for a server that never answers the close -- returns by the deadline, closes its
    socket (the server sees the end of the stream) and ends the task it ran in the
    nursery it was opened in."""
    loaded = statesession.load_transport(transport)
    async with raw_websocket_server() as (url, arrived), trio.open_nursery() as nursery:
        channel = await loaded.connect(url, nursery=nursery, max_frame=65536)
        raw = await arrived.receive()
        start = trio.current_time()
        allowed = 0.0 if deadline == "already passed" else 0.5
        with trio.CancelScope(deadline=-math.inf if allowed == 0 else start + allowed):
            await channel.aclose()
        took = trio.current_time() - start
        assert took < allowed + MARGIN, f"aclose took {took:.2f} s, allowed {allowed} s"
        assert channel.stream.socket.fileno() == -1  # type: ignore[attr-defined]
        await raw.wait_ended()
        with trio.move_on_after(5):
            while nursery.child_tasks:  # noqa: ASYNC110 - waits for the channel's task
                await trio.sleep(0.01)
        assert not nursery.child_tasks, f"left behind: {[t.name for t in nursery.child_tasks]}"


@pytest.mark.parametrize("transport", WS_TRANSPORTS)
async def test_connecting_to_a_server_that_closes_during_the_upgrade_fails(
    transport: str,
) -> None:
    """A server that reads the HTTP upgrade request, then closes the connection without
    answering, makes connect raise ChannelBrokenError instead of waiting for ever."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def hang_up(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)

    loaded = statesession.load_transport(transport)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, hang_up, listeners)
        with (
            pytest.raises(statesession.ChannelBrokenError, match="could not open"),
            trio.fail_after(5),
        ):
            await loaded.connect(f"ws://127.0.0.1:{port}/", nursery=nursery, max_frame=65536)
        nursery.cancel_scope.cancel()
