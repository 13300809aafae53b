"""A session's state: every field, and the small operations every layer uses (posting
jobs to the actor, stepping the chart, waking waiters)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
import trio

from .._core.delivery import Delivery, ReplayBuffer
from .._core.exceptions import ProtocolError, SessionClosedError
from .._core.fifo import Fifo
from .._core.report import CleanupReport
from .cascade import Cascade, OwnedResource, OwnedTask
from .ports import ConnectionPort
from .timers import Timer

if TYPE_CHECKING:
    from .._lifecycle.host import LifecycleHost
    from .context import Runtime


__all__ = ["Message", "SessionState"]

log = logging.getLogger("statesession")

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class Message:
    """A message a client sent to the session."""

    #: The client (``welcome.client``) that sent it.
    client: str
    #: Its seq, 1, 2, ... per client.
    seq: int
    #: The JSON value it carried.
    data: Any
    #: What it counts for in the session's inbox (``inbox_bytes``): its size as received
    #: plus what decoding it costs, about.
    size: int = attrs.field(default=0, eq=False)


def _saved_for_shutdown() -> ProtocolError:
    return ProtocolError(
        "server_shutdown", "server is stopping; the session is saved: resume it later", fatal=True
    )


def _being_saved(session_id: str) -> ProtocolError:
    return ProtocolError(
        "unavailable", f"session {session_id} is being saved; try again", fatal=True
    )


#: Returned by a job whose reply is given later (a connection waiting for activation).
_DEFERRED: Any = object()


class _Reply:
    """Where an awaited job leaves its result for the task that posted it."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None


