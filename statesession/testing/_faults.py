"""A Channel wrapper that injects faults: cuts, drops, delays, silence."""

from __future__ import annotations

from collections.abc import Callable

import trio

from .._core.channel import Channel
from .._core.exceptions import ChannelBrokenError, ChannelClosedError

__all__ = ["FaultyChannel"]


class FaultyChannel(Channel):
    """Wrap ``inner`` and break it on purpose.

    * ``cut_after=n``: cut the connection once ``n`` frames have passed (either way);
    * ``drop(frame) -> bool``: frames for which it returns true silently vanish;
    * ``delay``: seconds each frame is held back;
    * :meth:`cut`: break it now; :meth:`silence`: from now on every frame vanishes and the
      connection stays open, as a peer that died without a word.

    A cut makes pending and later operations on this end raise ChannelBrokenError; the
    inner channel is cut too when it can be (memory channels), or closed when this end
    is closed, so that the peer notices.
    """

    def __init__(
        self,
        inner: Channel,
        *,
        cut_after: int | None = None,
        drop: Callable[[str | bytes], bool] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.inner = inner
        self.cut_after = cut_after
        self.drop = drop
        self.delay = delay
        #: Frames that passed, both ways.
        self.frames = 0
        self._cut = False
        self._silent = False
        self._closed = False
        self._pending: set[trio.CancelScope] = set()

    @property
    def peer(self) -> str:
        return f"faulty:{self.inner.peer}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Break the connection now."""
        if self._cut:
            return
        self._cut = True
        for scope in self._pending:
            scope.cancel()
        cut_inner = getattr(self.inner, "cut", None)
        if callable(cut_inner):
            cut_inner()

    def silence(self) -> None:
        """Drop every frame from now on, in both directions, without closing."""
        self._silent = True

    def _check(self) -> None:
        if self._closed:
            raise ChannelClosedError(f"{self.peer} was closed by this side")
        if self._cut:
            raise ChannelBrokenError(f"{self.peer} was cut")

    def _passed(self) -> None:
        self.frames += 1
        if self.cut_after is not None and self.frames >= self.cut_after:
            self.cut()

    async def send(self, frame: str) -> None:
        self._check()
        if self._silent or (self.drop is not None and self.drop(frame)):
            await trio.lowlevel.checkpoint()
            return
        if self.delay:
            await trio.sleep(self.delay)
            self._check()
        with trio.CancelScope() as scope:
            self._pending.add(scope)
            try:
                await self.inner.send(frame)
            finally:
                self._pending.discard(scope)
        self._check()
        self._passed()

    async def receive(self) -> str | bytes:
        while True:
            self._check()
            with trio.CancelScope() as scope:
                self._pending.add(scope)
                try:
                    frame = await self.inner.receive()
                finally:
                    self._pending.discard(scope)
            self._check()
            if scope.cancelled_caught:
                continue
            if self._silent or (self.drop is not None and self.drop(frame)):
                continue
            if self.delay:
                await trio.sleep(self.delay)
                self._check()
            self._passed()
            return frame

    async def aclose(self, error: str | None = None) -> None:
        self._closed = True
        await self.inner.aclose(error)

    async def abort(self) -> None:
        """Close at once, as a crashed peer would: the inner channel is aborted."""
        self._closed = True
        for scope in self._pending:
            scope.cancel()
        await self.inner.abort()
