"""The lifecycle host: the chart's entry and exit actions (``begin_*``), the work each
state runs (setup and health checks, the cleanup cascade, passivation) and the report."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from .._core.codec import encode_frame, error_text
from .._core.exceptions import ProtocolError
from .._core.frames import ClosedFrame, StateFrame
from .._core.snapshot import ClientState, InboxMessage, Snapshot
from .attachments import Attachments
from .cascade import OwnedTask, describe
from .state import _being_saved, _saved_for_shutdown, log


class StateWork(Attachments):
    """A layer of :class:`Session`: the lifecycle host and state work."""

    __slots__ = ()

    def _shut_down(self) -> None:
        """The server is stopping (a job of the actor, so it acts on the state the session
        is in, not on one read from outside): a session that can be saved is -- its
        clients resume it from the next server -- the others terminate."""
        if self.state in ("passivated", "terminating", "terminated"):
            return  # on its way out already
        # Not limited by max_stored_sessions: the quota keeps abandoned sessions from
        # filling the store; the live ones (at most max_sessions) are saved when the
        # server stops, and one being brought back still has its snapshot there.
        if self._step(
            "passivate",
            store=self._runtime.store is not None,
            shutdown=True,
            restored=self._stored,
            reason="server_shutdown",
        ):
            return
        self._step("terminate", reason="server_shutdown")

    def request_shutdown(self) -> None:
        """Ask the session to passivate or terminate for the server stopping (see
        :meth:`_shut_down`); returns at once."""
        self._post(self._shut_down)

    def _snapshot(self, reason: str) -> Snapshot:
        buffer = self._delivery.buffer
        return Snapshot(
            id=self.id,
            token_hash=self._token_hash,
            principal=self.principal,
            created=self.created,
            passivated=time.time(),
            reason=reason,
            data=self.data,
            first_seq=buffer.first_seq,
            frames=tuple(frame for _, frame in buffer.frames_after(0)),
            clients=tuple(
                ClientState(id=c.id, acked=c.acked, processed=c.processed, received=c.received)
                for c in self._delivery.clients.values()
            ),
            inbox=tuple(
                InboxMessage(client=m.client, seq=m.seq, data=m.data) for m in self._incoming
            ),
        )

    def begin_initializing(self) -> None:
        runtime = self._runtime
        if runtime.setup is None and runtime.health_check is None:
            self._post(lambda: self._activate(True))  # nothing to wait for
        else:
            self._start_state_work(self._initialize, "setup")

    def begin_active(self) -> None:
        if self._stored:
            # Live again: only now is the store's copy stale (a session whose coming
            # back was cut short still has it).
            self._stored = False
            store = self._runtime.store
            if store is not None:
                store.forget(self.id)
        self._deadline = math.inf
        config = self._runtime.config
        first = min(config.heartbeat_interval, self._idle_after())
        self._arm(trio.current_time() + first, self._heartbeat)
        if not self._app_started:
            self._app_started = True
            self._spawn(OwnedTask("app"), self._runtime.app, (self,), app=True)

    def begin_reconnecting(self) -> None:
        self._deadline = trio.current_time() + self._runtime.config.reconnect_window
        self._arm(self._deadline, self._expire_window)

    def begin_passivated(self, reason: str) -> None:
        self.reason = reason
        self._count_saving(True)  # against max_stored_sessions until the store has it
        self._stop_operations()
        self._start_state_work(partial(self._passivate, reason), "passivate")

    def begin_terminating(self, reason: str) -> None:
        self.reason = reason
        self._settled = False  # a retry from `error` settles again when it finishes
        self._stop_operations()
        self._start_state_work(self._terminate_work, "cleanup")

    def _stop_operations(self) -> None:
        """Entering terminating or passivated: take no more operations, wake every waiter
        (they see the session closing), note which tasks are running."""
        self._closing = True
        # A passivation interrupted by a terminate has not been reported yet: the same
        # cleanup goes on, and its report will hold what the passivation did.
        if self._cleanup is None:
            self._cleanup = self._new_cleanup()
        self._cleanup.restart()
        if self.state != "passivated":
            refusal = ProtocolError(
                "terminated", f"session is {self.state} ({self.reason})", fatal=True
            )
        elif self._runtime.registry.closing:
            refusal = _saved_for_shutdown()
        else:
            refusal = _being_saved(self.id)
        self._fail_joins(refusal)
        self._wake_all()

    def settle(self, error: BaseException | None) -> None:
        if error is not None:
            self.error = error
            log.error("session %s failed: %s", self.id, describe(error), exc_info=error)
        self._settled = True
        self._wake_changed()

    def _count_saving(self, saving: bool) -> None:
        if saving != self._saving:
            self._saving = saving
            self._runtime.registry.count_saving(1 if saving else -1)

    def end_state(self, state: str) -> None:
        self._count_saving(False)
        self._disarm()
        if self._state_scope is not None:
            self._state_scope.cancel()
            self._state_scope = None

    def transitioned(self, event: str, source: str, target: str) -> None:
        if source == target:
            return
        log.info("session %s: %s -> %s (%s)", self.id, source, target, event)
        if target == "terminating" and self._connections:
            text = encode_frame(StateFrame(state=target))
            for connection in self._connections:
                connection.queue(text)
        for tell in self._runtime.observers.transition:
            tell(self, event, source, target)

    def _start_state_work(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        assert self._nursery is not None
        scope = self._state_scope = trio.CancelScope()
        self._nursery.start_soon(self._run_state_work, scope, work, name, name=f"{self.id}:{name}")

    async def _run_state_work(
        self, scope: trio.CancelScope, work: Callable[[], Awaitable[None]], name: str
    ) -> None:
        """Run one state's work once the previous state's work has unwound, so that two
        states' work never overlap (a cascade starts after the interrupted passivation
        it follows has accounted for what it was closing).

        The previous work was cancelled when its state was left; one that does not stop
        within cleanup_timeout (it shields itself: a ``setup`` that will not be
        interrupted) is reported as a task that failed, and this work goes on. A work
        that raises -- a bug -- ends the session through its lifecycle all the same."""
        token = object()
        with scope:
            if self._state_work is not None:
                waited = trio.current_time()
                with trio.move_on_after(self._runtime.config.cleanup_timeout):
                    while self._state_work is not None:
                        await self._wait_changed()
                if self._state_work is not None:
                    self._left_running(self._state_work_name, waited)
            self._state_work, self._state_work_name = token, name
            try:
                await work()
            except Exception as exc:
                self._post(partial(self._work_failed, name, exc))
            finally:
                if self._state_work is token:
                    self._state_work = None
                self._wake_changed()

    def _left_running(self, name: str, since: float) -> None:
        why = (
            f"still running {self._runtime.config.cleanup_timeout:g} s after its state was "
            "left (it does not stop when cancelled)"
        )
        log.error("session %s: %s %s", self.id, name, why)
        if self._cleanup is not None:
            self._cleanup.failed_step(name, since, why)

    def _work_failed(self, name: str, exc: Exception) -> None:
        """A state's work raised (a bug in the runtime): end the session all the same --
        a failed cleanup closes what is left, reports the failure, and ends in error."""
        log.error("session %s: %s failed: %s", self.id, name, describe(exc), exc_info=exc)
        if self._failure is None:
            self._failure = exc
        if self.state == "terminating" and self._cleanup is not None:
            self._cleanup.failed_step(name, self._cleanup.since, describe(exc))
            self._start_state_work(self._salvage, "salvage")
        elif self.state not in ("terminating", "terminated", "error"):
            self._step("terminate", reason="internal_error")

    async def _salvage(self) -> None:
        """The cascade failed half way: stop what runs, close what is left, report (the
        report holds the failure, so the session ends in error)."""
        cleanup = self._cleanup
        assert cleanup is not None
        for step in (cleanup.stop_tasks, cleanup.close_resources):
            try:
                await step()
            except Exception as exc:
                cleanup.failed_step("salvage", cleanup.since, describe(exc))
        self._report(self.reason or "terminated")
        self._post_event("finish", leaked=len(self.report.failed) if self.report else 1)

    async def _initialize(self) -> None:
        runtime = self._runtime
        try:
            if runtime.setup is not None:
                await runtime.setup(self)
            healthy = True
            if runtime.health_check is not None:
                healthy = bool(await runtime.health_check(self))
        except Exception as exc:
            log.warning("session %s: setup failed: %s", self.id, describe(exc))
            self._failure = exc
            self._post_event("terminate", reason="setup_failed")
            return
        self._post(lambda: self._activate(healthy))

    def _activate(self, healthy: bool) -> None:
        if not self._step("activate", allocated=True, healthy=healthy):
            if self.state == "initializing":
                self._step("terminate", reason="health_check_failed")
            return
        joining, self._joining = self._joining or [], None
        failure: Exception | None = None
        for connection, ack, reply in joining:
            try:
                self._register(connection, ack)
            except ProtocolError as exc:
                reply.error = exc
            except Exception as exc:  # every joiner is answered, then the job fails
                failure = failure or exc
                reply.error = self._failed_answer()
            reply.done.set()
        if failure is not None:
            raise failure
        if not self._connections:
            self._step("detach", connections=0)

    async def _terminate_work(self) -> None:
        """Terminate: notify connections, stop tasks, close resources, report."""
        cleanup = self._cleanup
        assert cleanup is not None
        reason = self.reason or "terminated"
        await cleanup.close_connections(encode_frame(ClosedFrame(reason=reason)))
        await cleanup.stop_tasks()
        await cleanup.close_resources()
        self._report(reason)
        self._post_event("finish", leaked=len(self.report.failed) if self.report else 0)

    async def _passivate(self, reason: str) -> None:
        """Passivate: let connections go, stop tasks, save the snapshot, close resources.

        A session that cannot be saved is terminated rather than kept half alive.
        """
        if reason == "server_shutdown":
            last_words = error_text(_saved_for_shutdown())
        else:
            last_words = encode_frame(StateFrame(state="passivated"))
        cleanup = self._cleanup
        assert cleanup is not None
        await cleanup.close_connections(
            last_words, error="server_shutdown" if reason == "server_shutdown" else None
        )
        await cleanup.stop_tasks()
        store = self._runtime.store
        try:
            if store is None:
                raise RuntimeError("no session store to passivate to")
            try:
                await store.save(self._snapshot(reason))
            finally:
                self._count_saving(False)  # the store counts it now (or never will)
        except Exception as exc:
            log.error("session %s: cannot be saved: %s", self.id, describe(exc), exc_info=exc)
            self._failure = exc
            self._post_event("terminate", reason="passivation_failed")
            return
        await cleanup.close_resources()
        self._report(f"passivated ({reason})")
        for tell in self._runtime.observers.passivated:
            tell(self, reason)
        self._parked = True
        self._post(lambda: None)  # the actor sees that it is done

    def _report(self, reason: str) -> None:
        """The cleanup pass is over: its report becomes the session's."""
        cleanup = self._cleanup
        assert cleanup is not None
        report = self.report = cleanup.report(reason, error=self._failure)
        self._cleanup = None
        for tell in self._runtime.observers.cleanup_report:
            tell(self, report)
