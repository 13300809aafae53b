"""The ``websocket`` transport, on trio-websocket: one text message = one frame."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    wrap_client_stream,
    wrap_server_stream,
)

from statesession import (
    Channel,
    ChannelBrokenError,
    ChannelClosedError,
    FrameTooLargeError,
    SessionConfig,
)
from statesession.sockets import Stream, reset, url_host

from ._common import (
    CLOSE_CODES,
    MESSAGE_TOO_BIG,
    RECEIVE_SIZE,
    WebSocketServing,
    address,
    first_cause,
)

__all__ = ["WebSocketChannel", "WebSocketTransport", "transport"]

log = logging.getLogger("statesession.websocket")


class WebSocketChannel(Channel):
    """A Channel over one WebSocket connection (text messages)."""

    def __init__(
        self,
        connection: WebSocketConnection,
        stream: Stream | None = None,
        *,
        max_frame: int,
        close_timeout: float = 10.0,
    ) -> None:
        self.connection = connection
        self.stream = stream
        self._max_frame = max_frame
        self._close_timeout = close_timeout
        self._closed = False
        self.closed = trio.Event()
        remote = connection.remote
        self._peer = f"ws:{getattr(remote, 'address', remote)}:{getattr(remote, 'port', '')}"

    @property
    def peer(self) -> str:
        return self._peer

    def _error(
        self, exc: ConnectionClosed, *, receiving: bool
    ) -> ChannelBrokenError | ChannelClosedError | FrameTooLargeError:
        if self._closed:
            return ChannelClosedError(f"{self._peer} was closed by this side")
        reason = exc.reason
        if reason is None:
            return ChannelBrokenError(f"{self._peer}: the connection broke")
        detail = f": {reason.reason}" if reason.reason else ""
        if reason.code == MESSAGE_TOO_BIG and receiving:
            # 1009 (Message Too Big): a frame over a limit -- ours (max_frame) or the
            # peer's -- ended the connection.
            return FrameTooLargeError(None, self._max_frame)
        return ChannelBrokenError(
            f"{self._peer}: the connection was closed ({reason.code} {reason.name}{detail})"
        )

    async def send(self, frame: str) -> None:
        if self._closed:
            raise ChannelClosedError(f"{self._peer} was closed by this side")
        try:
            await self.connection.send_message(frame)
        except ConnectionClosed as exc:
            raise self._error(exc, receiving=False) from exc

    async def receive(self) -> str | bytes:
        if self._closed:
            raise ChannelClosedError(f"{self._peer} was closed by this side")
        try:
            return await self.connection.get_message()
        except ConnectionClosed as exc:
            raise self._error(exc, receiving=True) from exc

    async def aclose(self, error: str | None = None) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            # The close handshake waits for the peer; one that stopped reading gets
            # close_timeout, then its TCP connection is closed under it.
            with trio.move_on_after(self._close_timeout):
                await self.connection.aclose(CLOSE_CODES.get(error, 4000), error)
        finally:
            # When the peer closed first, the connection's own aclose() returns without
            # closing the TCP stream: this channel owns the stream and closes it.
            if self.stream is not None:
                await trio.aclose_forcefully(self.stream)
            self.closed.set()

    async def abort(self) -> None:
        """Reset the TCP connection (RST) without a close handshake, as a crashed peer or a
        failed network would."""
        self._closed = True
        if self.stream is not None:
            await reset(self.stream)
        self.closed.set()


class WebSocketTransport(WebSocketServing):
    """``ws://host:port/path`` (and ``wss://`` to connect): one text message per frame.

    Each connection -- its HTTP upgrade included -- runs in its own nursery and error
    boundary, so nothing one client does can end another connection or the server.
    """

    name = "websocket"

    async def _serve_one(
        self,
        stream: trio.SocketStream,
        handler: Callable[[Channel], Awaitable[None]],
        config: SessionConfig,
    ) -> None:
        channel: WebSocketChannel | None = None
        async with trio.open_nursery() as nursery:
            # The HTTP upgrade gets the handshake timeout: a client that never finishes it
            # (slowloris) is dropped.
            with trio.move_on_after(config.handshake_timeout):
                request = await wrap_server_stream(
                    nursery,
                    self._server_stream(stream),
                    max_message_size=config.max_frame,
                    receive_buffer_size=RECEIVE_SIZE,
                )
                connection = await request.accept()
                channel = WebSocketChannel(
                    connection,
                    stream,
                    max_frame=config.max_frame,
                    close_timeout=config.send_timeout,
                )
            if channel is None:
                nursery.cancel_scope.cancel()
                return
            try:
                await handler(channel)
            finally:
                await channel.aclose()
                nursery.cancel_scope.cancel()

    async def connect(self, url: str, *, nursery: trio.Nursery, max_frame: int) -> Channel:
        channel: Channel = await nursery.start(self._client, url, max_frame)
        return channel

    async def _client(
        self,
        url: str,
        max_frame: int,
        task_status: trio.TaskStatus[Channel] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        host, port, path, secure = address(url)
        started = False
        stream: Stream | None = None
        try:
            async with trio.open_nursery() as inner:
                # (With TLS, its handshake done before trio-websocket sees the stream: a
                # TLS handshake that fails inside trio-websocket's leaves it waiting for
                # ever.)
                stream = await self._open_stream(host, port, secure)
                connection = await wrap_client_stream(
                    inner,
                    stream,
                    url_host(host) if port in (80, 443) else f"{url_host(host)}:{port}",
                    path,
                    max_message_size=max_frame,
                    receive_buffer_size=RECEIVE_SIZE,
                )
                channel = WebSocketChannel(connection, stream, max_frame=max_frame)
                task_status.started(channel)
                started = True
                await channel.closed.wait()
                inner.cancel_scope.cancel()
        except Exception as exc:
            # Before the channel is handed over, a failure is the caller's to see; after,
            # the channel reports the broken connection itself.
            cause = first_cause(exc)
            if not started:
                raise ChannelBrokenError(f"could not open {url}: {cause}") from cause
            log.info("connection to %s ended: %s", url, cause)
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)


#: The instance registered as the ``websocket`` transport (and for ``ws``/``wss``).
transport = WebSocketTransport()
