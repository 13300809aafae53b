"""The compiled lifecycle against python-statemachine's engine, side by side.

The runtime runs SessionChart compiled to tables; ``ChartLifecycle`` runs it on the
library's engine. Random events, random guard values and actions that fail at random must
produce the same calls, in the same order, with the same state visible to each call, the
same answers and the same logged failures.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statemachine import State, StateChart

from statesession import LifecycleError, SessionChart
from statesession._lifecycle.events import EXTERNAL_EVENTS, STATES
from statesession._lifecycle.interpreters import BaseLifecycle, ChartLifecycle, Lifecycle
from statesession._lifecycle.tables import compile_chart

from ..helpers import examples


class Failure(Exception):
    """An action failing on purpose; equal when the messages are."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Failure) and self.args == other.args

    def __hash__(self) -> int:
        return hash(self.args)


class TracingHost:
    """Records every call with the state the session was in when it was made, and fails
    the calls the pattern says (the n-th call fails if ``pattern[n]``)."""

    def __init__(self, trace: list[tuple[Any, ...]], pattern: list[bool]) -> None:
        self.state: str | None = None
        self.trace = trace
        self.pattern = pattern
        self.count = 0

    def call(self, name: str, *args: Any) -> None:
        self.trace.append((name, self.state, *args))
        count, self.count = self.count, self.count + 1
        if count < len(self.pattern) and self.pattern[count]:
            raise Failure(f"{name} #{count}")

    def begin_initializing(self) -> None:
        self.call("begin_initializing")

    def begin_active(self) -> None:
        self.call("begin_active")

    def begin_reconnecting(self) -> None:
        self.call("begin_reconnecting")

    def begin_passivated(self, reason: str) -> None:
        self.call("begin_passivated", reason)

    def begin_terminating(self, reason: str) -> None:
        self.call("begin_terminating", reason)

    def settle(self, error: BaseException | None) -> None:
        self.call("settle", error)

    def end_state(self, state: str) -> None:
        self.call("end_state", state)

    def transitioned(self, event: str, source: str, target: str) -> None:
        self.call("transitioned", event, source, target)


class Probe(StateChart[Any]):
    """A small chart using every feature the compiled interpreter runs, every callback
    reporting to the host (which may make it fail): guards, before/on/after callbacks,
    generic and per-state entry and exit, internal transitions, error handlers with
    callbacks of their own, a final state."""

    catch_errors_as_events = True
    allow_event_without_transition = True
    enable_self_transition_entries = False

    a = State(initial=True)
    b = State()
    done = State(final=True)
    error = State()

    go = (
        a.to(b, cond="yes", before="before_go", on="on_go")
        | b.to(a, unless="yes", on="on_go")
        | b.to(done, cond=["yes", "also"])
    )
    poke = (
        a.to.itself(internal=True, on="on_poke")  # type: ignore[no-untyped-call]
        | b.to.itself(internal=True, cond="yes")  # type: ignore[no-untyped-call]
        | error.to(a, cond="yes", before="before_go")
    )
    error_execution = (
        a.to(error, on="on_error")
        | b.to(error, before="before_error")
        | error.to.itself(internal=True, on="on_error")  # type: ignore[no-untyped-call]
    )

    def yes(self, model: Any, answer: bool = True) -> bool:
        model.host.call("yes")
        return answer

    def also(self, model: Any, other: bool = True) -> bool:
        model.host.call("also")
        return other

    def before_go(self, model: Any, event: Any) -> None:
        model.host.call("before_go", str(event))

    def on_go(self, model: Any, source: State, target: State) -> None:
        model.host.call("on_go", source.id, target.id)

    def on_poke(self, model: Any) -> None:
        model.host.call("on_poke")

    def before_error(self, model: Any, error: Any = None) -> None:
        model.host.call("before_error", error)

    def on_error(self, model: Any, error: Any = None) -> None:
        model.host.call("on_error", error)

    def on_enter_state(self, model: Any, state: State) -> None:
        model.host.call("enter", state.id)

    def on_exit_state(self, model: Any, state: State) -> None:
        model.host.call("exit", state.id)

    def on_enter_b(self, model: Any) -> None:
        model.host.call("enter_b")

    def on_exit_a(self, model: Any) -> None:
        model.host.call("exit_a")

    def after_go(self, model: Any) -> None:
        model.host.call("after_go")

    def after_transition(self, model: Any, event: Any, source: State, target: State) -> None:
        model.took = True
        model.host.call("after", str(event), source.id, target.id)


session_values = st.fixed_dictionaries(
    {},
    optional={
        "allocated": st.booleans(),
        "healthy": st.booleans(),
        "token_ok": st.booleans(),
        "now": st.sampled_from([0.0, 1.0, 2.0]),
        "deadline": st.sampled_from([0.0, 1.0, 2.0, float("inf")]),
        "connections": st.integers(0, 2),
        "store": st.booleans(),
        "busy": st.integers(0, 1),
        "shutdown": st.booleans(),
        "leaked": st.integers(0, 2),
        "reason": st.sampled_from(["admin", "window_expired"]),
    },
)
probe_values = st.fixed_dictionaries(
    {}, optional={"answer": st.booleans(), "other": st.booleans()}
)
#: A failure pattern: which calls fail, by their order in the run.
patterns = st.lists(st.booleans(), max_size=60)


