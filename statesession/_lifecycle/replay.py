"""Check a recorded history against the lifecycle chart by driving a fresh one (sans-IO).

Theory of operation
-------------------
An event log records every transition a session took: (event, source, target). To check
that a history is a path the chart allows, a fresh chart is started in the first recorded
source state and sent each recorded event, with guard values chosen to make the chart
pick the recorded target (for example ``connections=0`` for ``detach`` to
``reconnecting``). A recorded ``error.execution`` is the chart's own reaction to a failing
action in the step before it; it is reproduced by making that step's action fail. After
every step the chart's state must equal the recorded target. The first mismatch is the
reported problem: the history is not a legal path, or the log is damaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs

from .._core.snapshot import LogEntry
from .events import STATES
from .interpreters import ChartLifecycle

__all__ = ["ReplayResult", "check_history"]

#: Guard values that make the chart choose each (event, target).
_VALUES: dict[tuple[str, str], dict[str, Any]] = {
    ("activate", "active"): {"allocated": True, "healthy": True},
    ("attach", "active"): {"token_ok": True, "now": 0.0, "deadline": math.inf},
    ("detach", "reconnecting"): {"connections": 0},
    ("detach", "active"): {"connections": 1},
    ("expire", "passivated"): {"now": 1.0, "deadline": 0.0, "store": True},
    ("expire", "terminating"): {"now": 1.0, "deadline": 0.0, "store": False},
    ("passivate", "passivated"): {"store": True},
    ("rehydrate", "initializing"): {},
    ("terminate", "terminating"): {},
    ("finish", "terminated"): {"leaked": 0},
    ("finish", "error"): {"leaked": 1},
}


@attrs.frozen(kw_only=True)
class ReplayResult:
    """The outcome of :func:`check_history`."""

    #: Transitions checked (messages are not transitions).
    transitions: int
    #: ``None`` when the history is a legal path of the chart; else what is wrong, where.
    problem: str | None = None

    @property
    def legal(self) -> bool:
        return self.problem is None


class _Host:
    """A lifecycle host that only records, and fails an action when told to."""

    def __init__(self, state: str) -> None:
        self.state: str | None = state
        self.fail_next = False
        self.steps: list[tuple[str, str, str]] = []

    def _noop(self, *args: object) -> None:
        pass

    begin_initializing = begin_active = begin_reconnecting = _noop
    begin_passivated = begin_terminating = settle = end_state = _noop

    def transitioned(self, event: str, source: str, target: str) -> None:
        self.steps.append((event, source, target))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("replayed action failure")


def check_history(entries: Sequence[LogEntry]) -> ReplayResult:
    """Drive a fresh chart through the transitions in ``entries``; report the first step
    the chart would not take as recorded."""
    steps = [e for e in entries if e.kind == "transition"]
    if not steps:
        return ReplayResult(transitions=0)
    for index, step in enumerate(steps):
        for state in (step.source, step.target):
            if state not in STATES:
                return ReplayResult(
                    transitions=index,
                    problem=f"transition {index + 1} names an unknown state {state!r}",
                )
    lifecycle = ChartLifecycle()
    host = _Host(steps[0].source or "")
    index = 0
    while index < len(steps):
        step = steps[index]
        if step.event == "error.execution":
            return ReplayResult(
                transitions=index,
                problem=(
                    f"transition {index + 1} ({step.source} -> error on error.execution) "
                    "follows no step whose action could have failed"
                ),
            )
        if host.state != step.source:
            return ReplayResult(
                transitions=index,
                problem=(
                    f"transition {index + 1} ({step.event}: {step.source} -> {step.target}) "
                    f"starts from {step.source} but the session was in {host.state}"
                ),
            )
        values = _VALUES.get((step.event, step.target or ""))
        if values is None:
            return ReplayResult(
                transitions=index,
                problem=(
                    f"transition {index + 1}: the chart has no {step.event!r} from "
                    f"{step.source} to {step.target}"
                ),
            )
        failing = index + 1 < len(steps) and steps[index + 1].event == "error.execution"
        host.fail_next = failing
        host.steps.clear()
        lifecycle.send(host, step.event, **values)
        expected = [(step.event, step.source, step.target)]
        if failing:
            after = steps[index + 1]
            expected.append((after.event, after.source, after.target))
        if host.steps != expected:
            if not host.steps:
                problem = (
                    f"transition {index + 1}: the chart has no {step.event!r} from "
                    f"{step.source} to {step.target}"
                )
            else:
                taken = ", ".join(f"{s} -> {t} ({e})" for e, s, t in host.steps)
                problem = (
                    f"transition {index + 1} ({step.event}: {step.source} -> "
                    f"{step.target}) is not what the chart does; it took {taken}"
                )
            return ReplayResult(transitions=index, problem=problem)
        index += 2 if failing else 1
    return ReplayResult(transitions=len(steps))
