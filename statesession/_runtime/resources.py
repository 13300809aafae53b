"""The resources a session owns: registered by the app, closed in reverse order by the
cleanup cascade, each under its own timeout."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import trio

from .._core.exceptions import SessionClosedError
from .cascade import OwnedResource
from .state import T
from .tasks import Tasks


class Resources(Tasks):
    """A layer of :class:`Session`: the resources it owns."""

    __slots__ = ()

    def add_resource(
        self,
        name: str,
        close: Callable[[], Awaitable[object] | object],
        *,
        force: Callable[[], object] | None = None,
        cleanup_timeout: float | None = None,
    ) -> None:
        """Register something to close when the session terminates.

        ``close`` (sync or async) runs under ``cleanup_timeout`` (default
        ``config.cleanup_timeout``); if it overruns -- it is cut short, or it shields
        itself or swallows the cancellation -- it is reported forced and ``force`` (sync),
        if given, is called. Resources close in the reverse order of registration.

        A session that is ending still takes a resource until its cleanup has closed
        the others (a task finishing in its grace period loses nothing); after that this
        raises :class:`SessionClosedError` and the resource stays the caller's.
        """
        self._check_takes_resources()
        if cleanup_timeout is None:
            cleanup_timeout = self._runtime.config.cleanup_timeout
        elif not cleanup_timeout > 0:
            raise ValueError(f"cleanup_timeout must be positive, got {cleanup_timeout!r}")
        if self._resources is None:
            self._resources = []
        self._resources.append(OwnedResource(name, close, force, cleanup_timeout))

    async def enter_resource(
        self,
        name: str,
        manager: AbstractAsyncContextManager[T],
        *,
        cleanup_timeout: float | None = None,
    ) -> T:
        """Enter an async context manager now and exit it when the session terminates.

        The exit runs in the cleanup task, not in the task that entered it, so it must not
        be a context manager that holds a nursery or cancel scope (run such code in a task
        started with :meth:`start_soon` instead). Like :meth:`add_resource`, an ending
        session takes it until its cleanup has closed the others; after that this raises
        :class:`SessionClosedError` without entering it (or, if that happened while it
        was being entered, after exiting it again).
        """
        self._check_takes_resources()
        value = await manager.__aenter__()

        async def close() -> None:
            await manager.__aexit__(None, None, None)

        try:
            self.add_resource(name, close, cleanup_timeout=cleanup_timeout)
        except BaseException:
            timeout = cleanup_timeout or self._runtime.config.cleanup_timeout
            with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout):
                await close()
            raise
        return value

    def _check_takes_resources(self) -> None:
        if self._closing and (self._cleanup is None or self._cleanup.resources_closed):
            raise SessionClosedError(
                self.reason or "terminated",
                f"session {self.id} has closed its resources ({self.reason}); it takes no more",
            )
