"""The lifecycle chart: its shape, its guards, the shared interpreter, and the
python-statemachine pitfalls the design relies on avoiding."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from statemachine import State, StateChart
from statemachine.engines.async_ import AsyncEngine
from statemachine.engines.sync import SyncEngine
from statemachine.exceptions import TransitionNotAllowed

from statesession import LifecycleError, SessionChart
from statesession._lifecycle.events import EXTERNAL_EVENTS, FINAL_STATES, STATES
from statesession._lifecycle.interpreters import BaseLifecycle, ChartLifecycle, Lifecycle


@pytest.fixture(params=[Lifecycle, ChartLifecycle], ids=["compiled", "engine"])
def make(request: pytest.FixtureRequest) -> type[BaseLifecycle]:
    """Each lifecycle test runs on the runtime's compiled interpreter and on the engine."""
    return request.param  # type: ignore[no-any-return]


class Host:
    """A LifecycleHost that records every action."""

    def __init__(self, state: str | None = None, *, failing: str | None = None) -> None:
        self.state = state
        self.calls: list[tuple[Any, ...]] = []
        self.failing = failing

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name == self.failing:
            raise RuntimeError(f"{name} failed")

    def begin_initializing(self) -> None:
        self._record("begin_initializing")

    def begin_active(self) -> None:
        self._record("begin_active")

    def begin_reconnecting(self) -> None:
        self._record("begin_reconnecting")

    def begin_passivated(self, reason: str) -> None:
        self._record("begin_passivated", reason)

    def begin_terminating(self, reason: str) -> None:
        self._record("begin_terminating", reason)

    def settle(self, error: BaseException | None) -> None:
        self._record("settle", error)

    def end_state(self, state: str) -> None:
        self._record("end_state", state)

    def transitioned(self, event: str, source: str, target: str) -> None:
        self._record("transitioned", event, source, target)

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]


def test_chart_has_exactly_the_lifecycle_states() -> None:
    """The state ids are fixed; initializing is initial and terminated the only final."""
    assert STATES == (
        "initializing",
        "active",
        "reconnecting",
        "passivated",
        "terminating",
        "terminated",
        "error",
    )
    assert SessionChart.initial_state.id == "initializing"
    assert {"terminated"} == FINAL_STATES


def test_chart_callbacks_are_plain_functions() -> None:
    """No callback is async: python-statemachine would switch to its asyncio engine."""
    for name, member in vars(SessionChart).items():
        if inspect.isfunction(member):
            assert not inspect.iscoroutinefunction(member), name
    assert isinstance(ChartLifecycle()._chart._engine, SyncEngine)


def test_library_async_callback_switches_engine() -> None:
    """Pins the pitfall: one async callback makes the chart run a hidden asyncio loop."""

    class Leaky(StateChart):  # type: ignore[type-arg]
        a = State(initial=True)
        b = State(final=True)
        go = a.to(b)

        async def on_enter_b(self) -> None:
            pass

    assert isinstance(Leaky()._engine, AsyncEngine)


def test_chart_self_transition_does_not_rerun_entry(make: type[BaseLifecycle]) -> None:
    """Another connection attaching to an active session does not restart its work."""
    lifecycle, host = make(), Host()
    lifecycle.start(host)
    assert lifecycle.send(host, "activate", allocated=True, healthy=True)
    assert lifecycle.send(host, "attach", token_ok=True, now=0.0, deadline=math.inf)
    assert lifecycle.send(host, "detach", connections=1)
    assert host.state == "active"
    assert len(host.named("begin_active")) == 1
    assert host.named("end_state") == [("end_state", "initializing")]


def test_library_self_transition_reruns_entry_by_default() -> None:
    """Pins the pitfall: a StateChart re-enters a state on a self-transition unless told
    not to, which is why SessionChart sets enable_self_transition_entries = False."""
    entries = []

    class Chart(StateChart):  # type: ignore[type-arg]
        a = State(initial=True)
        b = State(final=True)
        again = a.to.itself(internal=True)
        done = a.to(b)

        def on_enter_a(self) -> None:
            entries.append("a")

    chart = Chart()
    chart.send("again")
    assert entries == ["a", "a"]
    assert SessionChart.enable_self_transition_entries is False


@pytest.mark.parametrize(
    ("state", "event", "values"),
    [
        ("initializing", "activate", {"allocated": True, "healthy": True}),
        ("active", "detach", {"connections": 0}),
        ("reconnecting", "attach", {"token_ok": True, "now": 0.0, "deadline": 1.0}),
        ("passivated", "terminate", {}),
        ("terminating", "finish", {"leaked": 1}),
        ("error", "terminate", {}),
    ],
)
def test_chart_action_error_moves_every_non_final_state_to_error(
    make: type[BaseLifecycle], state: str, event: str, values: dict[str, Any]
) -> None:
    """An exception in an exit action becomes error.execution, from every non-final state."""
    lifecycle, host = make(), Host(state, failing="end_state")
    assert lifecycle.send(host, event, **values)
    assert host.state == "error"
    settled = host.named("settle")
    assert isinstance(settled[-1][1], RuntimeError)


