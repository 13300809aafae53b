"""The session lifecycle as a statechart, and the reference interpreter (sans-IO).

Theory of operation
-------------------
:class:`SessionChart` declares the lifecycle: seven states, the events that move between
them, the guards that decide, and the entry/exit actions. It is the single source of truth:
the runtime, the docs diagram and the property tests all read it.

Guards are pure functions of the values sent with the event (the clock, "is the token
right", "how many connections are left"), so the chart never reads time or I/O itself.
Actions are plain synchronous calls on a :class:`LifecycleHost` -- the session runtime --
which may only do synchronous things (open or cancel a cancel scope, start a task, queue a
frame). Nothing here awaits, so a run-to-completion step has no checkpoint and cannot be
torn by cancellation.

A python-statemachine instance costs tens of kilobytes and most of a millisecond to build
(its callback registry is rebuilt for every instance). Sessions therefore do not own one:
an interpreter (:class:`BaseLifecycle`) steps any number of sessions, each of which keeps
only its state id in its ``state`` attribute. The chart's callbacks reach the session
through a cursor (the chart's model) pointed at the session being stepped. Steps never
nest (the chart is synchronous and the runtime single-threaded), so a session costs one
attribute.

:class:`ChartLifecycle` runs the chart on python-statemachine's engine -- the reference.
The engine takes about 140 microseconds per event, more than all the rest of a session's
work when it is passivated or brought back, so the runtime runs the same chart compiled
to tables (:mod:`statesession._lifecycle`), held to the reference by a differential test.

Only the events in :data:`EXTERNAL_EVENTS` may be sent from outside; ``error.execution`` is
raised by the chart itself when an action fails, and moves the session to ``error``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from statemachine import State, StateChart

from .._core.exceptions import LifecycleError

__all__ = [
    "EXTERNAL_EVENTS",
    "FINAL_STATES",
    "STATES",
    "BaseLifecycle",
    "ChartLifecycle",
    "LifecycleHost",
    "SessionChart",
]

log = logging.getLogger("statesession")


class LifecycleHost(Protocol):
    """What the chart drives: one session's runtime.

    ``state`` is where the chart keeps the session's current state id (``None`` before the
    initial state is entered). Every method is synchronous and must not block.
    """

    state: str | None

    def begin_initializing(self) -> None: ...
    def begin_active(self) -> None: ...
    def begin_reconnecting(self) -> None: ...
    def begin_passivated(self, reason: str) -> None: ...
    def begin_terminating(self, reason: str) -> None: ...
    def settle(self, error: BaseException | None) -> None: ...
    def end_state(self, state: str) -> None: ...
    def transitioned(self, event: str, source: str, target: str) -> None: ...


class _Cursor:
    """The chart's model: forwards ``state`` to whichever session is being stepped, and
    notes whether the step took a transition."""

    __slots__ = ("host", "took")

    def __init__(self, host: LifecycleHost) -> None:
        self.host = host
        self.took = False

    @property
    def state(self) -> str | None:
        return self.host.state

    @state.setter
    def state(self, value: str | None) -> None:
        self.host.state = value


class SessionChart(StateChart[_Cursor]):
    """The lifecycle of one client session.

    ==============  ============================================================
    initializing    created; allocation and health checks running
    active          at least one connection attached; heartbeats run
    reconnecting    no connection; messages buffered; the window timer runs
    passivated      saved to a store; nothing left in memory but the snapshot
    terminating     the cleanup cascade runs; no new operations are taken
    terminated      final; the cleanup report is available
    error           failed; flagged for recovery or manual cleanup
    ==============  ============================================================
    """

    # A self-transition (another connection attaching to an active session) must not
    # re-run the entry action, which would restart the state's work.
    enable_self_transition_entries = False
    # An event no transition takes is an answer ("no"): Lifecycle.send returns False.
    # (False here would also turn an error raised after reaching `terminated` into a
    # TransitionNotAllowed escaping send(); pinned by a regression test.)
    allow_event_without_transition = True
    # An exception in an action becomes error.execution and moves the session to `error`.
    catch_errors_as_events = True

    initializing = State(initial=True)
    active = State()
    reconnecting = State()
    passivated = State()
    terminating = State()
    terminated = State(final=True)
    error = State()

    activate = initializing.to(active, cond="ready")
    attach = active.to.itself(  # type: ignore[no-untyped-call]
        internal=True, cond="admissible"
    ) | reconnecting.to(active, cond="admissible")
    detach = active.to(reconnecting, cond="unattached") | active.to.itself(  # type: ignore[no-untyped-call]
        internal=True, unless="unattached"
    )
    expire = reconnecting.to(passivated, cond=["expired", "storable", "idle"]) | reconnecting.to(
        terminating, cond="expired", unless="storable"
    )
    passivate = (
        active.to(passivated, cond=["storable", "idle"])
        | reconnecting.to(passivated, cond=["storable", "idle"])
        # A session being brought back when the server stops goes back to the store.
        | initializing.to(passivated, cond=["storable", "restored"])
    )
    rehydrate = passivated.to(initializing)
    terminate = (
        initializing.to(terminating)
        | active.to(terminating)
        | reconnecting.to(terminating)
        | passivated.to(terminating)
        | error.to(terminating)
    )
    finish = terminating.to(terminated, cond="clean") | terminating.to(error, unless="clean")
    error_execution = (
        initializing.to(error)
        | active.to(error)
        | reconnecting.to(error)
        | passivated.to(error)
        | terminating.to(error)
        | error.to.itself(internal=True, on="failed_again")  # type: ignore[no-untyped-call]
    )

    # -- guards: pure functions of the values sent with the event ----------------------

    def ready(self, allocated: bool = False, healthy: bool = False) -> bool:
        """Activation needs the allocation done and the health checks passed."""
        return allocated and healthy

    def admissible(
        self, token_ok: bool = False, now: float = 0.0, deadline: float = 0.0, kept: bool = False
    ) -> bool:
        """A connection attaches only with the right token, within the reconnect window --
        or after it, while a session that is kept at expiry (``kept``: it is saved, not
        ended) has not been saved yet: it is alive, and attaching it beats saving it and
        bringing it back."""
        return token_ok and (now < deadline or kept)

    def unattached(self, connections: int = 0) -> bool:
        """The session leaves ``active`` when its last connection is gone."""
        return connections == 0

    def expired(self, now: float = 0.0, deadline: float = float("inf")) -> bool:
        """A window expires only once its deadline has passed (a stale timer is ignored)."""
        return now >= deadline

    def storable(self, store: bool = False) -> bool:
        """Passivation needs a store to save the session to."""
        return store

    def idle(self, busy: int = 0, shutdown: bool = False) -> bool:
        """A session whose app declared itself busy is not passivated -- unless the server
        is shutting down, when passivating it beats destroying it."""
        return busy == 0 or shutdown

    def restored(self, restored: bool = False) -> bool:
        """The session is being brought back from the store (not yet active since): its
        snapshot is still there, so saving it again loses nothing."""
        return restored

    def clean(self, leaked: int = 1) -> bool:
        """``terminated`` only when cleanup left nothing behind; otherwise ``error``."""
        return leaked == 0

    # -- actions: synchronous calls on the session runtime ------------------------------

    def on_enter_initializing(self, model: _Cursor) -> None:
        model.host.begin_initializing()

    def on_enter_active(self, model: _Cursor) -> None:
        model.host.begin_active()

    def on_enter_reconnecting(self, model: _Cursor) -> None:
        model.host.begin_reconnecting()

    def on_enter_passivated(self, model: _Cursor, reason: str = "passivated") -> None:
        model.host.begin_passivated(reason)

    def on_enter_terminating(self, model: _Cursor, reason: str = "terminated") -> None:
        model.host.begin_terminating(reason)

    def on_enter_terminated(self, model: _Cursor) -> None:
        model.host.settle(None)

    def on_enter_error(self, model: _Cursor, error: BaseException | None = None) -> None:
        model.host.settle(error)

    def failed_again(self, model: _Cursor, error: BaseException | None = None) -> None:
        # error -> error does not re-run the entry action; the new error is still reported.
        model.host.settle(error)

    def on_exit_state(self, model: _Cursor, source: State) -> None:
        model.host.end_state(source.id)

    def after_transition(
        self, model: _Cursor, event: str, source: State, target: State | None
    ) -> None:
        model.took = True
        model.host.transitioned(str(event), source.id, target.id if target else source.id)


#: Every state id, in declaration order.
STATES: tuple[str, ...] = tuple(state.id for state in SessionChart.states)
#: States a session never leaves.
FINAL_STATES: frozenset[str] = frozenset(state.id for state in SessionChart.final_states)


def external_events(chart: type[StateChart[Any]]) -> frozenset[str]:
    """The events of ``chart`` that may be sent to it: all but ``error.execution``, which
    the chart raises itself when an action fails."""
    names = {
        str(event)
        for state in chart.states
        for transition in state.transitions
        for event in transition.events
    }
    return frozenset(names - {"error.execution", "error_execution"})


#: The events a runtime may send; ``error.execution`` is the chart's own.
EXTERNAL_EVENTS: frozenset[str] = external_events(SessionChart)


class _Parked:
    """Where the cursor points between steps, so no session is kept alive by it."""

    state: str | None = "initializing"

    def __getattr__(self, name: str) -> Any:
        raise LifecycleError(f"the lifecycle acted outside a step ({name})")


_PARKED: Any = _Parked()


class BaseLifecycle:
    """Steps any number of sessions through :class:`SessionChart`: the checks every
    interpreter of the chart shares. Subclasses run the chart.

    Not thread-safe: use one per thread (a session manager owns one).
    """

    __slots__ = ("_cursor", "_events", "_final", "_stepping")

    def __init__(self, chart: type[StateChart[Any]] = SessionChart) -> None:
        self._cursor = _Cursor(_PARKED)
        self._stepping = False
        self._events = external_events(chart)
        self._final = frozenset(state.id for state in chart.final_states)

    def start(self, host: LifecycleHost) -> None:
        """Enter the initial state for a new session (runs its entry action)."""
        if host.state is not None:
            raise LifecycleError(f"session already started (state {host.state!r})")
        self._enter_step(host)
        try:
            self._start()
        finally:
            self._leave_step(host)

    def send(self, host: LifecycleHost, event: str, **values: Any) -> bool:
        """Run one event to completion for ``host``; return whether a transition was taken.

        ``values`` are what the guards and actions read (``now``, ``token_ok``, ...).
        Raises :class:`LifecycleError` for an event the runtime may not send.
        """
        if event not in self._events:
            raise LifecycleError(
                f"event {event!r} cannot be sent to a session; "
                f"expected one of {', '.join(sorted(self._events))}"
            )
        if host.state is None:
            raise LifecycleError("session not started: call Lifecycle.start() first")
        if host.state in self._final:
            return False
        cursor = self._cursor
        self._enter_step(host)
        try:
            cursor.took = False
            self._send(event, values)
            return cursor.took
        finally:
            self._leave_step(host)

    def _enter_step(self, host: LifecycleHost) -> None:
        if self._stepping:
            raise LifecycleError(
                "a lifecycle action sent another event synchronously; "
                "post it to the session's actor instead"
            )
        self._stepping = True
        self._cursor.host = host

    def _leave_step(self, host: LifecycleHost) -> None:
        self._cursor.host = _PARKED
        self._stepping = False

    def _start(self) -> None:
        raise NotImplementedError

    def _send(self, event: str, values: dict[str, Any]) -> None:
        raise NotImplementedError


def log_unhandled_failure(state: str | None, error: BaseException) -> None:
    """An action failed in the step that reached a final state: nothing can move the
    session to ``error`` any more, so say so rather than lose the failure."""
    log.error("an action failed as the session reached %s: %s", state, error, exc_info=error)


class ChartLifecycle(BaseLifecycle):
    """Runs :class:`SessionChart` on python-statemachine's own engine: one chart instance
    whose model is a cursor pointed at the session being stepped.

    This is the reference interpreter. The runtime uses the compiled
    :class:`~statesession._lifecycle.compiled.Lifecycle`, which is held to behave exactly like this
    one; ``statesession replay`` checks recorded histories with this one.
    """

    __slots__ = ("_chart",)

    def __init__(self, chart: type[StateChart[Any]] = SessionChart) -> None:
        super().__init__(chart)
        # The parked model already has a state, so building the chart runs no action.
        self._chart = chart(model=self._cursor)

    def _start(self) -> None:
        self._chart.activate_initial_state()

    def _send(self, event: str, values: dict[str, Any]) -> None:
        self._chart.send(event, **values)

    def _leave_step(self, host: LifecycleHost) -> None:
        super()._leave_step(host)
        engine = self._chart._engine
        if not engine.running:
            # Reaching a final state stops the chart's engine for good; the chart is shared,
            # so re-arm it for the next session (pinned by a regression test). An action
            # that failed in that same step queued error.execution, which the stopped
            # engine drops: report it rather than lose it.
            engine.running = True
            for trigger in engine.internal_queue.drain():
                error = trigger.kwargs.get("error")
                if error is not None:
                    log_unhandled_failure(host.state, error)
        # A step that raised may leave queued events behind; they belong to no one now.
        engine.clear()
