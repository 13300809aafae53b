"""What the lifecycle drives, and how an interpreter reaches it (sans-IO).

Theory of operation
-------------------
The chart's actions are plain synchronous calls on a :class:`LifecycleHost` -- one
session's runtime -- which may only do synchronous things (open or cancel a cancel scope,
start a task, queue a frame). A host keeps nothing of the chart but its current state id,
in its ``state`` attribute.

Sessions do not own a chart: an interpreter steps any number of them. The chart's model is
a :class:`Cursor` that the interpreter points at the session being stepped, so the chart's
callbacks reach that session through ``model.host`` and the chart's state is that
session's ``state``. Steps never nest (the chart is synchronous and the runtime
single-threaded), so one cursor serves every session. Between steps it points at
:data:`PARKED`, which keeps no session alive and refuses any action taken outside a step.
"""

from __future__ import annotations

from typing import Any, Protocol

from .._core.exceptions import LifecycleError

__all__ = ["PARKED", "Cursor", "LifecycleHost"]


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


class Cursor:
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


class _Parked:
    """Where the cursor points between steps, so no session is kept alive by it."""

    state: str | None = "initializing"

    def __getattr__(self, name: str) -> Any:
        raise LifecycleError(f"the lifecycle acted outside a step ({name})")


PARKED: Any = _Parked()
