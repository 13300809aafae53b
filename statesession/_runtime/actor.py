"""The actor: the one task that owns a session's nursery, runs its jobs one at a time,
and turns any failure of its own into the internal-error cascade."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from .._core.exceptions import ProtocolError, SessionClosedError
from .cascade import describe
from .state import _DEFERRED, _Reply, log
from .states import StateWork


class Actor(StateWork):
    """A layer of :class:`Session`: the actor that runs its jobs."""

    __slots__ = ()

    async def run_actor(self) -> None:
        """The actor: owns the nursery, runs jobs until the session settles for good.
        Started by the manager, which forgets the session when this returns; nothing
        raised here reaches the manager's other sessions."""
        runtime = self._runtime
        try:
            async with trio.open_nursery() as nursery:
                # A session ends through its lifecycle (the manager's shutdown terminates
                # it), never by a cancellation from outside tearing through its cascade.
                nursery.cancel_scope.shield = True
                self._nursery = nursery
                if self.state == "passivated":
                    self._run_job(lambda: self._step("rehydrate"), None)
                else:
                    self._run_job(lambda: runtime.lifecycle.start(self), None)
                while not self._done():
                    if not self._jobs:
                        self._actor_waiting = trio.lowlevel.current_task()
                        await trio.lowlevel.wait_task_rescheduled(self._abort_actor_wait)
                        continue
                    job, reply = self._jobs.popleft()
                    self._run_job(job, reply)
                nursery.cancel_scope.cancel()
        except Exception as exc:
            # A bug in the actor itself (jobs and state work have their own nets): its
            # nursery is gone, so its tasks are; still close what it holds and say so.
            log.error("session %s crashed: %s", self.id, exc, exc_info=exc)
            with trio.CancelScope(shield=True):
                await self._last_resort(exc)
        finally:
            self._disarm()
            self._nursery = None
            self._finished = True
            self._closing = True
            self._settled = True
            self._fail_waiters()
            runtime.registry.forget(self)

    async def _last_resort(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        self.reason = self.reason or "internal_error"
        self._closing = True
        for connection in list(self._connections):
            connection.abort()
        if self._cleanup is None:
            self._cleanup = self._new_cleanup()
        try:
            await self._cleanup.close_resources()
        except Exception as again:
            self._cleanup.failed_step("cleanup", self._cleanup.since, describe(again))
        self._cleanup.failed_step("actor", self._cleanup.since, describe(exc))
        self._report(self.reason)
        source = self.state
        if source not in ("terminated", "error"):
            self.state = "error"  # the chart's own verdict on a failed action
            self.settle(exc)
            for tell in self._runtime.observers.transition:
                tell(self, "error.execution", source or "initializing", "error")

    def _done(self) -> bool:
        if self.state == "terminated" or (self.state == "passivated" and self._parked):
            return True
        # A session whose cleanup failed while the manager shuts down is given up on.
        return self.state == "error" and self._runtime.registry.closing and self.report is not None

    @trio.lowlevel.enable_ki_protection
    def _run_job(self, job: Callable[[], Any], reply: _Reply | None) -> None:
        try:
            value = job()
        except (ProtocolError, SessionClosedError) as exc:
            if reply is None:
                self._internal_failure(exc)
                return
            reply.error = exc  # an answer: the connection is refused
        except Exception as exc:
            # A bug in the runtime: the session cannot be trusted to go on, but it still
            # ends through its lifecycle, so its cascade closes what it holds.
            self._internal_failure(exc)
            if reply is not None:
                reply.error = self._failed_answer()
        else:
            if value is _DEFERRED:
                return
            if reply is not None:
                reply.value = value
        if reply is not None:
            reply.done.set()

    def _internal_failure(self, exc: BaseException) -> None:
        """A job of the actor raised: log it and terminate the session (reason
        ``internal_error``), unless it is already ending."""
        log.error("session %s: internal error: %s", self.id, describe(exc), exc_info=exc)
        if self._failure is None:
            self._failure = exc
        if self.state not in ("terminating", "terminated"):
            self._step("terminate", reason="internal_error")

    def _fail_waiters(self) -> None:
        closed = SessionClosedError(self.reason or "terminated")
        while self._jobs:
            _, reply = self._jobs.popleft()
            if reply is not None:
                reply.error = closed
                reply.done.set()
        for _, _, reply in self._joining or ():
            reply.error = closed
            reply.done.set()
        self._joining = None
        self._terminating = 0  # their jobs will not run
        self._wake_all()
