"""The TCP transport: length-prefixed frames over trio TCP streams."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import trio

from statesession import (
    Channel,
    ChannelBrokenError,
    ChannelClosedError,
    SessionConfig,
    Transport,
    TransportError,
)
from statesession.sockets import peer_address, peer_name, reset, serve_tcp

from ._framing import FrameDecoder, encode_frame

__all__ = ["DEFAULT_PORT", "TcpChannel", "TcpTransport", "transport"]

log = logging.getLogger("statesession.tcp")

DEFAULT_PORT = 8766
_RECEIVE_SIZE = 65536
#: Seconds a closing channel waits for its peer to close too (see TcpChannel.aclose).
_LINGER = 2.0


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "tcp":
        raise TransportError(f"not a tcp:// URL: {url!r}")
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port
    except ValueError as exc:
        raise TransportError(f"bad port in {url!r}: {exc}") from None
    return host, DEFAULT_PORT if port is None else port


class TcpChannel(Channel):
    """A Channel over one TCP stream, each frame prefixed by its 4-byte length."""

    def __init__(
        self, stream: trio.SocketStream, *, max_frame: int, close_timeout: float = 10.0
    ) -> None:
        self.stream = stream
        self._decoder = FrameDecoder(max_frame)
        self._close_timeout = close_timeout
        self._closed = False
        self._peer = peer_name(stream, "tcp")
        self._address = peer_address(stream)

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def peer_address(self) -> str | None:
        return self._address

    def _error(self, exc: BaseException) -> ChannelBrokenError | ChannelClosedError:
        if self._closed:
            return ChannelClosedError(f"{self._peer} was closed by this side")
        return ChannelBrokenError(f"{self._peer}: {exc or type(exc).__name__}")

    async def send(self, frame: str) -> None:
        if self._closed:
            raise ChannelClosedError(f"{self._peer} was closed by this side")
        try:
            await self.stream.send_all(encode_frame(frame))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._error(exc) from exc

    async def receive(self) -> bytes:
        if self._closed:
            raise ChannelClosedError(f"{self._peer} was closed by this side")
        decoder = self._decoder
        while (frame := decoder.next_frame()) is None:
            try:
                data = await self.stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._error(exc) from exc
            if not data:
                if self._closed:
                    raise ChannelClosedError(f"{self._peer} was closed by this side")
                cut = " in the middle of a frame" if decoder.pending else ""
                raise ChannelBrokenError(f"{self._peer}: the peer closed the connection{cut}")
            decoder.feed(data)
        return frame

    async def aclose(self, error: str | None = None) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        # Closing a socket that still has unread input makes the kernel send a reset, which
        # throws away what this side sent last (a final message, the closing frame). So:
        # end our side (EOF), read and drop what the peer still sends until it closes
        # too, and only then close. A healthy peer closes within a round trip; one that
        # does not is given _LINGER seconds (or close_timeout, if shorter), and never more
        # than what is left of the caller's time: a caller already out of time gets the
        # socket closed at once (the first step is cancelled; the close below is not).
        try:
            with trio.move_on_after(min(self._close_timeout, _LINGER)):
                try:
                    await self.stream.send_eof()
                    while await self.stream.receive_some(_RECEIVE_SIZE):
                        pass
                except (
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    trio.BusyResourceError,
                ):
                    pass
        finally:
            await trio.aclose_forcefully(self.stream)

    async def abort(self) -> None:
        """Reset the connection (RST), as a crashed peer or a failed network would."""
        self._closed = True
        await reset(self.stream)


class TcpTransport(Transport):
    """``tcp://host:port``: length-prefixed JSON frames over plain TCP."""

    name = "tcp"
    schemes = ("tcp",)
    default_port = DEFAULT_PORT

    async def serve(
        self,
        handler: Callable[[Channel], Awaitable[None]],
        url: str,
        *,
        config: SessionConfig,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        host, port = _address(url)

        async def serve_one(stream: trio.SocketStream) -> None:
            channel = TcpChannel(
                stream, max_frame=config.max_frame, close_timeout=config.send_timeout
            )
            try:
                await handler(channel)
            finally:
                await channel.aclose()

        await serve_tcp(host, port, serve_one, scheme="tcp", log=log, task_status=task_status)

    async def connect(self, url: str, *, nursery: trio.Nursery, max_frame: int) -> Channel:
        host, port = _address(url)
        stream = await trio.open_tcp_stream(host, port)
        return TcpChannel(stream, max_frame=max_frame)


#: The instance registered as the ``tcp`` transport.
transport = TcpTransport()
