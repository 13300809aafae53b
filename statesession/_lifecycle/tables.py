"""SessionChart compiled to tables: what the runtime's interpreter runs (sans-IO).

Theory of operation
-------------------
The chart stays the single source of truth. At import, :func:`compile_chart` reads its
declaration -- states, transitions in document order with their events, guards
(``cond``/``unless``), internal flags, and the callbacks python-statemachine's naming
conventions bind to each state and transition -- into plain tuples, held by a
:class:`ChartTable`; :data:`SESSION_TABLE` is SessionChart's.
:class:`~statesession._lifecycle.interpreters.Lifecycle` runs those tables the way
python-statemachine's engine runs a flat chart that catches errors as events.

:func:`compile_chart` refuses a chart that needs more than that interpreter runs (nested or
parallel states, history, eventless or multi-target transitions, validators, chart-wide
transition callbacks, other engine settings), and a callback that reads what the
interpreter does not hand it.

Callbacks are called as plain functions: guards and actions read their arguments (the
values sent with the event, and ``model``, ``event``, ``source``, ``target``, ``state``),
never ``self``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from statemachine import State, StateChart

from .._core.exceptions import LifecycleError
from .chart import SessionChart

__all__ = [
    "SESSION_TABLE",
    "Callback",
    "ChartTable",
    "Guard",
    "StateInfo",
    "Transition",
    "compile_chart",
]

#: What the engine hands a callback besides the values sent with the event.
_CONTEXT = frozenset({"model", "event", "source", "target", "state"})
#: What the engine could hand a callback and this interpreter does not.
_UNSUPPORTED = frozenset({"machine", "transition", "event_data", "args", "kwargs"})


class _NoSelf:
    """What a compiled callback gets as ``self``: nothing to read."""

    def __getattr__(self, name: str) -> Any:
        raise LifecycleError(f"a chart callback read self.{name}; callbacks read arguments only")


_NO_SELF: Any = _NoSelf()


class Callback:
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


class Guard:
    """One ``cond`` (expected true) or ``unless`` (expected false) of a transition."""

    __slots__ = ("callback", "expected")

    def __init__(self, callback: Callback, expected: bool) -> None:
        self.callback = callback
        self.expected = expected


class Transition:
    """One transition of the chart, with the callbacks bound to it in the order they run."""

    __slots__ = ("after", "before", "guards", "internal", "on", "source", "target")

    def __init__(
        self,
        source: State,
        target: State,
        internal: bool,
        guards: tuple[Guard, ...],
        before: tuple[Callback, ...],
        on: tuple[Callback, ...],
        after: tuple[Callback, ...],
    ) -> None:
        self.source = source
        self.target = target
        self.internal = internal
        self.guards = guards
        self.before = before
        self.on = on
        self.after = after


class StateInfo:
    """One state of the chart, with its entry and exit callbacks."""

    __slots__ = ("enter", "exit", "final", "state")

    def __init__(self, state: State, enter: tuple[Callback, ...], exit: tuple[Callback, ...]):
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
        states: dict[str, StateInfo],
        transitions: dict[tuple[str, str], tuple[Transition, ...]],
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
    resolved: dict[str, Callback] = {}

    def callbacks(specs: Iterable[Any], *, allowed: bool = True) -> tuple[Callback, ...]:
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
                resolved[name] = Callback(name, fn)
            found.append(resolved[name])
        return tuple(found)

    states: dict[str, StateInfo] = {}
    transitions: dict[tuple[str, str], list[Transition]] = {}
    initial = None
    for state in chart.states:
        if state.parent is not None or state.states or state.parallel or state.history:
            raise LifecycleError(f"state {state.id}: the compiled lifecycle runs flat charts only")
        if state.initial:
            initial = state.id
        states[state.id] = StateInfo(state, callbacks(state.enter), callbacks(state.exit))
        for transition in state.transitions:
            targets = transition.targets
            if transition.is_eventless or len(targets) != 1 or list(transition.validators):
                raise LifecycleError(
                    f"transition from {state.id}: the compiled lifecycle needs one event "
                    "name, one target and no validators"
                )
            guards = tuple(
                Guard(callbacks([spec])[0], bool(spec.expected_value)) for spec in transition.cond
            )
            compiled = Transition(
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
