"""The WebSocket transport, on trio-websocket: one text message = one frame."""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

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
    Transport,
    TransportError,
)

__all__ = ["CLOSE_CODES", "DEFAULT_PORT", "WebSocketChannel", "WebSocketTransport", "transport"]

log = logging.getLogger("statesession.websocket")

DEFAULT_PORT = 8765

#: The WebSocket close code for each fatal protocol error (1000 for a normal close).
CLOSE_CODES: dict[str | None, int] = {
    None: 1000,
    "bad_frame": 4000,
    "bad_version": 4001,
    "handshake_timeout": 4002,
    "unknown_session": 4003,
    "bad_token": 4004,
    "resume_gap": 4005,
    "session_limit": 4006,
    "frame_too_large": 4007,
    "terminated": 4008,
    "server_shutdown": 4009,
}
_MESSAGE_TOO_BIG = 1009
_RECEIVE_SIZE = 65536


class WebSocketChannel(Channel):
    """A Channel over one WebSocket connection (text messages)."""

    def __init__(
        self,
        connection: WebSocketConnection,
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None,
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
        if reason.code == _MESSAGE_TOO_BIG and receiving:
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
        stream = self.stream
        if stream is not None:
            sock = stream.socket if isinstance(stream, trio.SocketStream) else None
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await trio.aclose_forcefully(stream)
        self.closed.set()


def _first_cause(exc: BaseException) -> BaseException:
    """The error a nursery's exception group was raised for."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _address(url: str, *, default_port: int) -> tuple[str, int, str, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise TransportError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    try:
        port = parts.port
        if port is None:
            port = 443 if secure else default_port
    except ValueError as exc:
        raise TransportError(f"bad port in {url!r}: {exc}") from None
    return parts.hostname or "127.0.0.1", port, parts.path or "/", secure


class WebSocketTransport(Transport):
    """``ws://host:port/path`` (and ``wss://`` to connect): one text message per frame.

    Each connection -- its HTTP upgrade included -- runs in its own nursery and error
    boundary, so nothing one client does can end another connection or the server.
    """

    name = "websocket"

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        #: Serve ``wss://`` with this context (``None``: plain ``ws://``).
        self.ssl_context = ssl_context

    async def serve(
        self,
        handler: Callable[[Channel], Awaitable[None]],
        url: str,
        *,
        config: SessionConfig,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        host, port, _path, secure = _address(url, default_port=DEFAULT_PORT)
        if secure and self.ssl_context is None:
            raise TransportError(
                f"serving {url} needs TLS: use WebSocketTransport(ssl_context=...) or a ws:// URL"
            )

        async def on_connection(stream: trio.SocketStream) -> None:
            try:
                await self._serve_one(stream, handler, config)
            except Exception as exc:  # one connection's failure must not end the server
                log.error("connection failed: %s", exc, exc_info=exc)
            finally:
                await trio.aclose_forcefully(stream)

        listeners = await trio.open_tcp_listeners(port, host=host)
        if port == 0:
            # Each address a host name resolves to would get a port of its own; keep one,
            # so the URL reported is the whole truth.
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        bound = listeners[0].socket.getsockname()
        scheme = "ws" if self.ssl_context is None else "wss"
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, on_connection, listeners)
            task_status.started(f"{scheme}://{_url_host(bound[0])}:{bound[1]}/")

    async def _serve_one(
        self,
        stream: trio.SocketStream,
        handler: Callable[[Channel], Awaitable[None]],
        config: SessionConfig,
    ) -> None:
        transport_stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = stream
        channel: WebSocketChannel | None = None
        async with trio.open_nursery() as nursery:
            # The HTTP upgrade gets the handshake timeout: a client that never finishes it
            # (slowloris) is dropped.
            with trio.move_on_after(config.handshake_timeout):
                if self.ssl_context is not None:
                    transport_stream = trio.SSLStream(
                        stream, self.ssl_context, server_side=True, https_compatible=True
                    )
                request = await wrap_server_stream(
                    nursery,
                    transport_stream,
                    max_message_size=config.max_frame,
                    receive_buffer_size=_RECEIVE_SIZE,
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
        host, port, path, secure = _address(url, default_port=DEFAULT_PORT)
        started = False
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
        try:
            async with trio.open_nursery() as inner:
                stream = await trio.open_tcp_stream(host, port)
                if secure:
                    stream = trio.SSLStream(
                        stream,
                        ssl.create_default_context(),
                        server_hostname=host,
                        https_compatible=True,
                    )
                connection = await wrap_client_stream(
                    inner,
                    stream,
                    _url_host(host) if port in (80, 443) else f"{_url_host(host)}:{port}",
                    path,
                    max_message_size=max_frame,
                    receive_buffer_size=_RECEIVE_SIZE,
                )
                channel = WebSocketChannel(connection, stream, max_frame=max_frame)
                task_status.started(channel)
                started = True
                await channel.closed.wait()
                inner.cancel_scope.cancel()
        except Exception as exc:
            # Before the channel is handed over, a failure is the caller's to see; after,
            # the channel reports the broken connection itself.
            cause = _first_cause(exc)
            if not started:
                raise ChannelBrokenError(f"could not open {url}: {cause}") from cause
            log.info("connection to %s ended: %s", url, cause)
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)


#: The instance registered as the ``websocket`` transport (and for ``ws``/``wss``).
transport = WebSocketTransport()
