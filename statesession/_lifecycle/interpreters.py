"""The interpreters that step sessions through SessionChart (sans-IO).

Theory of operation
-------------------
A python-statemachine instance costs tens of kilobytes and most of a millisecond to build
(its callback registry is rebuilt for every instance). Sessions therefore do not own one:
an interpreter steps any number of sessions, each of which keeps only its state id, and
points the chart's model (a :class:`~statesession._lifecycle.host.Cursor`) at the session
being stepped. :class:`BaseLifecycle` holds what every interpreter shares: only the events
in :data:`~statesession._lifecycle.events.EXTERNAL_EVENTS` may be sent, a session in a
final state ignores every event, and an action may not send another event from inside a
step.

:class:`ChartLifecycle` runs the chart on python-statemachine's engine -- the reference,
which ``statesession replay`` uses. The engine takes about 140 microseconds per event, more
than all the rest of a session's work when it is passivated or brought back, so the runtime
runs :class:`Lifecycle`: the same chart compiled to tables
(:mod:`statesession._lifecycle.tables`), run the way the engine runs a flat chart that
catches errors as events:

1. the first transition out of the current state that the event names and whose guards
   all agree is taken (none: the event is ignored);
2. a transition runs its ``before`` callbacks, then -- unless it is internal -- the source
   state's exit callbacks, its own ``on`` callbacks, the target state's entry callbacks,
   and finally its ``after`` callbacks;
3. an exception in a guard, an exit, an ``on`` or an entry callback queues
   ``error.execution`` (carrying the exception as ``error``) and the step goes on; one in
   ``before`` abandons the transition where it started; one in ``after`` stops the
   remaining ``after`` callbacks. While ``error.execution`` itself is handled, a failing
   ``before``, ``on`` or ``after`` callback is logged and ignored, so a failing error
   handler cannot loop;
4. queued ``error.execution`` events then run, one by one, from the state reached --
   unless that state is final: a session that reached a final state stays there, and a
   failure queued on the way is logged instead.

``tests/lifecycle/test_lifecycle.py`` drives the two interpreters side by side through random
events, guard values and failing actions, and requires the same calls in the same order.
"""

from __future__ import annotations

import logging
from typing import Any

from statemachine import StateChart

from .._core.exceptions import LifecycleError
from .chart import SessionChart
from .events import ERROR_EVENT, external_events
from .host import PARKED, Cursor, LifecycleHost
from .tables import SESSION_TABLE, Callback, ChartTable, Transition

__all__ = ["BaseLifecycle", "ChartLifecycle", "Lifecycle"]

log = logging.getLogger("statesession")


class BaseLifecycle:
    """Steps any number of sessions through :class:`SessionChart`: the checks every
    interpreter of the chart shares. Subclasses run the chart.

    Not thread-safe: use one per thread (a session manager owns one).
    """

    __slots__ = ("_cursor", "_events", "_final", "_stepping")

    def __init__(self, chart: type[StateChart[Any]] = SessionChart) -> None:
        self._cursor = Cursor(PARKED)
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
        self._cursor.host = PARKED
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

    This is the reference interpreter. The runtime uses the compiled :class:`Lifecycle`,
    which is held to behave exactly like this one; ``statesession replay`` checks recorded
    histories with this one.
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


class Lifecycle(BaseLifecycle):
    """Steps any number of sessions through the compiled :class:`SessionChart` (a
    :class:`~statesession._lifecycle.tables.ChartTable`)."""

    __slots__ = ("_errors", "_table")

    def __init__(self, table: ChartTable = SESSION_TABLE) -> None:
        super().__init__(table.chart)
        self._table = table
        self._errors: list[BaseException] = []  # queued error.execution events

    def _start(self) -> None:
        table = self._table
        info = table.states[table.initial]
        host = self._cursor.host
        host.state = table.initial
        context = {"model": self._cursor, "event": "__initial__", "target": info.state}
        context["state"] = info.state
        self._run(info.enter, context)
        self._drain(final=False)

    def _send(self, event: str, values: dict[str, Any]) -> None:
        self._take(event, values)
        self._drain(final=self._cursor.host.state in self._table.final)

    def _drain(self, *, final: bool) -> None:
        errors = self._errors
        if final:
            for error in errors:
                log_unhandled_failure(self._cursor.host.state, error)
            errors.clear()
            return
        while errors:
            self._take(ERROR_EVENT, {"error": errors.pop(0)})

    def _take(self, event: str, values: dict[str, Any]) -> None:
        """Select and run the transition ``event`` enables, if any (one microstep)."""
        cursor = self._cursor
        host = cursor.host
        source_id = host.state
        if source_id is None:
            return
        candidates = self._table.transitions.get((source_id, event))
        if not candidates:
            return
        context = dict(values)
        context["model"] = cursor
        context["event"] = event
        chosen = None
        for transition in candidates:
            context["source"] = transition.source
            context["target"] = transition.target
            context["state"] = transition.source
            if self._guards_agree(transition, context):
                chosen = transition
                break
        if chosen is None:
            return
        handling_error = event == ERROR_EVENT
        try:
            for callback in chosen.before:
                callback(context)
            if not chosen.internal:
                self._run(self._table.states[source_id].exit, context)
                host.state = None  # between states while the transition's own actions run
            context["state"] = chosen.target
            if handling_error:
                for callback in chosen.on:
                    callback(context)
            else:
                self._run(chosen.on, context)
            if not chosen.internal:
                target = self._table.states[chosen.target.id]
                host.state = target.state.id
                self._run(target.enter, context)
        except Exception as exc:
            host.state = source_id
            self._failed(exc, handling_error)
            return
        try:
            for callback in chosen.after:
                callback(context)
        except Exception as exc:
            self._failed(exc, handling_error)

    def _guards_agree(self, transition: Transition, context: dict[str, Any]) -> bool:
        for guard in transition.guards:
            try:
                if bool(guard.callback(context)) is not guard.expected:
                    return False
            except Exception as exc:
                self._errors.append(exc)
                return False
        return True

    def _run(self, callbacks: tuple[Callback, ...], context: dict[str, Any]) -> None:
        """Run each callback as its own block: a failure queues error.execution and the
        next one still runs."""
        for callback in callbacks:
            try:
                callback(context)
            except Exception as exc:
                self._errors.append(exc)

    def _failed(self, error: Exception, handling_error: bool) -> None:
        if handling_error:
            log.warning("an action failed while handling a failure; ignored: %s", error)
        else:
            self._errors.append(error)
