"""The chart's states and the events a runtime may send, read from SessionChart (sans-IO).

Theory of operation
-------------------
Nothing here is written by hand: the state ids and the event names come from
:class:`~statesession._lifecycle.chart.SessionChart`'s declaration, so the runtime, the
replay check and the tests cannot drift from the chart. Only the events in
:data:`EXTERNAL_EVENTS` may be sent from outside; :data:`ERROR_EVENT` is raised by the
chart itself when an action fails, and moves the session to ``error``.
"""

from __future__ import annotations

from typing import Any

from statemachine import StateChart

from .chart import SessionChart

__all__ = ["ERROR_EVENT", "EXTERNAL_EVENTS", "FINAL_STATES", "STATES", "external_events"]

#: The event a chart raises itself when an action fails.
ERROR_EVENT = "error.execution"

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
    return frozenset(names - {ERROR_EVENT, "error_execution"})


#: The events a runtime may send; ``error.execution`` is the chart's own.
EXTERNAL_EVENTS: frozenset[str] = external_events(SessionChart)
