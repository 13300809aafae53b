"""What a session owns -- its tasks and resources -- and the cleanup that lets them go.

Theory of operation
-------------------
A session tracks every task it started (:class:`OwnedTask`, each in a cancel scope of its
own) and every resource it was handed (:class:`OwnedResource`). When it stops taking
operations -- it is terminating, or being passivated -- it opens a :class:`Cascade`: one
pass of cleanup, which runs the steps in order and *keeps what each step found* until
the pass is reported:

1. :meth:`Cascade.close_connections`: each attached connection is sent what it still has
   to be sent and its last words; one that has not gone after ``send_timeout`` is
   aborted; one that has not detached ``cleanup_timeout`` after that is a failure.
2. :meth:`Cascade.stop_tasks`: tasks get the grace period to finish, then are cancelled;
   one still running ``cleanup_timeout`` after its cancellation is a failure.
3. :meth:`Cascade.close_resources`: newest first, each under its own timeout; a close that
   runs past it -- cut short, or because it shields itself or swallows the cancellation
   -- is *forced* (its ``force`` callback runs) and reported so.

A step interrupted half way (a terminate arriving while a passivation saves) loses
nothing: the next pass continues the same cascade, and its report lists every item once.
Until its resource step has run, a cascade still takes resources handed to the session
(a task finishing in its grace period), so that they are closed and reported like the
others.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from inspect import isawaitable

import trio

from .._core.config import SessionConfig
from .._core.report import CleanupItem, CleanupReport, Outcome
from .ports import ConnectionPort

__all__ = ["Cascade", "OwnedResource", "OwnedTask", "describe"]

log = logging.getLogger("statesession")


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class OwnedTask:
    """A task a session started: its cancel scope, and how it ended."""

    __slots__ = ("ended_at", "error", "forced", "name", "scope")

    def __init__(self, name: str) -> None:
        self.name = name
        self.scope = trio.CancelScope()
        self.forced = False
        self.ended_at: float | None = None
        self.error: BaseException | None = None


class OwnedResource:
    """Something a session closes when it ends: ``close`` under ``timeout``, then
    ``force`` if the close overran."""

    __slots__ = ("close", "force", "name", "timeout")

    def __init__(
        self,
        name: str,
        close: Callable[[], Awaitable[object] | object],
        force: Callable[[], object] | None,
        timeout: float,
    ) -> None:
        self.name = name
        self.close = close
        self.force = force
        self.timeout = timeout


class Cascade:
    """One pass of a session's cleanup, and every item it has found so far."""

    __slots__ = (
        "_attached",
        "_config",
        "_held_resources",
        "_live_tasks",
        "_previous_report",
        "_session_id",
        "_wait_changed",
        "connections",
        "doomed",
        "resources",
        "resources_closed",
        "since",
        "tasks",
    )

    def __init__(
        self,
        session_id: str,
        *,
        config: SessionConfig,
        tasks: dict[OwnedTask, None],
        connections: list[ConnectionPort],
        take_resources: Callable[[], list[OwnedResource] | None],
        wait_changed: Callable[[], Awaitable[None]],
        previous_report: Callable[[], CleanupReport | None],
    ) -> None:
        """A cleanup pass of session ``session_id``, over what it holds: its ``tasks``
        and ``connections`` (the session's own collections, which the steps watch empty),
        its resources (``take_resources``: the session's list, or ``None`` while it has
        none; closing them pops them from it), a wait for anything of the session to
        change, and its previous report (the one this pass's report follows)."""
        self._session_id = session_id
        self._config = config
        self._live_tasks = tasks
        self._attached = connections
        self._held_resources = take_resources
        self._wait_changed = wait_changed
        self._previous_report = previous_report
        #: When the session stopped taking operations (the grace period counts from it).
        self.since = trio.current_time()
        #: Tasks alive when the pass began (or joined it since): what the report covers.
        self.doomed: list[OwnedTask] = []
        self.tasks: list[CleanupItem] = []
        self.resources: list[CleanupItem] = []
        self.connections: list[CleanupItem] = []
        #: The resource step has run: a resource handed over now can no longer be taken.
        self.resources_closed = False

    def restart(self) -> None:
        """The session stopped taking operations (again): the grace period starts now,
        and every task alive is covered."""
        self.since = trio.current_time()
        self.doomed.extend(t for t in self._live_tasks if t not in self.doomed)
        self.resources_closed = False

    # -- steps --------------------------------------------------------------------------

    async def close_connections(self, last_words: str, error: str | None = None) -> None:
        """Send every connection what it has not been sent, then ``last_words``
        (``error``: the protocol error code they carry); abort the ones that have not
        gone after send_timeout; report the ones that still will not go."""
        live = self._attached
        wait_changed = self._wait_changed
        attached = list(live)
        if not attached:
            return
        config = self._config
        started = trio.current_time()
        for connection in attached:
            connection.finish(last_words, flush=True, error=error)
        with trio.move_on_after(config.send_timeout):
            while live:
                await wait_changed()
        aborted = list(live)
        for connection in aborted:
            connection.abort()
        if aborted:
            with trio.move_on_after(config.cleanup_timeout):
                while any(c in live for c in aborted):
                    await wait_changed()
        now = trio.current_time()
        for connection in attached:
            name = f"{connection.client} ({connection.peer})"
            if connection in live:
                outcome, why = (
                    Outcome.FAILED,
                    (
                        f"still attached {config.cleanup_timeout:g} s after it was aborted "
                        "(its channel does not end when cancelled)"
                    ),
                )
                log.error("session %s: connection %s %s", self._session_id, name, why)
            elif connection in aborted:
                outcome, why = Outcome.FORCED, None
            else:
                outcome, why = Outcome.CLOSED, None
            self.connections.append(
                CleanupItem(
                    kind="connection",
                    name=name,
                    outcome=outcome,
                    duration=now - started,
                    error=why,
                )
            )

    async def stop_tasks(self) -> None:
        """Give tasks the grace period, cancel the rest, wait for them to unwind."""
        config = self._config
        tasks = self._live_tasks
        wait_changed = self._wait_changed
        # (Each wait opens its scope only when there is something to wait for: passivating
        # thousands of sessions pays for every cancel scope.)
        if tasks:
            with trio.move_on_at(self.since + config.cancel_grace):
                while tasks:
                    await wait_changed()
        if tasks:
            for task in tasks:
                task.forced = True
                task.scope.cancel()
            with trio.move_on_after(config.cleanup_timeout):
                while tasks:
                    await wait_changed()
        now = trio.current_time()
        started = self.since
        doomed, self.doomed = self.doomed, []
        self.tasks.extend(_task_item(task, started, now) for task in doomed)

    async def close_resources(self) -> None:
        """Close resources, newest first, each under its own timeout; what was closed is
        kept here until reported, so an interrupted step still accounts for all."""
        resources = self._held_resources()
        while resources:
            await self._close_resource(resources.pop())
        self.resources_closed = True

    async def _close_resource(self, resource: OwnedResource) -> None:
        started = trio.current_time()
        deadline = started + resource.timeout
        outcome, error = Outcome.CLOSED, None
        try:
            with trio.move_on_at(deadline) as scope:
                result = resource.close()
                if isawaitable(result):
                    await result
            # Not cancelled_caught: a close that shields itself, or swallows the
            # cancellation, still overran -- and one that blocks without a checkpoint
            # is never cancelled at all, so the clock says it.
            if scope.cancel_called or trio.current_time() > deadline:
                outcome = Outcome.FORCED
                if resource.force is not None:
                    resource.force()
        except trio.Cancelled:
            # The step closing it was interrupted: the close was cut short, like an
            # overrun; it is not started again.
            self.resources.append(
                CleanupItem(
                    kind="resource",
                    name=resource.name,
                    outcome=Outcome.FORCED,
                    duration=trio.current_time() - started,
                    error="interrupted",
                )
            )
            if resource.force is not None:
                with suppress(Exception):
                    resource.force()
            raise
        except Exception as exc:
            outcome, error = Outcome.FAILED, describe(exc)
            log.warning(
                "session %s: closing %s failed: %s", self._session_id, resource.name, error
            )
        self.resources.append(
            CleanupItem(
                kind="resource",
                name=resource.name,
                outcome=outcome,
                duration=trio.current_time() - started,
                error=error,
            )
        )

    def failed_step(self, name: str, since: float, error: str) -> None:
        """A piece of the session's own work (a state's work) that did not stop or that
        failed: reported as a task that failed."""
        self.tasks.append(
            CleanupItem(
                kind="task",
                name=name,
                outcome=Outcome.FAILED,
                duration=trio.current_time() - since,
                error=error,
            )
        )

    def report(self, reason: str, *, error: BaseException | None) -> CleanupReport:
        return CleanupReport(
            session=self._session_id,
            reason=reason,
            tasks=tuple(self.tasks),
            resources=tuple(self.resources),
            connections=tuple(self.connections),
            duration=trio.current_time() - self.since,
            error=describe(error) if error is not None else None,
            previous=self._previous_report(),
        )


def _task_item(task: OwnedTask, started: float, now: float) -> CleanupItem:
    ended = task.ended_at
    if ended is None:
        return CleanupItem(
            kind="task",
            name=task.name,
            outcome=Outcome.FAILED,
            duration=now - started,
            error="still running after cancellation",
        )
    if task.error is not None:
        return CleanupItem(
            kind="task",
            name=task.name,
            outcome=Outcome.FAILED,
            duration=ended - started,
            error=describe(task.error),
        )
    return CleanupItem(
        kind="task",
        name=task.name,
        outcome=Outcome.FORCED if task.forced else Outcome.CLOSED,
        duration=ended - started,
    )
