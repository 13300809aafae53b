"""The interpreter the runtime uses: :class:`SessionChart` compiled to tables (sans-IO).

Theory of operation
-------------------
The chart stays the single source of truth. At import, :func:`compile_chart` reads its
declaration -- states, transitions in document order with their events, guards
(``cond``/``unless``), internal flags, and the callbacks python-statemachine's naming
conventions bind to each state and transition -- into plain tuples. :class:`Lifecycle`
then runs an event the way python-statemachine's engine runs it on a flat chart that
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

:func:`compile_chart` refuses a chart that needs more than this (nested or parallel
states, history, eventless or multi-target transitions, validators, other engine
settings). ``tests/test_lifecycle.py`` drives this interpreter and the engine
(:class:`~statesession._lifecycle.chart.ChartLifecycle`) side by side through random events, guard
values and failing actions, and requires the same calls in the same order.

Callbacks are called as plain functions: guards and actions read their arguments (the
values sent with the event, and ``model``, ``event``, ``source``, ``target``, ``state``),
never ``self``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

from statemachine import State, StateChart

from .._core.exceptions import LifecycleError
from .chart import BaseLifecycle, SessionChart, log_unhandled_failure

__all__ = ["ChartTable", "Lifecycle", "compile_chart"]

log = logging.getLogger("statesession")

ERROR_EVENT = "error.execution"
#: What the engine hands a callback besides the values sent with the event.
_CONTEXT = frozenset({"model", "event", "source", "target", "state"})
#: What the engine could hand a callback and this interpreter does not.
_UNSUPPORTED = frozenset({"machine", "transition", "event_data", "args", "kwargs"})


class _NoSelf:
    """What a compiled callback gets as ``self``: nothing to read."""

    def __getattr__(self, name: str) -> Any:
        raise LifecycleError(f"a chart callback read self.{name}; callbacks read arguments only")


_NO_SELF: Any = _NoSelf()


class _Callback:
    """One chart method, called with the arguments it declares."""

    __slots__ = ("fn", "name", "names")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        parameters = list(inspect.signature(fn).parameters.values())[1:]  # past self
        for parameter in parameters:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise LifecycleError(f"chart callback {name} takes *args or **kwargs")
            if parameter.name in _UNSUPPORTED:
                raise LifecycleError(
                    f"chart callback {name} reads {parameter.name!r}, which the compiled "
                    "lifecycle does not provide"
                )
        self.name = name
        self.fn = fn
        self.names = tuple(parameter.name for parameter in parameters)

    def __call__(self, context: dict[str, Any]) -> Any:
        return self.fn(_NO_SELF, **{name: context[name] for name in self.names if name in context})


class _Guard:
    __slots__ = ("callback", "expected")

    def __init__(self, callback: _Callback, expected: bool) -> None:
        self.callback = callback
        self.expected = expected


class _Transition:
    __slots__ = ("after", "before", "guards", "internal", "on", "source", "target")

    def __init__(
        self,
        source: State,
        target: State,
        internal: bool,
        guards: tuple[_Guard, ...],
        before: tuple[_Callback, ...],
        on: tuple[_Callback, ...],
        after: tuple[_Callback, ...],
    ) -> None:
        self.source = source
        self.target = target
        self.internal = internal
        self.guards = guards
        self.before = before
        self.on = on
        self.after = after


class _StateInfo:
    __slots__ = ("enter", "exit", "final", "state")

    def __init__(self, state: State, enter: tuple[_Callback, ...], exit: tuple[_Callback, ...]):
        self.state = state
        self.final = bool(state.final)
        self.enter = enter
        self.exit = exit


class ChartTable:
    """A chart's declaration as tables: what :class:`Lifecycle` runs."""

    __slots__ = ("chart", "final", "initial", "states", "transitions")

    def __init__(
        self,
        chart: type[StateChart[Any]],
        initial: str,
        states: dict[str, _StateInfo],
        transitions: dict[tuple[str, str], tuple[_Transition, ...]],
    ) -> None:
        self.chart = chart
        self.final = frozenset(key for key, info in states.items() if info.final)
        self.initial = initial
        self.states = states
        self.transitions = transitions


def compile_chart(chart: type[StateChart[Any]]) -> ChartTable:
    """Read ``chart``'s declaration into tables, refusing what the interpreter lacks."""
    settings = {
        "catch_errors_as_events": True,
        "allow_event_without_transition": True,
        "enable_self_transition_entries": False,
        "atomic_configuration_update": False,
    }
    for setting, value in settings.items():
        if getattr(chart, setting) is not value:
            raise LifecycleError(f"the compiled lifecycle needs {setting} = {value}")
    resolved: dict[str, _Callback] = {}

    def callbacks(specs: Iterable[Any], *, allowed: bool = True) -> tuple[_Callback, ...]:
        found = []
        for spec in specs:
            name = spec.func
            if not isinstance(name, str):
                raise LifecycleError(f"chart callback {name!r} must be named by a method")
            fn = getattr(chart, name, None)
            if fn is None:
                continue  # a naming convention the chart does not use
            if not allowed:
                raise LifecycleError(f"the compiled lifecycle does not run {name}")
            if name not in resolved:
                resolved[name] = _Callback(name, fn)
            found.append(resolved[name])
        return tuple(found)

    states: dict[str, _StateInfo] = {}
    transitions: dict[tuple[str, str], list[_Transition]] = {}
    initial = None
    for state in chart.states:
        if state.parent is not None or state.states or state.parallel or state.history:
            raise LifecycleError(f"state {state.id}: the compiled lifecycle runs flat charts only")
        if state.initial:
            initial = state.id
        states[state.id] = _StateInfo(state, callbacks(state.enter), callbacks(state.exit))
        for transition in state.transitions:
            targets = transition.targets
            if transition.is_eventless or len(targets) != 1 or list(transition.validators):
                raise LifecycleError(
                    f"transition from {state.id}: the compiled lifecycle needs one event "
                    "name, one target and no validators"
                )
            guards = tuple(
                _Guard(callbacks([spec])[0], bool(spec.expected_value)) for spec in transition.cond
            )
            compiled = _Transition(
                source=state,
                target=targets[0],
                internal=bool(transition.internal),
                guards=guards,
                before=callbacks(transition.before),
                on=callbacks(transition.on),
                after=callbacks(transition.after),
            )
            for event in transition.events:
                transitions.setdefault((state.id, str(event)), []).append(compiled)
    if initial is None:
        raise LifecycleError("the chart has no initial state")
    # The engine enters the initial state through a transition of its own; a chart-wide
    # transition callback would run there too, and is not supported.
    callbacks(
        [_Spec("before_transition"), _Spec("on_transition")],
        allowed=False,
    )
    return ChartTable(
        chart=chart,
        initial=initial,
        states=states,
        transitions={key: tuple(value) for key, value in transitions.items()},
    )


class _Spec:
    __slots__ = ("func",)

    def __init__(self, func: str) -> None:
        self.func = func


#: SessionChart, compiled once.
SESSION_TABLE = compile_chart(SessionChart)


class Lifecycle(BaseLifecycle):
    """Steps any number of sessions through the compiled :class:`SessionChart`."""

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

    def _guards_agree(self, transition: _Transition, context: dict[str, Any]) -> bool:
        for guard in transition.guards:
            try:
                if bool(guard.callback(context)) is not guard.expected:
                    return False
            except Exception as exc:
                self._errors.append(exc)
                return False
        return True

    def _run(self, callbacks: tuple[_Callback, ...], context: dict[str, Any]) -> None:
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
