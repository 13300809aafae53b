"""The port every transport implements: a connection that moves frames (no I/O here)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType

__all__ = ["Channel"]


class Channel(abc.ABC):
    """One connection to one peer, moving whole frames (JSON text) in order.

    A transport adapts its network connection to this interface and hands it to
    :meth:`SessionManager.serve_channel`; everything else -- handshake, resume, acks,
    heartbeats, limits -- lives in the core.

    Errors are the library's own: using a channel after :meth:`aclose` raises
    :class:`~statesession.ChannelClosedError`; a peer or network that ended the connection
    (politely or not) raises :class:`~statesession.ChannelBrokenError`; a frame over the
    transport's size limit raises :class:`~statesession.FrameTooLargeError`.

    ``send`` and ``receive`` may be called concurrently from two tasks (one each). Either
    may be cancelled; a cancelled ``send`` may leave the channel broken.
    """

    @abc.abstractmethod
    async def send(self, frame: str) -> None:
        """Send one frame; return once the transport has taken it."""

    async def send_many(self, frames: Sequence[str]) -> None:
        """Send several frames, in order; return once the transport has taken them all.

        A transport that can write several frames at once overrides this (one system
        call instead of one per frame), and the core then hands it everything that is
        ready (a replay, a burst), up to about 64 KiB per call; ``send_timeout`` bounds
        each call. Channels that keep this default are sent frame by frame.
        Cancellation is as for ``send``."""
        for frame in frames:
            await self.send(frame)

    @abc.abstractmethod
    async def receive(self) -> str | bytes:
        """Wait for and return the next frame: text, or the UTF-8 bytes of the text (the
        core validates the encoding, so a transport need not decode -- but one that must
        check the UTF-8 anyway, as a WebSocket does, returns the text it decoded, so that
        it is not decoded twice)."""

    @abc.abstractmethod
    async def aclose(self, error: str | None = None) -> None:
        """Close the connection. Idempotent; never raises for a broken connection.

        ``error`` is the protocol error code (``"bad_frame"``, ``"server_shutdown"``, ...)
        when the core ends the connection because of a fatal error, ``None`` for a normal
        close. A transport that can say why it closes (a WebSocket close code) does; the
        others ignore it.

        Runs under its caller's deadline, and keeps it: with time left it closes politely
        (a close handshake, draining what the peer still sends); cancelled, or called
        when the deadline has already passed, it closes at once -- the socket closed, the
        peer seeing the end. The core gives a connection it has given up on (a peer that
        stopped reading) no time at all. Must return in bounded time even if the peer
        stopped reading; the conformance suite checks all of this.
        """

    async def abort(self) -> None:
        """Close the connection at once, with no goodbye, as a crashed peer or a failed
        network would: a network transport resets it (a TCP RST, no close handshake).
        Afterwards this side is closed, as after :meth:`aclose`; the peer's ``receive``
        and ``send`` raise :class:`~statesession.ChannelBrokenError`. Idempotent; never
        raises for a broken connection. For tests and fault injection: the core never
        calls it.

        The default closes with no time left (``aclose`` under a cancel scope already
        cancelled), which the ``aclose`` rules above make an immediate close; a transport
        that can reset a connection overrides it."""
        import trio  # here: the sans-I/O core imports without trio

        with trio.CancelScope() as scope:
            scope.cancel()
            await self.aclose()

    @property
    def peer(self) -> str:
        """A short description of the other end, for logs."""
        return "unknown"

    @property
    def peer_address(self) -> str | None:
        """The other end's network address without its port (``"192.0.2.7"``), which
        admission limits count per peer (``peer_session_rate``); ``None`` when there is
        no such thing, and then no per-peer limit applies."""
        return None

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
