"""The ``websocket`` transport, on trio-websocket: one text message = one frame.

Theory of operation
-------------------
trio-websocket runs a reader task per connection that feeds wsproto and hands each
message to ``get_message`` through a memory channel. Two things it does not do are done
here, by :class:`_Connection`, a ``WebSocketConnection`` that this transport builds itself
(as ``wrap_server_stream`` and ``wrap_client_stream`` would, with this class):

* *Refusing what is not text.* A binary message fails the connection with close code
  1003 (Unsupported Data): frames are JSON text.
* *Failing a connection as RFC 6455 says.* When wsproto cannot accept what the peer sent
  -- text that is not UTF-8 (1007), a frame that breaks the protocol (1002) -- it reports
  a close event that the peer never sent, and trio-websocket would drop the TCP
  connection without a close frame. Here the close frame with that code goes out first.

Either way the reader stops reading, logs the peer's name and why, and (on the server)
closes the TCP connection; the channel's next ``receive`` raises ``ChannelBrokenError``
saying why.

*Closing.* ``aclose`` runs the close handshake for at most ``close_timeout`` seconds --
and never past its caller's deadline, which may already have passed -- then closes the
TCP connection, whatever the handshake came to.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, NoReturn

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from statesession import (
    Channel,
    ChannelBrokenError,
    ChannelClosedError,
    FrameTooLargeError,
    SessionConfig,
)
from statesession.sockets import Stream, peer_address, peer_name, reset, url_host

from ._common import (
    CLOSE_CODES,
    INVALID_DATA,
    MESSAGE_TOO_BIG,
    NOT_TEXT,
    RECEIVE_SIZE,
    UNSUPPORTED_DATA,
    WebSocketServing,
    address,
    first_cause,
)

__all__ = ["WebSocketChannel", "WebSocketTransport", "transport"]

log = logging.getLogger("statesession.websocket")


class _Connection(WebSocketConnection):
    """A trio-websocket connection that refuses binary messages and fails the connection
    with a close frame when wsproto cannot accept what the peer sent (see the module's
    docstring). Its reader task calls the two handlers overridden here."""

    def __init__(
        self, stream: Stream, ws_connection: WSConnection, *, max_frame: int, **options: Any
    ) -> None:
        super().__init__(stream, ws_connection, max_message_size=max_frame, **options)
        self.peer = peer_name(stream, "ws")
        #: Why this side failed the connection, if it did.
        self.refused: str | None = None
        self._max_frame = max_frame
        #: The UTF-8 bytes of a message that came in more than one event, so far.
        self._gathered: bytearray | None = None

    async def _refuse(self, code: int, why: str, reason: str = NOT_TEXT) -> NoReturn:
        """Fail the connection (RFC 6455, section 7.1.7): send a close frame with ``code``
        and ``reason``, stop reading and, on the server, close the TCP connection."""
        log.info(
            "%s %s: failing the connection with close code %d (%s)", self.peer, why, code, reason
        )
        self.refused = f"{why}; this side failed the connection with close code {code}"
        if self._wsproto.state is ConnectionState.OPEN:
            with suppress(ConnectionClosed):  # (the connection broke meanwhile)
                await self._send(CloseConnection(code=code, reason=reason))
        await self._close_web_socket(code, reason)
        self._close_handshake.set()
        if self.is_server:
            await self._close_stream()
        raise ConnectionClosed(self._close_reason)  # ends the reader task's loop

    async def _handle_message_event(self, event: BytesMessage | TextMessage) -> None:
        """Take a message event: a whole message (the usual case) is passed on as it is;
        the parts of one that came in several events (fragments, or a frame split over
        reads) are gathered as UTF-8 bytes in one buffer, so that what a message holds
        before it is whole is its bytes, however many parts they came in -- never a
        Python string per part (which costs some 60 bytes each, and a peer chooses how
        many). Either way, more than ``max_frame`` bytes fails the connection with 1009."""
        if isinstance(event, BytesMessage):
            await self._refuse(UNSUPPORTED_DATA, "sent a binary message")
        data = event.data
        gathered = self._gathered
        if gathered is None and event.message_finished:
            if len(data) > self._max_frame or (
                not data.isascii() and len(data.encode()) > self._max_frame
            ):
                await self._too_big()
            await self._pass_on(data)
            return
        if gathered is None:
            gathered = self._gathered = bytearray()
        gathered += data.encode()
        if len(gathered) > self._max_frame:
            self._gathered = None
            await self._too_big()
        if event.message_finished:
            self._gathered = None
            await self._pass_on(gathered.decode())

    async def _too_big(self) -> NoReturn:
        await self._refuse(
            MESSAGE_TOO_BIG,
            "sent a message over max_frame",
            f"a message is at most {self._max_frame} bytes",
        )

    async def _pass_on(self, message: str) -> None:
        # (The receiving end is closed once this side closed the channel: nothing to do.)
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await self._send_channel.send(message)

    async def _handle_close_connection_event(self, event: CloseConnection) -> None:
        if self._wsproto.state is ConnectionState.OPEN:
            # A close the peer did not send: wsproto could not parse what it sent.
            code = int(event.code)
            if code == INVALID_DATA:
                await self._refuse(code, f"sent text that is not UTF-8 ({event.reason})")
            await self._refuse(code, "broke the WebSocket protocol", event.reason or "")
        await super()._handle_close_connection_event(event)


async def _open_server(
    nursery: trio.Nursery, stream: Stream, *, max_frame: int
) -> WebSocketConnection:
    """Answer the HTTP upgrade on ``stream`` and return the connection (as trio-websocket's
    ``wrap_server_stream`` and ``accept`` would, with :class:`_Connection`)."""
    connection = _Connection(
        stream,
        WSConnection(ConnectionType.SERVER),
        max_frame=max_frame,
        receive_buffer_size=RECEIVE_SIZE,
    )
    nursery.start_soon(connection._reader_task)
    request = await connection._get_request()
    return await request.accept()


async def _open_client(
    nursery: trio.Nursery, stream: Stream, host: str, path: str, *, max_frame: int
) -> WebSocketConnection:
    """Do the HTTP upgrade on ``stream`` and return the connection (as trio-websocket's
    ``wrap_client_stream`` would, with :class:`_Connection`); raise ChannelBrokenError if
    the server ends the connection first (``wrap_client_stream`` would wait for ever)."""
    connection = _Connection(
        stream,
        WSConnection(ConnectionType.CLIENT),
        host=host,
        path=path,
        max_frame=max_frame,
        receive_buffer_size=RECEIVE_SIZE,
    )
    upgraded = connection._open_handshake
    hung_up = False

    async def read() -> None:
        nonlocal hung_up
        await connection._reader_task()  # (what it raises reaches the opener as it is)
        if not upgraded.is_set():  # the server ended the connection first
            hung_up = True
            upgraded.set()

    nursery.start_soon(read)
    await upgraded.wait()
    if hung_up:
        raise ChannelBrokenError("the server closed the connection during the upgrade")
    return connection


def _remote(connection: WebSocketConnection) -> object:
    """The connection's remote endpoint, or ``None`` once its socket is gone: a peer that
    reset the connection during the upgrade makes ``getpeername`` fail with ENOTCONN."""
    try:
        return connection.remote
    except OSError:
        return None


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
        if stream is not None:
            self._address = peer_address(stream)
        else:
            address = getattr(_remote(connection), "address", None)
            self._address = str(address) if address is not None else None
        if isinstance(connection, _Connection):
            self._peer = connection.peer
        else:
            remote = _remote(connection)
            self._peer = (
                f"ws:{getattr(remote, 'address', remote)}:{getattr(remote, 'port', '')}"
                if remote is not None
                else "ws:?"
            )

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def peer_address(self) -> str | None:
        return self._address

    def _error(
        self, exc: ConnectionClosed, *, receiving: bool
    ) -> ChannelBrokenError | ChannelClosedError | FrameTooLargeError:
        if self._closed:
            return ChannelClosedError(f"{self._peer} was closed by this side")
        reason = exc.reason
        if reason is not None and reason.code == MESSAGE_TOO_BIG and receiving:
            # 1009 (Message Too Big): a frame over a limit -- ours (max_frame) or the
            # peer's -- ended the connection.
            return FrameTooLargeError(None, self._max_frame)
        refused = getattr(self.connection, "refused", None)
        if refused is not None:
            return ChannelBrokenError(f"{self._peer} {refused}")
        if reason is None:
            return ChannelBrokenError(f"{self._peer}: the connection broke")
        detail = f": {reason.reason}" if reason.reason else ""
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
            # close_timeout -- or what is left of the caller's time, if less -- then its
            # TCP connection is closed under it.
            with trio.move_on_after(self._close_timeout):
                await self.connection.aclose(CLOSE_CODES.get(error, 4000), error)
        finally:
            # (First: the caller may be out of time, and the close below then raises
            # Cancelled once it has closed the stream.)
            self.closed.set()
            # When the peer closed first, the connection's own aclose() returns without
            # closing the TCP stream: this channel owns the stream and closes it.
            if self.stream is not None:
                await trio.aclose_forcefully(self.stream)

    async def abort(self) -> None:
        """Reset the TCP connection (RST) without a close handshake, as a crashed peer or a
        failed network would."""
        self._closed = True
        self.closed.set()
        if self.stream is not None:
            await reset(self.stream)


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
                try:
                    connection = await _open_server(
                        nursery, self._server_stream(stream), max_frame=config.max_frame
                    )
                except (ConnectionClosed, trio.BrokenResourceError, OSError) as exc:
                    # The peer went away before its 101 could be written: ordinary, and
                    # anyone can do it at will, so no more than a debug line.
                    log.debug("%s went away during the upgrade: %r", peer_name(stream, "ws"), exc)
                    nursery.cancel_scope.cancel()
                    return
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
                try:
                    await channel.aclose()
                finally:
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
                connection = await _open_client(
                    inner,
                    stream,
                    url_host(host) if port in (80, 443) else f"{url_host(host)}:{port}",
                    path,
                    max_frame=max_frame,
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