def test_chart_action_error_on_reaching_terminated_is_logged(
    make: type[BaseLifecycle],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The step that reaches the final state cannot move to error any more (the library
    stops its engine first); the failure is logged instead of lost."""
    lifecycle, host = make(), Host("terminating", failing="end_state")
    assert lifecycle.send(host, "finish", leaked=0)
    assert host.state == "terminated"
    assert "end_state failed" in caplog.text
    other = Host()
    lifecycle.start(other)
    assert other.state == "initializing"


def test_chart_declares_error_execution_from_every_non_final_state() -> None:
    """error.execution is declared from every non-final state (and leads to error)."""
    handled = [
        (state.id, transition.target.id)
        for state in SessionChart.states
        for transition in state.transitions
        if transition.match("error.execution")
    ]
    assert {source for source, _ in handled} == set(STATES) - FINAL_STATES
    assert {target for _, target in handled} == {"error"}


@pytest.mark.parametrize("event", ["error.execution", "error_execution", "frobnicate", ""])
def test_lifecycle_refuses_events_from_outside_the_whitelist(
    make: type[BaseLifecycle], event: str
) -> None:
    """Only the runtime's events may be sent; internal ones are the chart's own."""
    lifecycle, host = make(), Host()
    lifecycle.start(host)
    with pytest.raises(LifecycleError, match="cannot be sent"):
        lifecycle.send(host, event)
    assert host.state == "initializing"


def test_library_accepts_internal_events_sent_from_outside() -> None:
    """Pins the pitfall: the library itself lets anyone send error.execution, which is
    why Lifecycle.send keeps a whitelist."""

    class Model:
        state = "active"
        host = Host()

    chart = SessionChart(model=Model())
    chart.send("error.execution")
    assert chart.model.state == "error"


def test_lifecycle_guards_decide_on_injected_values(make: type[BaseLifecycle]) -> None:
    """Guards read only the values sent with the event."""
    lifecycle, host = make(), Host()
    lifecycle.start(host)
    assert not lifecycle.send(host, "activate", allocated=True, healthy=False)
    assert host.state == "initializing"
    assert lifecycle.send(host, "activate", allocated=True, healthy=True)
    assert lifecycle.send(host, "detach", connections=0)
    assert host.state == "reconnecting"
    assert not lifecycle.send(host, "attach", token_ok=False, now=1.0, deadline=2.0)
    assert not lifecycle.send(host, "attach", token_ok=True, now=2.0, deadline=2.0)
    assert not lifecycle.send(host, "expire", now=1.0, deadline=2.0)
    assert host.state == "reconnecting"
    assert lifecycle.send(host, "expire", now=2.0, deadline=2.0, reason="window_expired")
    assert host.state == "terminating"
    assert host.named("begin_terminating") == [("begin_terminating", "window_expired")]
    assert lifecycle.send(host, "finish", leaked=1)
    assert host.state == "error"


def test_lifecycle_passivates_only_with_a_store(make: type[BaseLifecycle]) -> None:
    """A reconnect window expires into passivated when a store is configured."""
    lifecycle, host = make(), Host("reconnecting")
    assert lifecycle.send(host, "expire", now=5.0, deadline=1.0, store=True)
    assert host.state == "passivated"
    assert lifecycle.send(host, "rehydrate")
    assert host.state == "initializing"


def test_lifecycle_one_chart_serves_many_sessions(make: type[BaseLifecycle]) -> None:
    """Interleaved sessions keep their own states through the shared chart."""
    lifecycle = make()
    first, second = Host(), Host()
    lifecycle.start(first)
    lifecycle.start(second)
    lifecycle.send(first, "activate", allocated=True, healthy=True)
    lifecycle.send(second, "terminate", reason="admin")
    assert (first.state, second.state) == ("active", "terminating")
    assert first.named("begin_terminating") == []
    assert second.named("begin_active") == []


def test_lifecycle_rearms_the_shared_chart_after_a_final_state(make: type[BaseLifecycle]) -> None:
    """A session reaching terminated does not stop the chart for the others."""
    lifecycle = make()
    done, alive = Host("terminating"), Host()
    assert lifecycle.send(done, "finish", leaked=0)
    assert done.state == "terminated"
    assert not lifecycle.send(done, "terminate")
    lifecycle.start(alive)
    assert lifecycle.send(alive, "activate", allocated=True, healthy=True)
    assert alive.state == "active"


def test_library_final_state_stops_the_engine() -> None:
    """Pins the library behaviour that Lifecycle re-arms after: a final state stops the
    engine for good."""

    class Model:
        state = "terminating"
        host = Host()

    chart = SessionChart(model=Model())
    chart.send("finish", leaked=0)
    assert chart.is_terminated
    assert chart._engine.running is False


def test_library_error_after_final_state_escapes_when_events_must_transition() -> None:
    """Pins why SessionChart keeps allow_event_without_transition = True: with False, an
    action failing after the final state is entered raises TransitionNotAllowed out of
    send(), although the transition was taken."""

    class Strict(SessionChart):
        allow_event_without_transition = False

    class Model:
        state = "terminating"
        host = Host(failing="transitioned")

    model = Model()
    chart = Strict(model=model)
    with pytest.raises(TransitionNotAllowed):
        chart.send("finish", leaked=0)
    assert model.state == "terminated"


def test_lifecycle_reports_a_taken_transition_whose_after_action_failed(
    make: type[BaseLifecycle],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The step that reaches terminated counts as taken even if its last action fails."""
    lifecycle, host = make(), Host("terminating", failing="transitioned")
    assert lifecycle.send(host, "finish", leaked=0)
    assert host.state == "terminated"
    assert "transitioned failed" in caplog.text


def test_lifecycle_refuses_a_nested_send_from_an_action(make: type[BaseLifecycle]) -> None:
    """An action that sends another event synchronously fails into error, not recursion."""
    lifecycle = make()

    class Reentrant(Host):
        def begin_active(self) -> None:
            lifecycle.send(self, "terminate")

    host = Reentrant()
    lifecycle.start(host)
    lifecycle.send(host, "activate", allocated=True, healthy=True)
    assert host.state == "error"
    assert isinstance(host.named("settle")[-1][1], LifecycleError)


def test_lifecycle_start_needs_a_new_session(make: type[BaseLifecycle]) -> None:
    """start() refuses a host that already has a state, and send() refuses one not started
    (LifecycleError)."""
    lifecycle = make()
    with pytest.raises(LifecycleError, match="already started"):
        lifecycle.start(Host("active"))
    with pytest.raises(LifecycleError, match="not started"):
        lifecycle.send(Host(), "terminate")


# -- the chart against the documented transition table ---------------------------------

#: (state, event) -> list of (guard over values, target), first match wins: the table in
#: docs/lifecycle.md, written out independently of the chart.
TABLE: dict[tuple[str, str], list[tuple[Any, str]]] = {
    ("initializing", "activate"): [(lambda v: v["allocated"] and v["healthy"], "active")],
    ("active", "attach"): [(lambda v: v["token_ok"] and v["now"] < v["deadline"], "active")],
    ("reconnecting", "attach"): [(lambda v: v["token_ok"] and v["now"] < v["deadline"], "active")],
    ("active", "detach"): [
        (lambda v: v["connections"] == 0, "reconnecting"),
        (lambda v: True, "active"),
    ],
    ("reconnecting", "expire"): [
        (
            lambda v: (
                v["now"] >= v["deadline"] and v["store"] and (v["busy"] == 0 or v["shutdown"])
            ),
            "passivated",
        ),
        (lambda v: v["now"] >= v["deadline"] and not v["store"], "terminating"),
    ],
    ("active", "passivate"): [
        (lambda v: v["store"] and (v["busy"] == 0 or v["shutdown"]), "passivated")
    ],
    ("reconnecting", "passivate"): [
        (lambda v: v["store"] and (v["busy"] == 0 or v["shutdown"]), "passivated")
    ],
    ("passivated", "rehydrate"): [(lambda v: True, "initializing")],
    ("terminating", "finish"): [
        (lambda v: v["leaked"] == 0, "terminated"),
        (lambda v: True, "error"),
    ],
    **{
        (state, "terminate"): [(lambda v: True, "terminating")]
        for state in ("initializing", "active", "reconnecting", "passivated", "error")
    },
}

values_strategy = st.fixed_dictionaries(
    {
        "allocated": st.booleans(),
        "healthy": st.booleans(),
        "token_ok": st.booleans(),
        "now": st.sampled_from([0.0, 1.0, 2.0]),
        "deadline": st.sampled_from([1.0, math.inf]),
        "connections": st.integers(0, 2),
        "store": st.booleans(),
        "busy": st.integers(0, 1),
        "shutdown": st.booleans(),
        "leaked": st.integers(0, 2),
    }
)


class ChartModel(RuleBasedStateMachine):
    """Random events with random guard values: the chart must follow the table."""

    def __init__(self) -> None:
        super().__init__()
        self.lifecycle = Lifecycle()
        self.hosts = [Host(), Host()]
        for host in self.hosts:
            self.lifecycle.start(host)
        self.expected = ["initializing", "initializing"]

    @rule(
        which=st.integers(0, 1),
        event=st.sampled_from(sorted(EXTERNAL_EVENTS)),
        values=values_strategy,
    )
    def send(self, which: int, event: str, values: dict[str, Any]) -> None:
        host = self.hosts[which]
        before = self.expected[which]
        target = None
        if before not in FINAL_STATES:
            for guard, candidate in TABLE.get((before, event), []):
                if guard(values):
                    target = candidate
                    break
        taken = self.lifecycle.send(host, event, **values)
        assert taken == (target is not None), (before, event, values)
        if target is not None:
            self.expected[which] = target

    @precondition(lambda self: True)
    @invariant()
    def states_match_the_table(self) -> None:
        assert [h.state for h in self.hosts] == self.expected
        for host in self.hosts:
            assert host.state in STATES


TestChartModel = ChartModel.TestCase
