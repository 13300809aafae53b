"""The ``websockets`` transport: websockets' sans-I/O protocol, driven by trio streams,
with no task per connection (the channel, in ``_websockets_channel``, says how).

This module does the HTTP upgrade, each way, and serves.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from websockets.client import ClientProtocol
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import WebSocketURI

from statesession import Channel, ChannelBrokenError, SessionConfig
from statesession.sockets import Stream, peer_name

from ._common import RECEIVE_SIZE, WebSocketServing, address, first_cause
from ._websockets_channel import LINGER as LINGER
from ._websockets_channel import WebsocketsChannel as WebsocketsChannel
from ._websockets_channel import feed, send_chunks

__all__ = ["LINGER", "WebsocketsChannel", "WebsocketsTransport", "transport"]

log = logging.getLogger("statesession.websockets")

_Protocol = ServerProtocol | ClientProtocol


async def _read_handshake(stream: Stream, protocol: _Protocol) -> list[object]:
    """Feed ``protocol`` until its handshake event (and whatever came with it) is out;
    ``[]`` if the peer closed first."""
    while True:
        data = await stream.receive_some(RECEIVE_SIZE)
        feed(protocol, data)
        events: list[Any] = protocol.events_received()
        if events or not data or protocol.state is State.CLOSED:
            return events
        if protocol.handshake_exc is not None:
            return []


async def _flush(stream: Stream, protocol: _Protocol) -> None:
    """Write what ``protocol`` queued during the handshake."""
    chunks = protocol.data_to_send()
    if chunks:
        await send_chunks(stream, chunks)


class WebsocketsTransport(WebSocketServing):
    """``ws://host:port/path`` (and ``wss://``) on websockets' sans-I/O protocol: one
    text message per frame, no task per connection.

    Not registered for the ``ws``/``wss`` schemes (the ``websocket`` transport is); pick
    it by name: ``serve(manager, url, transport="websockets")``,
    ``open_client(url, transport="websockets")``, ``statesession serve --transport
    websockets``. Each connection -- its HTTP upgrade included -- is its own error
    boundary, so nothing one client does can end another connection or the server.
    """

    name = "websockets"

    async def _serve_one(
        self,
        raw: trio.SocketStream,
        handler: Callable[[Channel], Awaitable[None]],
        config: SessionConfig,
    ) -> None:
        channel = None
        # The HTTP upgrade gets the handshake timeout: a client that never finishes it
        # (slowloris) is dropped.
        with trio.move_on_after(config.handshake_timeout):
            channel = await self._accept(raw, config)
        if channel is None:
            return
        try:
            await handler(channel)
        finally:
            await channel.aclose()

    async def _accept(
        self, raw: trio.SocketStream, config: SessionConfig
    ) -> WebsocketsChannel | None:
        stream = self._server_stream(raw)
        protocol = ServerProtocol(max_size=config.max_frame)
        try:
            events = await _read_handshake(stream, protocol)
            request = events[0] if events else None
            accepted = False
            if isinstance(request, Request):
                response = protocol.accept(request)
                protocol.send_response(response)
                accepted = response.status_code == 101
            await _flush(stream, protocol)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("%s: the WebSocket handshake failed: %s", peer_name(stream, "ws"), exc)
            return None
        if not accepted:
            log.info(
                "%s: refused the WebSocket handshake: %s",
                peer_name(stream, "ws"),
                protocol.handshake_exc or "the client closed the connection",
            )
            return None
        return WebsocketsChannel(
            stream,
            protocol,
            max_frame=config.max_frame,
            close_timeout=config.send_timeout,
            events=events[1:],
        )

    async def connect(self, url: str, *, nursery: trio.Nursery, max_frame: int) -> Channel:
        host, port, path, secure = address(url)
        resource, _, query = path.partition("?")
        uri = WebSocketURI(secure, host, port, resource, query)
        stream: Stream | None = None
        try:
            stream = await self._open_stream(host, port, secure)
            protocol = ClientProtocol(uri, max_size=max_frame)
            protocol.send_request(protocol.connect())
            await _flush(stream, protocol)
            events = await _read_handshake(stream, protocol)
            if not events or not isinstance(events[0], Response) or protocol.handshake_exc:
                why = protocol.handshake_exc or "the server closed the connection"
                raise ChannelBrokenError(f"could not open {url}: {why}")
        except BaseException as exc:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            if isinstance(exc, OSError | trio.BrokenResourceError | trio.ClosedResourceError):
                cause = first_cause(exc)
                raise ChannelBrokenError(f"could not open {url}: {cause}") from cause
            raise
        channel = WebsocketsChannel(stream, protocol, max_frame=max_frame, events=events[1:])
        await nursery.start(channel._close_with)
        return channel


#: The instance registered as the ``websockets`` transport.
transport = WebsocketsTransport()