@attrs.define(eq=False, repr=False)
class SessionState:
    """Every field of a session; the layers above add behaviour, not state."""

    #: The session id clients resume with.
    id: str
    #: Who created it, as returned by the ``authenticate`` hook (``None`` if anonymous).
    principal: str | None
    _runtime: Runtime = attrs.field(alias="runtime")
    _token_hash: bytes = attrs.field(alias="token_hash")
    #: The application's own JSON-serializable data.
    data: dict[str, Any] = attrs.field(factory=dict)
    #: Current lifecycle state id, kept by the lifecycle chart.
    state: str | None = attrs.field(default=None, init=False)
    #: Why the session is ending or ended (``None`` while it runs).
    reason: str | None = attrs.field(default=None, init=False)
    #: The cleanup report, once the cascade has run.
    report: CleanupReport | None = attrs.field(default=None, init=False)
    #: The error that moved the session to ``error``, if any.
    error: BaseException | None = attrs.field(default=None, init=False)

    _delivery: Delivery = attrs.field(init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _jobs: Fifo[tuple[Callable[[], Any], _Reply | None]] = attrs.field(factory=Fifo, init=False)
    #: The actor's task while it waits for a job (a parking lot would cost 250 bytes).
    _actor_waiting: trio.lowlevel.Task | None = attrs.field(default=None, init=False)
    #: (Lists an idle session does not need are made when first needed.)
    _joining: list[tuple[ConnectionPort, int | None, _Reply]] | None = attrs.field(
        default=None, init=False
    )
    _connections: list[ConnectionPort] = attrs.field(factory=list, init=False)
    _state_scope: trio.CancelScope | None = attrs.field(default=None, init=False)
    #: The state work running (a token of it) and its name.
    _state_work: object | None = attrs.field(default=None, init=False)
    _state_work_name: str = attrs.field(default="", init=False)
    #: The current state's timer (see ``timers.py``), ``None`` when none is armed.
    _timer: Timer | None = attrs.field(default=None, init=False)
    _timer_job: Callable[[], None] | None = attrs.field(default=None, init=False)
    _tasks: dict[OwnedTask, None] = attrs.field(factory=dict, init=False)
    _resources: list[OwnedResource] | None = attrs.field(default=None, init=False)
    #: The cleanup under way (terminating or passivating) until it is reported.
    _cleanup: Cascade | None = attrs.field(default=None, init=False)
    _incoming: Fifo[Message] = attrs.field(factory=Fifo, init=False)
    #: The task waiting in ``receive`` (most apps have one), and a lot for any others,
    #: made when needed: an idle session waits without a parking lot (250 bytes).
    _receiver: trio.lowlevel.Task | None = attrs.field(default=None, init=False)
    _incoming_lot: trio.lowlevel.ParkingLot | None = attrs.field(default=None, init=False)
    #: Rare waits (buffer room, inbox room, tasks or connections ending, settling) share
    #: one lot, made on the first such wait: every waiter re-checks its own condition
    #: when woken.
    _changed: trio.lowlevel.ParkingLot | None = attrs.field(default=None, init=False)
    _settled: bool = attrs.field(default=False, init=False)
    #: Passivation done: the actor may leave, the session lives on in the store.
    _parked: bool = attrs.field(default=False, init=False)
    #: How many ``busy()`` blocks are open: a busy session is not passivated.
    _busy: int = attrs.field(default=0, init=False)
    #: When a message last went either way, or the app last stopped being busy.
    _last_activity: float = attrs.field(factory=trio.current_time, init=False)
    #: Wall-clock creation time (seconds since the epoch).
    created: float = attrs.field(factory=time.time, init=False)
    _inbox_waiters: int = attrs.field(default=0, init=False)
    _app_started: bool = attrs.field(default=False, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _finished: bool = attrs.field(default=False, init=False)
    #: Deadline of the reconnect window while ``reconnecting``.
    _deadline: float = attrs.field(default=math.inf, init=False)
    _received: int = attrs.field(default=0, init=False)
    _failure: BaseException | None = attrs.field(default=None, init=False)
    #: The store still holds this session's snapshot: it was brought back from it and has
    #: not been active since (the snapshot is dropped only then).
    _stored: bool = attrs.field(default=False, init=False)
    #: Its save is under way: the manager counts it against the store's quota.
    _saving: bool = attrs.field(default=False, init=False)
    #: terminate() calls whose job has not run yet (wait_terminated waits for them).
    _terminating: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        config = self._runtime.config
        self._delivery = Delivery(
            max_messages=config.buffer_messages,
            max_bytes=config.buffer_bytes,
            drop_oldest=config.overflow == "drop_oldest",
            max_clients=config.max_clients,
        )

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.state}>"

    @property
    def token_hash(self) -> bytes:
        """The hash of the token clients resume with."""
        return self._token_hash

    @property
    def replay_buffer(self) -> ReplayBuffer:
        """The messages sent and not yet acknowledged by every client, by seq."""
        return self._delivery.buffer

    @property
    def connection_count(self) -> int:
        """How many connections are attached."""
        return len(self._connections)

    def terminate(self, reason: str = "terminated") -> None:
        """Ask the session to terminate; returns at once (see :meth:`wait_terminated`).
        A session in ``error`` runs its cleanup again (for what is left)."""
        if self._finished:
            return
        self._terminating += 1

        def terminate() -> None:
            self._terminating -= 1
            self._step("terminate", reason=reason)
            self._wake_changed()

        self._post(terminate)

    def _failed_answer(self) -> ProtocolError:
        return ProtocolError(
            "terminated",
            f"session {self.id} failed (internal_error); the server's log says why",
            fatal=True,
        )

    def _post(self, job: Callable[[], Any], reply: _Reply | None = None) -> None:
        if self._finished:
            if reply is not None:
                reply.error = SessionClosedError(self.reason or "terminated")
                reply.done.set()
            return
        self._jobs.append((job, reply))
        task = self._actor_waiting
        if task is not None:
            self._actor_waiting = None
            trio.lowlevel.reschedule(task)

    def _abort_actor_wait(self, raise_cancel: object) -> trio.lowlevel.Abort:
        self._actor_waiting = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _step(self, event: str, **values: Any) -> bool:
        # (The layers above make this object the chart's host: see StateWork.)
        return self._runtime.lifecycle.send(cast("LifecycleHost", self), event, **values)

    def _post_event(self, event: str, **values: Any) -> None:
        self._post(lambda: self._step(event, **values))

    def _abort_receive(self, raise_cancel: object) -> trio.lowlevel.Abort:
        self._receiver = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake_receivers(self, *, everyone: bool) -> None:
        """Wake a task waiting in ``receive`` (``everyone``: all of them)."""
        task = self._receiver
        if task is not None:
            self._receiver = None
            trio.lowlevel.reschedule(task)
            if not everyone:
                return
        if self._incoming_lot is not None:
            if everyone:
                self._incoming_lot.unpark_all()
            else:
                self._incoming_lot.unpark()

    def _wake_changed(self) -> None:
        if self._changed is not None:
            self._changed.unpark_all()

    async def _wait_changed(self) -> None:
        if self._changed is None:
            self._changed = trio.lowlevel.ParkingLot()
        await self._changed.park()

    def _wake_writers(self) -> None:
        """Wake every connection's writer (there may be something to send)."""
        for connection in self._connections:
            connection.wake()

    def _wake_all(self) -> None:
        self._wake_receivers(everyone=True)
        self._wake_changed()
        self._wake_writers()

    def _new_cleanup(self) -> Cascade:
        """A cleanup pass over what this session holds (see ``cascade.py``)."""
        return Cascade(
            self.id,
            config=self._runtime.config,
            tasks=self._tasks,
            connections=self._connections,
            take_resources=self._held_resources,
            wait_changed=self._wait_changed,
            previous_report=self._previous_report,
        )

    def _held_resources(self) -> list[OwnedResource] | None:
        return self._resources

    def _previous_report(self) -> CleanupReport | None:
        return self.report

    def _check_open(self) -> None:
        if self._closing:
            raise SessionClosedError(self.reason or "terminated")