def run(
    lifecycle: BaseLifecycle,
    events: list[tuple[str, dict[str, Any]]],
    pattern: list[bool],
    start: str | None,
) -> tuple[list[tuple[Any, ...]], list[Any], list[str]]:
    """Run ``events`` from ``start`` (None: the initial state); return every call, every
    answer and state after each event, and the failures logged as lost."""
    trace: list[tuple[Any, ...]] = []
    answers: list[Any] = []
    host = TracingHost(trace, pattern)
    handler = _Capture()
    logger = logging.getLogger("statesession")
    logger.addHandler(handler)
    try:
        if start is None:
            lifecycle.start(host)
        else:
            host.state = start
        answers.append(host.state)
        for event, values in events:
            answers.append(lifecycle.send(host, event, **values))
            answers.append(host.state)
    finally:
        logger.removeHandler(handler)
    return trace, answers, handler.records


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@settings(max_examples=examples(600), deadline=None)
@given(
    events=st.lists(
        st.tuples(st.sampled_from(sorted(EXTERNAL_EVENTS)), session_values), max_size=20
    ),
    pattern=patterns,
    start=st.sampled_from([None, *STATES]),
)
def test_compiled_session_chart_makes_the_same_calls_as_the_engine(
    events: list[tuple[str, dict[str, Any]]], pattern: list[bool], start: str | None
) -> None:
    """For any events, guard outcomes and start state, the compiled SessionChart makes the same
    host calls as the chart engine."""
    expected = run(ChartLifecycle(), events, pattern, start)
    assert run(Lifecycle(), events, pattern, start) == expected


PROBE_TABLE = compile_chart(Probe)


@settings(max_examples=examples(600), deadline=None)
@given(
    events=st.lists(st.tuples(st.sampled_from(["go", "poke"]), probe_values), max_size=12),
    pattern=patterns,
    start=st.sampled_from([None, "a", "b", "error"]),
)
def test_compiled_probe_chart_makes_the_same_calls_as_the_engine(
    events: list[tuple[str, dict[str, Any]]], pattern: list[bool], start: str | None
) -> None:
    """For any events, guard outcomes and start state, the compiled probe chart makes the same
    host calls as the chart engine."""
    expected = run(ChartLifecycle(Probe), events, pattern, start)
    assert run(Lifecycle(PROBE_TABLE), events, pattern, start) == expected


def test_one_compiled_lifecycle_serves_sessions_in_any_order() -> None:
    """One compiled Lifecycle drives several hosts apart: each keeps its own state, and a
    finished one takes no more events."""
    lifecycle = Lifecycle()
    trace: list[tuple[Any, ...]] = []
    first, second = TracingHost(trace, []), TracingHost(trace, [])
    lifecycle.start(first)
    lifecycle.start(second)
    assert lifecycle.send(first, "activate", allocated=True, healthy=True)
    assert lifecycle.send(second, "terminate", reason="admin")
    assert lifecycle.send(second, "finish", leaked=0)
    assert not lifecycle.send(second, "terminate")
    assert (first.state, second.state) == ("active", "terminated")


def test_compile_refuses_what_the_interpreter_does_not_run() -> None:
    """compile_chart refuses nested states, allow_event_without_transition=False, an
    on_transition callback and a callback taking machine."""

    class Nested(StateChart):  # type: ignore[type-arg]
        catch_errors_as_events = True
        enable_self_transition_entries = False

        class outer(State.Compound):
            inner = State(initial=True)

        done = State(final=True)
        leave = outer.to(done)

    with pytest.raises(LifecycleError, match="flat charts only"):
        compile_chart(Nested)

    class Strict(SessionChart):
        allow_event_without_transition = False

    with pytest.raises(LifecycleError, match="allow_event_without_transition"):
        compile_chart(Strict)

    class Generic(SessionChart):
        def on_transition(self) -> None:
            pass

    with pytest.raises(LifecycleError, match="on_transition"):
        compile_chart(Generic)

    class Reads(SessionChart):
        def ready(self, machine: Any = None) -> bool:  # type: ignore[override]
            return True

    with pytest.raises(LifecycleError, match="machine"):
        compile_chart(Reads)


def test_compiled_callbacks_cannot_read_self() -> None:
    """A compiled guard that reads self fails as an execution error: the session goes to error
    with a LifecycleError naming self.model."""

    class Curious(SessionChart):
        def ready(self, allocated: bool = False, healthy: bool = False) -> bool:
            return bool(self.model)

    lifecycle = Lifecycle(compile_chart(Curious))
    host = TracingHost([], [])
    lifecycle.start(host)
    lifecycle.send(host, "activate", allocated=True, healthy=True)
    # The guard's failure is an execution error like any other: the session goes to error.
    assert host.state == "error"
    settled = [call for call in host.trace if call[0] == "settle"]
    assert isinstance(settled[-1][2], LifecycleError)
    assert "self.model" in str(settled[-1][2])
