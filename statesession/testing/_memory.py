"""An in-memory Channel pair: the transport's twin for tests (no sockets)."""

from __future__ import annotations

import math

import trio

from .._core.channel import Channel
from .._core.exceptions import ChannelBrokenError, ChannelClosedError, FrameTooLargeError

__all__ = ["MemoryChannel", "memory_channel_pair"]


class _Link:
    """What the two ends share: how the link broke, if it did (``"was cut"``, ``"was
    reset by its peer"``), and the ends."""

    __slots__ = ("broken", "ends")

    def __init__(self) -> None:
        self.broken: str | None = None
        self.ends: list[MemoryChannel] = []

    def break_off(self, why: str) -> None:
        """Break the link: frames in flight are lost, and every pending or later operation
        on an end not closed by its own side raises ChannelBrokenError."""
        if self.broken is None:
            self.broken = why
        for end in self.ends:
            end._send.close()
            end._receive.close()


class MemoryChannel(Channel):
    """One end of :func:`memory_channel_pair`."""

    def __init__(
        self,
        send_channel: trio.MemorySendChannel[str],
        receive_channel: trio.MemoryReceiveChannel[str],
        *,
        link: _Link,
        name: str,
        max_frame: int | None,
        peer_address: str | None = None,
    ) -> None:
        self._send = send_channel
        self._receive = receive_channel
        self._link = link
        self._name = name
        self._max_frame = max_frame
        self._peer_address = peer_address
        self._closed = False

    @property
    def peer(self) -> str:
        return f"memory:{self._name}"

    @property
    def peer_address(self) -> str | None:
        return self._peer_address

    def _check(self) -> None:
        if self._closed:
            raise ChannelClosedError(f"{self.peer} was closed by this side")
        if self._link.broken is not None:
            raise ChannelBrokenError(f"{self.peer} {self._link.broken}")

    def _broken(self) -> ChannelBrokenError | ChannelClosedError:
        if self._closed:
            return ChannelClosedError(f"{self.peer} was closed by this side")
        if self._link.broken is not None:
            return ChannelBrokenError(f"{self.peer} {self._link.broken}")
        return ChannelBrokenError(f"{self.peer}: the peer closed the channel")

    async def send(self, frame: str) -> None:
        self._check()
        try:
            await self._send.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._broken() from exc

    async def receive(self) -> str:
        self._check()
        try:
            frame = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise self._broken() from exc
        limit = self._max_frame
        if limit is not None and len(frame) > limit // 4:
            size = (
                len(frame.encode("utf-8", "surrogatepass"))
                if isinstance(frame, str)
                else (len(frame))
            )
            if size > limit:
                raise FrameTooLargeError(size, limit)
        return frame

    async def aclose(self, error: str | None = None) -> None:
        if not self._closed:
            self._closed = True
            self._send.close()
            self._receive.close()
        await trio.lowlevel.checkpoint()

    async def abort(self) -> None:
        """Close this end at once, as a crashed peer would: frames in flight are lost, this
        end is closed (ChannelClosedError), and the peer's pending and later operations
        raise ChannelBrokenError."""
        self._closed = True
        self._link.break_off("was reset by its peer")
        await trio.lowlevel.checkpoint()

    def cut(self) -> None:
        """Break the link abruptly, as a network failure would: frames in flight are lost,
        and every pending or later operation on either end raises ChannelBrokenError."""
        self._link.break_off("was cut")


def memory_channel_pair(
    *, buffer: int | float = 16, max_frame: int | None = None, peer_address: str | None = None
) -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected channels, ``(server_side, client_side)``.

    ``buffer`` is how many frames each direction holds before ``send`` waits (``math.inf``
    for unbounded); ``max_frame`` makes ``receive`` raise FrameTooLargeError for frames
    over that many bytes, as a transport with a size limit does; ``peer_address`` is
    what the server side says its peer's address is (for per-peer limits).
    """
    if buffer != math.inf and (not isinstance(buffer, int) or buffer < 0):
        raise ValueError(f"buffer must be a non-negative int or math.inf, got {buffer!r}")
    to_client_send, to_client_receive = trio.open_memory_channel[str](buffer)
    to_server_send, to_server_receive = trio.open_memory_channel[str](buffer)
    link = _Link()
    server = MemoryChannel(
        to_client_send,
        to_server_receive,
        link=link,
        name="server",
        max_frame=max_frame,
        peer_address=peer_address,
    )
    client = MemoryChannel(
        to_server_send, to_client_receive, link=link, name="client", max_frame=max_frame
    )
    link.ends.extend((server, client))
    return server, client
