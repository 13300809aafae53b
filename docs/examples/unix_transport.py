"""A complete third-party transport: frames over a Unix domain socket.

It reuses the TCP transport's length-prefixed framing, adapts trio's Unix socket streams to
the Channel port, and is checked by statesession's conformance suite (the tests run it).
To publish it, register it in your distribution's pyproject.toml:

    [project.entry-points."statesession.transports"]
    unix = "mypackage.unix_transport:transport"

after which ``statesession.serve(manager, "unix:///tmp/app.sock")`` and
``statesession.open_client("unix:///tmp/app.sock")`` find it by its URL scheme.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import trio

from statesession import (
    Channel,
    ChannelBrokenError,
    ChannelClosedError,
    SessionConfig,
    Transport,
)
from statesession_tcp import FrameDecoder, encode_frame

log = logging.getLogger("unix_transport")


class UnixChannel(Channel):
    def __init__(self, stream: trio.SocketStream, *, max_frame: int, path: str) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(max_frame)
        self._peer = f"unix:{path}"
        self._closed = False

    @property
    def peer(self) -> str:
        return self._peer

    def _fail(self, exc: BaseException) -> ChannelBrokenError | ChannelClosedError:
        # Map the backend's errors to the library's own: "you closed it" vs "it broke".
        if self._closed:
            return ChannelClosedError(f"{self._peer} was closed by this side")
        return ChannelBrokenError(f"{self._peer}: {exc}")

    async def send(self, frame: str) -> None:
        if self._closed:
            raise ChannelClosedError(f"{self._peer} was closed by this side")
        try:
            await self._stream.send_all(encode_frame(frame))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._fail(exc) from exc

    async def receive(self) -> bytes:
        if self._closed:
            raise ChannelClosedError(f"{self._peer} was closed by this side")
        while (frame := self._decoder.next_frame()) is None:
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._fail(exc) from exc
            if not data:
                raise ChannelBrokenError(f"{self._peer}: the peer closed the connection")
            self._decoder.feed(data)
        return frame

    async def aclose(self, error: str | None = None) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        # End our side, drop what the peer still sends until it closes too, then close:
        # closing with unread input would reset the connection and lose our last frames.
        # Never past the caller's deadline: out of time, the socket is closed at once.
        try:
            with trio.move_on_after(2):
                try:
                    await self._stream.send_eof()
                    while await self._stream.receive_some(65536):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        finally:
            await trio.aclose_forcefully(self._stream)


class UnixTransport(Transport):
    name = "unix"
    schemes = ("unix",)
    default_port = None  # a unix:// URL is a socket file's path

    async def serve(
        self,
        handler: Callable[[Channel], Awaitable[None]],
        url: str,
        *,
        config: SessionConfig,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        path = urlsplit(url).path
        with trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM) as sock:
            await sock.bind(path)
            sock.listen()
            listener = trio.SocketListener(sock)

            async def on_connection(stream: trio.SocketStream) -> None:
                channel = UnixChannel(stream, max_frame=config.max_frame, path=path)
                try:
                    await handler(channel)
                except Exception:  # each connection is its own error boundary
                    log.exception("connection %s failed", channel.peer)
                finally:
                    await channel.aclose()

            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(trio.serve_listeners, on_connection, [listener])
                    task_status.started(f"unix://{path}")
            finally:
                os.unlink(path)

    async def connect(self, url: str, *, nursery: trio.Nursery, max_frame: int) -> Channel:
        path = urlsplit(url).path
        stream = await trio.open_unix_socket(path)
        return UnixChannel(stream, max_frame=max_frame, path=path)


transport = UnixTransport()


async def main() -> None:
    """Serve an echo app over a Unix socket and talk to it once."""
    import tempfile

    import statesession

    async def echo(session: statesession.Session) -> None:
        async for message in session:
            await session.send(message.data)

    with tempfile.TemporaryDirectory() as directory:
        url = f"unix://{directory}/echo.sock"
        async with trio.open_nursery() as nursery:
            async with statesession.open_manager(echo) as manager:
                await nursery.start(
                    lambda task_status: transport.serve(
                        manager.serve_channel,
                        url,
                        config=manager.config,
                        task_status=task_status,
                    )
                )

                async def connect() -> Channel:
                    return await transport.connect(url, nursery=nursery, max_frame=1 << 20)

                async with statesession.open_client(connect) as client:
                    await client.send("over a unix socket")
                    print(await client.receive())
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
