"""The session lifecycle as a statechart (sans-IO).

Theory of operation
-------------------
:class:`SessionChart` declares the lifecycle: seven states, the events that move between
them, the guards that decide, and the entry/exit actions. It is the single source of truth:
the runtime, the docs diagram and the property tests all read it.

Guards are pure functions of the values sent with the event (the clock, "is the token
right", "how many connections are left"), so the chart never reads time or I/O itself.
Actions are plain synchronous calls on the :class:`~statesession._lifecycle.host.LifecycleHost`
reached through the chart's model, a :class:`~statesession._lifecycle.host.Cursor`. Nothing
here awaits, so a run-to-completion step has no checkpoint and cannot be torn by
cancellation.

The chart holds no session and is not instantiated per session: the interpreters in
:mod:`statesession._lifecycle.interpreters` step every session through it, one running it
on python-statemachine's engine and one running it compiled to tables
(:mod:`statesession._lifecycle.tables`). Its state ids and the events a runtime may send
are read from it in :mod:`statesession._lifecycle.events`.
"""

from __future__ import annotations

from statemachine import State, StateChart

from .host import Cursor

__all__ = ["SessionChart"]


class SessionChart(StateChart[Cursor]):
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

    def on_enter_initializing(self, model: Cursor) -> None:
        model.host.begin_initializing()

    def on_enter_active(self, model: Cursor) -> None:
        model.host.begin_active()

    def on_enter_reconnecting(self, model: Cursor) -> None:
        model.host.begin_reconnecting()

    def on_enter_passivated(self, model: Cursor, reason: str = "passivated") -> None:
        model.host.begin_passivated(reason)

    def on_enter_terminating(self, model: Cursor, reason: str = "terminated") -> None:
        model.host.begin_terminating(reason)

    def on_enter_terminated(self, model: Cursor) -> None:
        model.host.settle(None)

    def on_enter_error(self, model: Cursor, error: BaseException | None = None) -> None:
        model.host.settle(error)

    def failed_again(self, model: Cursor, error: BaseException | None = None) -> None:
        # error -> error does not re-run the entry action; the new error is still reported.
        model.host.settle(error)

    def on_exit_state(self, model: Cursor, source: State) -> None:
        model.host.end_state(source.id)

    def after_transition(
        self, model: Cursor, event: str, source: State, target: State | None
    ) -> None:
        model.took = True
        model.host.transitioned(str(event), source.id, target.id if target else source.id)
