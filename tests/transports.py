"""Channel pairs over each transport, for the conformance suite and end-to-end tests."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

import statesession
from statesession import Channel, SessionConfig
from statesession.testing import memory_channel_pair

MAX_FRAME = 256 * 1024


def scheme_of(transport: str) -> str:
    """The URL scheme a transport is served at."""
    return "ws" if transport in ("websocket", "websockets") else transport


def pair_opener(
    name: str, *, max_frame: int = MAX_FRAME
) -> Callable[[], AbstractAsyncContextManager[tuple[Channel, Channel]]]:
    """An ``open_pair`` for the conformance suite: (server end, client end)."""

    @asynccontextmanager
    async def open_memory() -> AsyncIterator[tuple[Channel, Channel]]:
        server, client = memory_channel_pair(max_frame=max_frame)
        try:
            yield server, client
        finally:
            await server.aclose()
            await client.aclose()

    @asynccontextmanager
    async def open_network() -> AsyncIterator[tuple[Channel, Channel]]:
        transport = statesession.load_transport(name)
        config = SessionConfig(max_frame=max_frame, send_timeout=2.0)
        handed: trio.MemorySendChannel[Channel]
        handed, taken = trio.open_memory_channel[Channel](math.inf)
        done = trio.Event()

        async def handler(channel: Channel) -> None:
            await handed.send(channel)
            await done.wait()

        scheme = scheme_of(name)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: transport.serve(
                    handler, f"{scheme}://127.0.0.1:0/", config=config, task_status=task_status
                )
            )
            client = await transport.connect(url, nursery=nursery, max_frame=max_frame)
            with trio.fail_after(10):
                server = await taken.receive()
            try:
                yield server, client
            finally:
                done.set()
                with trio.move_on_after(20):
                    await client.aclose()
                    await server.aclose()
                nursery.cancel_scope.cancel()

    return open_memory if name == "memory" else open_network


class NetServer:
    """A manager served over a real transport on 127.0.0.1, recording server channels."""

    def __init__(self, manager: statesession.SessionManager, url: str, nursery: trio.Nursery):
        self.manager = manager
        self.url = url
        self.nursery = nursery
        self.channels: list[Channel] = []


@asynccontextmanager
async def net_server(
    transport: str,
    app: Callable[[statesession.Session], object],
    *,
    config: SessionConfig | None = None,
) -> AsyncIterator[NetServer]:
    config = config or SessionConfig()
    loaded = statesession.load_transport(transport)
    scheme = scheme_of(transport)
    async with trio.open_nursery() as nursery:
        async with statesession.open_manager(app, config=config) as manager:  # type: ignore[arg-type]
            server: NetServer

            async def handler(channel: Channel) -> None:
                server.channels.append(channel)
                await manager.serve_channel(channel)

            url = await nursery.start(
                lambda task_status: loaded.serve(
                    handler, f"{scheme}://127.0.0.1:0/", config=config, task_status=task_status
                )
            )
            server = NetServer(manager, url, nursery)
            yield server
        # Sessions are cleaned up and their clients told; now stop listening.
        nursery.cancel_scope.cancel()
