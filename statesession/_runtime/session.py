"""One live session: its actor, its nursery, its state work, tasks, resources and cascade.

Theory of operation
-------------------
Every session has one *actor*: the task that owns the session's nursery and is the only
caller of the shared :class:`~statesession._lifecycle.compiled.Lifecycle` for it.
Anything that wants the lifecycle to move -- a connection attaching or leaving, a timer,
the app, the manager -- posts a *job* (a synchronous function) to the actor, which runs
the jobs one at a time.
A job steps the chart and does its bookkeeping with no checkpoint in between, so
cancellation can never tear a transition in half and no lock is needed.

The chart's entry and exit actions call back into this class (the ``begin_*`` and
``end_state`` methods). Entering a state that has work opens a fresh cancel scope for it
and starts the work inside the session's nursery; leaving the state cancels the scope:

* ``initializing``: allocation (the ``setup`` hook) and health checks, then ``activate``;
* ``active``: the heartbeat (pings idle peers, drops silent ones, forgets stale clients);
* ``reconnecting``: the window timer, which sends ``expire``;
* ``terminating``: the cleanup cascade, which sends ``finish``.

User tasks (the app and whatever ``start_soon`` starts) each run in a cancel scope of their
own, tracked by the session, so the cascade can give them a grace period, cancel the ones
still running, and report how each ended. A user task that raises terminates its session;
it never reaches the manager or another session.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from .._core.codec import encode_data, encode_frame, encode_message_data, error_text
from .._core.delivery import ClientCursor, Delivery
from .._core.exceptions import MessageTooLargeError, ProtocolError, SessionClosedError
from .._core.fifo import Fifo
from .._core.frames import ClosedFrame, StateFrame
from .._core.report import CleanupReport
from .._core.shape import decoded_cost
from .._core.snapshot import ClientState, InboxMessage, Snapshot
from .cascade import Cascade, OwnedResource, OwnedTask, describe
from .timers import Timer

if TYPE_CHECKING:
    from .connection import Connection
    from .manager import SessionManager

__all__ = ["Message", "Session", "SessionStatistics"]

log = logging.getLogger("statesession")

T = TypeVar("T")

#: What the ``msg`` envelope adds to the encoded data, besides the seq's digits.
_MSG_ENVELOPE = len('{"type":"msg","seq":,"data":}')


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


@attrs.frozen(kw_only=True)
class SessionStatistics:
    """A snapshot of one session's counters, from :meth:`Session.statistics`."""

    state: str | None
    connections: int
    clients: int
    buffered_messages: int
    buffered_bytes: int
    dropped_messages: int
    sent_messages: int
    received_messages: int
    tasks: int
    resources: int


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
class Session:
    """A live client session, handed to the application as ``app(session)``.

    The application talks to its clients with :meth:`send` and :meth:`receive` (or
    ``async for message in session``), runs background work with :meth:`start_soon`, and
    registers what must be closed with :meth:`add_resource` / :meth:`enter_resource`.
    Everything it starts is owned by the session and ends with it.
    """

    #: The session id clients resume with.
    id: str
    #: Who created it, as returned by the ``authenticate`` hook (``None`` if anonymous).
    principal: str | None
    _manager: SessionManager = attrs.field(alias="manager")
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
    _joining: list[tuple[Connection, int | None, _Reply]] | None = attrs.field(
        default=None, init=False
    )
    _connections: list[Connection] = attrs.field(factory=list, init=False)
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
        config = self._manager.config
        self._delivery = Delivery(
            max_messages=config.buffer_messages,
            max_bytes=config.buffer_bytes,
            drop_oldest=config.overflow == "drop_oldest",
            max_clients=config.max_clients,
        )

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.state}>"

    # == the application's API ===========================================================

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None
    ) -> None:
        """Run ``fn(*args)`` as a task owned by this session.

        The task is cancelled (after the grace period) when the session terminates. If it
        raises, the session terminates with reason ``"task_failed"``. Raises
        :class:`SessionClosedError` once the session is terminating.
        """
        self._check_open()
        label = name or str(getattr(fn, "__qualname__", None) or repr(fn))
        self._spawn(OwnedTask(label), fn, args)

    async def send(self, data: Any) -> None:
        """Send ``data`` (any JSON value) to every attached client, exactly once each.

        The message is buffered until every client has acknowledged it, so a client that
        reconnects within the window still gets it. With ``overflow="backpressure"`` this
        waits while the buffer is full. Raises ``TypeError`` for data that is not JSON,
        :class:`MessageTooLargeError` for a frame over ``max_frame``, and
        :class:`SessionClosedError` once the session is terminating.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        body = encode_message_data(data)
        buffer = self._delivery.buffer
        size = self._frame_size(body, buffer.last_seq + 1)
        while not buffer.drop_oldest and not buffer.has_room(size):
            self._ask_for_acks()
            await self._wait_changed()
            self._check_open()
        seq = buffer.last_seq + 1
        self._frame_size(body, seq)  # the seq may have grown a digit while waiting
        frame = f'{{"type":"msg","seq":{seq},"data":{body}}}'
        buffer.append(frame)
        self._last_activity = trio.current_time()
        self._wake_writers()
        store = self._manager._store
        if store is not None and store.log_messages:
            self._manager._log_message(self, "out", frame)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive(self) -> Message:
        """Wait for the next message from any client.

        Raises :class:`SessionClosedError` once the session is terminating and every
        message already received has been handed out.
        """
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise SessionClosedError(self.reason or "terminated") from None

    async def __anext__(self) -> Message:
        """``async for message in session`` ends when the session starts terminating.

        (The body of ``receive`` is here, so that an app waiting in ``async for`` -- the
        usual way -- waits one coroutine frame deep, not two.)"""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._incoming:
            if self._closing:
                raise StopAsyncIteration
            if self._receiver is None:
                self._receiver = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort_receive)
            else:
                if self._incoming_lot is None:
                    self._incoming_lot = trio.lowlevel.ParkingLot()
                await self._incoming_lot.park()
        message = self._incoming.popleft()
        cursor = self._delivery.clients.get(message.client)
        if cursor is not None:
            cursor.queued -= 1
            cursor.queued_bytes -= message.size
        if cursor is not None and message.seq > cursor.processed:
            cursor.processed = message.seq  # acknowledged to the client from now on
            # Acks are delayed and cumulative: the first message an ack will cover arms a
            # timer that wakes the writers after ack_delay; ack_every waiting, or a ping
            # asking for it, wakes them at once.
            if cursor.ack_due == math.inf:
                delay = self._manager.config.ack_delay
                cursor.ack_due = trio.current_time() + delay
                if delay > 0:
                    self._manager._timers.arm(cursor.ack_due, self._wake_writers)
                else:
                    self._wake_writers()
            elif (
                cursor.ack_due == -math.inf  # asked for by a ping
                or message.seq - cursor.ack_sent >= self._manager.config.ack_every
            ):
                self._wake_writers()
        if self._inbox_waiters:
            self._wake_changed()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    def _ask_for_acks(self) -> None:
        """The buffer is full: ping each connection that has not acknowledged everything
        (and has no ping unanswered), which tells its client to send its ack now rather
        than after its ack delay."""
        now = trio.current_time()
        last_seq = self._delivery.buffer.last_seq
        for connection in self._connections:
            cursor = connection.cursor
            if cursor is not None and cursor.acked < last_seq:
                connection.ping(now)

    def _frame_size(self, body: str, seq: int) -> int:
        size = len(body) + len(str(seq)) + _MSG_ENVELOPE
        max_frame = self._manager.config.max_frame
        if size > max_frame:
            raise MessageTooLargeError(
                f"message frame of {size} bytes is over max_frame ({max_frame} bytes); "
                "split the message or raise max_frame"
            )
        return size

    def __aiter__(self) -> Session:
        return self

    def add_resource(
        self,
        name: str,
        close: Callable[[], Awaitable[object] | object],
        *,
        force: Callable[[], object] | None = None,
        cleanup_timeout: float | None = None,
    ) -> None:
        """Register something to close when the session terminates.

        ``close`` (sync or async) runs under ``cleanup_timeout`` (default
        ``config.cleanup_timeout``); if it overruns -- it is cut short, or it shields
        itself or swallows the cancellation -- it is reported forced and ``force`` (sync),
        if given, is called. Resources close in the reverse order of registration.

        A session that is ending still takes a resource until its cleanup has closed
        the others (a task finishing in its grace period loses nothing); after that this
        raises :class:`SessionClosedError` and the resource stays the caller's.
        """
        self._check_takes_resources()
        if cleanup_timeout is None:
            cleanup_timeout = self._manager.config.cleanup_timeout
        elif not cleanup_timeout > 0:
            raise ValueError(f"cleanup_timeout must be positive, got {cleanup_timeout!r}")
        if self._resources is None:
            self._resources = []
        self._resources.append(OwnedResource(name, close, force, cleanup_timeout))

    async def enter_resource(
        self,
        name: str,
        manager: AbstractAsyncContextManager[T],
        *,
        cleanup_timeout: float | None = None,
    ) -> T:
        """Enter an async context manager now and exit it when the session terminates.

        The exit runs in the cleanup task, not in the task that entered it, so it must not
        be a context manager that holds a nursery or cancel scope (run such code in a task
        started with :meth:`start_soon` instead). Like :meth:`add_resource`, an ending
        session takes it until its cleanup has closed the others; after that this raises
        :class:`SessionClosedError` without entering it (or, if that happened while it
        was being entered, after exiting it again).
        """
        self._check_takes_resources()
        value = await manager.__aenter__()

        async def close() -> None:
            await manager.__aexit__(None, None, None)

        try:
            self.add_resource(name, close, cleanup_timeout=cleanup_timeout)
        except BaseException:
            timeout = cleanup_timeout or self._manager.config.cleanup_timeout
            with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout):
                await close()
            raise
        return value

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Declare the app busy (an agent loop running, a tool call in flight) for the
        block: a busy session is not passivated when idle or when its window expires."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            now = self._last_activity = trio.current_time()
            self._wake_changed()
            if not self._busy and self.state == "reconnecting" and now >= self._deadline:
                self._post(self._expire_window)  # it waited for this

    def _shut_down(self) -> None:
        """The server is stopping (a job of the actor, so it acts on the state the session
        is in, not on one read from outside): a session that can be saved is -- its
        clients resume it from the next server -- the others terminate."""
        if self.state in ("passivated", "terminating", "terminated"):
            return  # on its way out already
        # Not limited by max_stored_sessions: the quota keeps abandoned sessions from
        # filling the store; the live ones (at most max_sessions) are saved when the
        # server stops, and one being brought back still has its snapshot there.
        if self._step(
            "passivate",
            store=self._manager._store is not None,
            shutdown=True,
            restored=self._stored,
            reason="server_shutdown",
        ):
            return
        self._step("terminate", reason="server_shutdown")

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

    async def _wait_gone(self) -> None:
        """Wait until the actor has left (the session terminated, or went to the store)."""
        while not self._finished:
            await self._wait_changed()

    async def _wait_saved(self) -> None:
        """Wait until a session being saved is in the store (its actor has left), or is
        not being saved any more (the save failed: it is terminating)."""
        while self.state == "passivated" and not self._finished:
            await self._wait_changed()

    async def wait_terminated(self) -> CleanupReport | None:
        """Wait until the session has settled (``terminated`` or ``error``), after every
        :meth:`terminate` asked for before this call; return its cleanup report (``None``
        if it failed before any cleanup ran)."""
        await trio.lowlevel.checkpoint()
        while not self._settled or self._terminating:
            await self._wait_changed()
        return self.report

    @property
    def closing(self) -> bool:
        """Whether the session has stopped taking operations."""
        return self._closing

    def statistics(self) -> SessionStatistics:
        """Counters for observability; cheap, never blocks."""
        buffer = self._delivery.buffer
        return SessionStatistics(
            state=self.state,
            connections=len(self._connections),
            clients=len(self._delivery.clients),
            buffered_messages=len(buffer),
            buffered_bytes=buffer.nbytes,
            dropped_messages=buffer.dropped,
            sent_messages=buffer.last_seq,
            received_messages=self._received,
            tasks=len(self._tasks),
            resources=len(self._resources or ()),
        )

    # == snapshots ==========================================================================

    def _snapshot(self, reason: str) -> Snapshot:
        buffer = self._delivery.buffer
        return Snapshot(
            id=self.id,
            token_hash=self._token_hash,
            principal=self.principal,
            created=self.created,
            passivated=time.time(),
            reason=reason,
            data=self.data,
            first_seq=buffer.first_seq,
            frames=tuple(frame for _, frame in buffer.frames_after(0)),
            clients=tuple(
                ClientState(id=c.id, acked=c.acked, processed=c.processed, received=c.received)
                for c in self._delivery.clients.values()
            ),
            inbox=tuple(
                InboxMessage(client=m.client, seq=m.seq, data=m.data) for m in self._incoming
            ),
        )

    @classmethod
    def _restore(cls, manager: SessionManager, snapshot: Snapshot) -> Session:
        """A session brought back from its snapshot, in state ``passivated``; its actor
        rehydrates it."""
        session = cls(
            id=snapshot.id,
            principal=snapshot.principal,
            manager=manager,
            token_hash=snapshot.token_hash,
            data=dict(snapshot.data),
        )
        session.state = "passivated"
        session._stored = True
        session.created = snapshot.created
        now = trio.current_time()
        session._delivery.buffer.restore(snapshot.first_seq, snapshot.frames)
        for client in snapshot.clients:
            session._delivery.restore_client(
                client.id,
                acked=client.acked,
                processed=client.processed,
                received=client.received,
                now=now,
            )
        clients = session._delivery.clients
        for message in snapshot.inbox:
            # Taken as it was received, even from a client forgotten since (away longer
            # than the window): the app gets it, as it would had the session stayed in
            # memory; only a remembered client's share of the inbox counts it.
            size = decoded_cost(encode_data(message.data)) + _MSG_ENVELOPE
            session._incoming.append(
                Message(client=message.client, seq=message.seq, data=message.data, size=size)
            )
            cursor = clients.get(message.client)
            if cursor is not None:
                cursor.queued += 1
                cursor.queued_bytes += size
        return session

    # == the actor =========================================================================

    async def _run(self) -> None:
        """The actor: owns the nursery, runs jobs until the session settles for good.
        Started by the manager, which forgets the session when this returns; nothing
        raised here reaches the manager's other sessions."""
        manager = self._manager
        try:
            async with trio.open_nursery() as nursery:
                # A session ends through its lifecycle (the manager's shutdown terminates
                # it), never by a cancellation from outside tearing through its cascade.
                nursery.cancel_scope.shield = True
                self._nursery = nursery
                if self.state == "passivated":
                    self._run_job(lambda: self._step("rehydrate"), None)
                else:
                    self._run_job(lambda: manager._lifecycle.start(self), None)
                while not self._done():
                    if not self._jobs:
                        self._actor_waiting = trio.lowlevel.current_task()
                        await trio.lowlevel.wait_task_rescheduled(self._abort_actor_wait)
                        continue
                    job, reply = self._jobs.popleft()
                    self._run_job(job, reply)
                nursery.cancel_scope.cancel()
        except Exception as exc:
            # A bug in the actor itself (jobs and state work have their own nets): its
            # nursery is gone, so its tasks are; still close what it holds and say so.
            log.error("session %s crashed: %s", self.id, exc, exc_info=exc)
            with trio.CancelScope(shield=True):
                await self._last_resort(exc)
        finally:
            self._disarm()
            self._nursery = None
            self._finished = True
            self._closing = True
            self._settled = True
            self._fail_waiters()
            manager._forget(self)

    async def _last_resort(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        self.reason = self.reason or "internal_error"
        self._closing = True
        for connection in list(self._connections):
            connection.abort()
        if self._cleanup is None:
            self._cleanup = Cascade(self)
        try:
            await self._cleanup.close_resources()
        except Exception as again:
            self._cleanup.failed_step("cleanup", self._cleanup.since, describe(again))
        self._cleanup.failed_step("actor", self._cleanup.since, describe(exc))
        self._report(self.reason)
        source = self.state
        if source not in ("terminated", "error"):
            self.state = "error"  # the chart's own verdict on a failed action
            self.settle(exc)
            self._manager._observe(self, "error.execution", source or "initializing", "error")

    def _done(self) -> bool:
        if self.state == "terminated" or (self.state == "passivated" and self._parked):
            return True
        # A session whose cleanup failed while the manager shuts down is given up on.
        return self.state == "error" and self._manager._closing and self.report is not None

    @trio.lowlevel.enable_ki_protection
    def _run_job(self, job: Callable[[], Any], reply: _Reply | None) -> None:
        try:
            value = job()
        except (ProtocolError, SessionClosedError) as exc:
            if reply is None:
                self._internal_failure(exc)
                return
            reply.error = exc  # an answer: the connection is refused
        except Exception as exc:
            # A bug in the runtime: the session cannot be trusted to go on, but it still
            # ends through its lifecycle, so its cascade closes what it holds.
            self._internal_failure(exc)
            if reply is not None:
                reply.error = self._failed_answer()
        else:
            if value is _DEFERRED:
                return
            if reply is not None:
                reply.value = value
        if reply is not None:
            reply.done.set()

    def _internal_failure(self, exc: BaseException) -> None:
        """A job of the actor raised: log it and terminate the session (reason
        ``internal_error``), unless it is already ending."""
        log.error("session %s: internal error: %s", self.id, describe(exc), exc_info=exc)
        if self._failure is None:
            self._failure = exc
        if self.state not in ("terminating", "terminated"):
            self._step("terminate", reason="internal_error")

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
        return self._manager._lifecycle.send(self, event, **values)

    def _post_event(self, event: str, **values: Any) -> None:
        self._post(lambda: self._step(event, **values))

    def _fail_waiters(self) -> None:
        closed = SessionClosedError(self.reason or "terminated")
        while self._jobs:
            _, reply = self._jobs.popleft()
            if reply is not None:
                reply.error = closed
                reply.done.set()
        for _, _, reply in self._joining or ():
            reply.error = closed
            reply.done.set()
        self._joining = None
        self._terminating = 0  # their jobs will not run
        self._wake_all()

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

    # == lifecycle actions (called by the chart, synchronously, from the actor) ==========

    def begin_initializing(self) -> None:
        manager = self._manager
        if manager._setup is None and manager._health_check is None:
            self._post(lambda: self._activate(True))  # nothing to wait for
        else:
            self._start_state_work(self._initialize, "setup")

    def begin_active(self) -> None:
        if self._stored:
            # Live again: only now is the store's copy stale (a session whose coming
            # back was cut short still has it).
            self._stored = False
            store = self._manager._store
            if store is not None:
                store.forget(self.id)
        self._deadline = math.inf
        config = self._manager.config
        first = min(config.heartbeat_interval, self._idle_after())
        self._arm(trio.current_time() + first, self._heartbeat)
        if not self._app_started:
            self._app_started = True
            self._spawn(OwnedTask("app"), self._manager._app, (self,), app=True)

    def begin_reconnecting(self) -> None:
        self._deadline = trio.current_time() + self._manager.config.reconnect_window
        self._arm(self._deadline, self._expire_window)

    def begin_passivated(self, reason: str) -> None:
        self.reason = reason
        self._count_saving(True)  # against max_stored_sessions until the store has it
        self._stop_operations()
        self._start_state_work(partial(self._passivate, reason), "passivate")

    def begin_terminating(self, reason: str) -> None:
        self.reason = reason
        self._settled = False  # a retry from `error` settles again when it finishes
        self._stop_operations()
        self._start_state_work(self._terminate_work, "cleanup")

    def _stop_operations(self) -> None:
        """Entering terminating or passivated: take no more operations, wake every waiter
        (they see the session closing), note which tasks are running."""
        self._closing = True
        # A passivation interrupted by a terminate has not been reported yet: the same
        # cleanup goes on, and its report will hold what the passivation did.
        if self._cleanup is None:
            self._cleanup = Cascade(self)
        self._cleanup.restart()
        if self.state != "passivated":
            refusal = ProtocolError(
                "terminated", f"session is {self.state} ({self.reason})", fatal=True
            )
        elif self._manager._closing:
            refusal = _saved_for_shutdown()
        else:
            refusal = _being_saved(self.id)
        self._fail_joins(refusal)
        self._wake_all()

    def settle(self, error: BaseException | None) -> None:
        if error is not None:
            self.error = error
            log.error("session %s failed: %s", self.id, describe(error), exc_info=error)
        self._settled = True
        self._wake_changed()

    def _count_saving(self, saving: bool) -> None:
        if saving != self._saving:
            self._saving = saving
            self._manager._saving += 1 if saving else -1

    def end_state(self, state: str) -> None:
        self._count_saving(False)
        self._disarm()
        if self._state_scope is not None:
            self._state_scope.cancel()
            self._state_scope = None

    def transitioned(self, event: str, source: str, target: str) -> None:
        if source == target:
            return
        log.info("session %s: %s -> %s (%s)", self.id, source, target, event)
        if target == "terminating" and self._connections:
            text = encode_frame(StateFrame(state=target))
            for connection in self._connections:
                connection.queue(text)
        self._manager._observe(self, event, source, target)

    # == state work ========================================================================

    def _start_state_work(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        assert self._nursery is not None
        scope = self._state_scope = trio.CancelScope()
        self._nursery.start_soon(self._run_state_work, scope, work, name, name=f"{self.id}:{name}")

    async def _run_state_work(
        self, scope: trio.CancelScope, work: Callable[[], Awaitable[None]], name: str
    ) -> None:
        """Run one state's work once the previous state's work has unwound, so that two
        states' work never overlap (a cascade starts after the interrupted passivation
        it follows has accounted for what it was closing).

        The previous work was cancelled when its state was left; one that does not stop
        within cleanup_timeout (it shields itself: a ``setup`` that will not be
        interrupted) is reported as a task that failed, and this work goes on. A work
        that raises -- a bug -- ends the session through its lifecycle all the same."""
        token = object()
        with scope:
            if self._state_work is not None:
                waited = trio.current_time()
                with trio.move_on_after(self._manager.config.cleanup_timeout):
                    while self._state_work is not None:
                        await self._wait_changed()
                if self._state_work is not None:
                    self._left_running(self._state_work_name, waited)
            self._state_work, self._state_work_name = token, name
            try:
                await work()
            except Exception as exc:
                self._post(partial(self._work_failed, name, exc))
            finally:
                if self._state_work is token:
                    self._state_work = None
                self._wake_changed()

    def _left_running(self, name: str, since: float) -> None:
        why = (
            f"still running {self._manager.config.cleanup_timeout:g} s after its state was "
            "left (it does not stop when cancelled)"
        )
        log.error("session %s: %s %s", self.id, name, why)
        if self._cleanup is not None:
            self._cleanup.failed_step(name, since, why)

    def _work_failed(self, name: str, exc: Exception) -> None:
        """A state's work raised (a bug in the runtime): end the session all the same --
        a failed cleanup closes what is left, reports the failure, and ends in error."""
        log.error("session %s: %s failed: %s", self.id, name, describe(exc), exc_info=exc)
        if self._failure is None:
            self._failure = exc
        if self.state == "terminating" and self._cleanup is not None:
            self._cleanup.failed_step(name, self._cleanup.since, describe(exc))
            self._start_state_work(self._salvage, "salvage")
        elif self.state not in ("terminating", "terminated", "error"):
            self._step("terminate", reason="internal_error")

    async def _salvage(self) -> None:
        """The cascade failed half way: stop what runs, close what is left, report (the
        report holds the failure, so the session ends in error)."""
        cleanup = self._cleanup
        assert cleanup is not None
        for step in (cleanup.stop_tasks, cleanup.close_resources):
            try:
                await step()
            except Exception as exc:
                cleanup.failed_step("salvage", cleanup.since, describe(exc))
        self._report(self.reason or "terminated")
        self._post_event("finish", leaked=len(self.report.failed) if self.report else 1)

    async def _initialize(self) -> None:
        manager = self._manager
        try:
            if manager._setup is not None:
                await manager._setup(self)
            healthy = True
            if manager._health_check is not None:
                healthy = bool(await manager._health_check(self))
        except Exception as exc:
            log.warning("session %s: setup failed: %s", self.id, describe(exc))
            self._failure = exc
            self._post_event("terminate", reason="setup_failed")
            return
        self._post(lambda: self._activate(healthy))

    def _activate(self, healthy: bool) -> None:
        if not self._step("activate", allocated=True, healthy=healthy):
            if self.state == "initializing":
                self._step("terminate", reason="health_check_failed")
            return
        joining, self._joining = self._joining or [], None
        failure: Exception | None = None
        for connection, ack, reply in joining:
            try:
                self._register(connection, ack)
            except ProtocolError as exc:
                reply.error = exc
            except Exception as exc:  # every joiner is answered, then the job fails
                failure = failure or exc
                reply.error = self._failed_answer()
            reply.done.set()
        if failure is not None:
            raise failure
        if not self._connections:
            self._step("detach", connections=0)

    # == state timers: run by the actor, armed by entry actions, disarmed by exit actions ==

    def _arm(self, at: float, job: Callable[[], None]) -> None:
        self._disarm()
        self._timer_job = job
        self._timer = self._manager._timers.arm(at, self._timer_fired)

    def _timer_fired(self) -> None:
        """The state's timer is due (called by the manager's timer task): post its job."""
        timer, job = self._timer, self._timer_job
        if timer is not None and job is not None:
            self._post(lambda: self._fire(timer, job))

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.disarm()
            self._timer = self._timer_job = None

    def _fire(self, timer: Timer, job: Callable[[], None]) -> None:
        """Run a state's timer in the actor, unless the state that armed it has been
        left since the timer was posted."""
        if timer is self._timer:
            self._timer = self._timer_job = None
            job()

    def _kept_at_expiry(self) -> bool:
        """Whether an expired window saves this session (rather than ending it)."""
        manager = self._manager
        return manager.config.window_expiry == "passivate" and manager._store_has_room(self.id)

    def _idle_after(self) -> float:
        manager = self._manager
        return manager.config.passivate_after if manager._store is not None else math.inf

    def _heartbeat(self) -> None:
        """``active``'s timer: passivate when idle, ping quiet connections, drop silent
        ones, forget clients gone for longer than the window; then re-arm."""
        config = self._manager.config
        interval, timeout = config.heartbeat_interval, config.heartbeat_timeout
        idle_after = self._idle_after()
        now = trio.current_time()
        wake = now + interval
        # Every test below compares ``now`` with the very sum it would wake at, so a timer
        # never re-arms at a time that has already come (``a + b - a`` is not always ``b``).
        idle_at = self._last_activity + idle_after
        if not self._busy and now >= idle_at:
            self._post(
                lambda: self._step(
                    "passivate",
                    store=self._manager._store_has_room(self.id),
                    busy=self._busy,
                    reason="idle",
                )
            )
        elif idle_at > now:
            wake = min(wake, idle_at)
        for connection in list(self._connections):
            last = connection.last_received
            if now >= last + timeout:
                log.info(
                    "session %s: %s silent for %.1f s, dropping it",
                    self.id,
                    connection.peer,
                    now - last,
                )
                connection.abort()
                continue
            if now >= last + interval:
                connection.ping(now)
                wake = min(wake, last + timeout)
            else:
                wake = min(wake, last + interval)
        self._delivery.forget_stale(now=now, window=config.reconnect_window)
        self._wake_changed()
        self._arm(wake, self._heartbeat)

    def _expire_window(self) -> None:
        """``reconnecting``'s timer: the window is over. A busy session is not passivated;
        it expires when its app stops being busy (see :meth:`busy`)."""
        self._step(
            "expire",
            now=trio.current_time(),
            deadline=self._deadline,
            store=self._kept_at_expiry(),
            busy=self._busy,
            reason="window_expired",
        )

    async def _terminate_work(self) -> None:
        """Terminate: notify connections, stop tasks, close resources, report."""
        cleanup = self._cleanup
        assert cleanup is not None
        reason = self.reason or "terminated"
        await cleanup.close_connections(encode_frame(ClosedFrame(reason=reason)))
        await cleanup.stop_tasks()
        await cleanup.close_resources()
        self._report(reason)
        self._post_event("finish", leaked=len(self.report.failed) if self.report else 0)

    async def _passivate(self, reason: str) -> None:
        """Passivate: let connections go, stop tasks, save the snapshot, close resources.

        A session that cannot be saved is terminated rather than kept half alive.
        """
        manager = self._manager
        if reason == "server_shutdown":
            last_words = error_text(_saved_for_shutdown())
        else:
            last_words = encode_frame(StateFrame(state="passivated"))
        cleanup = self._cleanup
        assert cleanup is not None
        await cleanup.close_connections(
            last_words, error="server_shutdown" if reason == "server_shutdown" else None
        )
        await cleanup.stop_tasks()
        store = manager._store
        try:
            if store is None:
                raise RuntimeError("no session store to passivate to")
            try:
                await store.save(self._snapshot(reason))
            finally:
                self._count_saving(False)  # the store counts it now (or never will)
        except Exception as exc:
            log.error("session %s: cannot be saved: %s", self.id, describe(exc), exc_info=exc)
            self._failure = exc
            self._post_event("terminate", reason="passivation_failed")
            return
        await cleanup.close_resources()
        self._report(f"passivated ({reason})")
        self._parked = True
        self._post(lambda: None)  # the actor sees that it is done

    def _report(self, reason: str) -> None:
        """The cleanup pass is over: its report becomes the session's."""
        cleanup = self._cleanup
        assert cleanup is not None
        self.report = cleanup.report(reason, error=self._failure)
        self._cleanup = None

    # == user tasks ========================================================================

    def _spawn(
        self,
        task: OwnedTask,
        fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        *,
        app: bool = False,
    ) -> None:
        assert self._nursery is not None
        self._tasks[task] = None
        self._nursery.start_soon(
            self._run_task, task, fn, args, app, name=f"{self.id}:{task.name}"
        )

    async def _run_task(
        self,
        task: OwnedTask,
        fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        app: bool,
    ) -> None:
        try:
            with task.scope:
                await fn(*args)
        except Exception as exc:
            if isinstance(exc, SessionClosedError) and self._closing:
                # The task used the session after it began terminating: the documented
                # way for send() and friends to say "stop". A clean end, not a failure.
                return
            task.error = exc
            if not self._closing:
                log.warning(
                    "session %s: task %s raised %s",
                    self.id,
                    task.name,
                    describe(exc),
                    exc_info=exc,
                )
                self._failure = exc
                self.terminate("app_error" if app else "task_failed")
        else:
            if app and not self._closing:
                self.terminate("completed")
        finally:
            task.ended_at = trio.current_time()
            del self._tasks[task]
            if not self._tasks:  # what a cascade waits for (not each of 1,000 tasks)
                self._wake_changed()

    # == connections (called by Connection and the manager) ===============================

    def _check_open(self) -> None:
        if self._closing:
            raise SessionClosedError(self.reason or "terminated")

    def _check_takes_resources(self) -> None:
        if self._closing and (self._cleanup is None or self._cleanup.resources_closed):
            raise SessionClosedError(
                self.reason or "terminated",
                f"session {self.id} has closed its resources ({self.reason}); it takes no more",
            )

    async def _attach(self, connection: Connection, ack: int | None) -> None:
        """Attach a connection (through the actor); raises ProtocolError if refused."""
        reply = _Reply()

        def attach() -> object:
            if self.state == "initializing":
                if self._joining is None:
                    self._joining = []
                self._joining.append((connection, ack, reply))
                return _DEFERRED  # answered when the session activates (or fails to)
            self._admit(connection, ack)
            return None

        self._post(attach, reply)
        try:
            await reply.done.wait()
        except BaseException:
            # The handshake was cancelled: the connection must not stay attached (or be
            # attached later) with no task to run it.
            connection.abort()
            if reply.done.is_set() and reply.error is None:
                self._detach(connection)
            raise
        if isinstance(reply.error, SessionClosedError):
            # The session finished before it could take this connection.
            raise ProtocolError(
                "terminated", f"session has terminated ({reply.error.reason})", fatal=True
            )
        if reply.error is not None:
            raise reply.error

    def _admit(self, connection: Connection, ack: int | None) -> None:
        """Attach to an active or reconnecting session: validate, step, then register.
        A session being saved is alive, and answers ``unavailable`` (the manager waits
        for the save and brings it back); only one that is ending says ``terminated``."""
        if self.state == "passivated":
            raise _being_saved(self.id)
        if self.state not in ("active", "reconnecting"):
            raise ProtocolError(
                "terminated", f"session is {self.state} ({self.reason})", fatal=True
            )
        self._delivery.check(connection.client, ack, resume=connection.resumed)
        now = trio.current_time()
        if not self._step(
            "attach",
            token_ok=True,
            now=now,
            deadline=self._deadline,
            kept=now >= self._deadline and self._kept_at_expiry(),  # (asked only then)
        ):
            raise ProtocolError(
                "terminated", "the session's reconnect window has expired", fatal=True
            )
        self._register(connection, ack)

    def _register(self, connection: Connection, ack: int | None) -> None:
        if connection.aborted:
            raise ProtocolError("terminated", "connection was aborted", fatal=True)
        cursor, seen = self._delivery.admit(connection.client, ack, resume=connection.resumed)
        if self._manager.config.attach_policy == "takeover":
            replaced = list(self._connections)
        else:
            replaced = [c for c in self._connections if c.client == connection.client]
        for old in replaced:
            old.finish(
                encode_frame(
                    ClosedFrame(
                        reason="replaced" if old.client == connection.client else "taken_over"
                    )
                ),
                flush=False,
            )
        self._delivery.attached(cursor)
        connection.attach(cursor, seen, trio.current_time())
        self._connections.append(connection)
        self._wake_changed()  # the resume may have acknowledged buffered messages
        log.info(
            "session %s: %s attached as client %s (ack %d)",
            self.id,
            connection.peer,
            connection.client,
            seen,
        )

    def _fail_joins(self, error: ProtocolError) -> None:
        for _, _, reply in self._joining or ():
            reply.error = error
            reply.done.set()
        self._joining = None

    def _detach(self, connection: Connection) -> None:
        """A connection ended; runs in the connection's task, synchronously."""
        if connection not in self._connections:
            return
        self._connections.remove(connection)
        if connection.cursor is not None:
            self._delivery.detached(connection.cursor, now=trio.current_time())
        self._wake_changed()
        log.info("session %s: %s detached", self.id, connection.peer)
        self._post(lambda: self._step("detach", connections=len(self._connections)))

    def _inbox_full(self, cursor: ClientCursor, size: int) -> bool:
        """Whether a message counting ``size`` would overfill the client's share of the
        inbox (with nothing of it queued, it takes one message, however large)."""
        if not cursor.queued:
            return False
        config = self._manager.config
        return (
            cursor.queued >= config.inbox_messages
            or cursor.queued_bytes + size > config.inbox_bytes
        )

    async def _inbox_room(self, cursor: ClientCursor, size: int) -> None:
        """Wait until the client's share of the inbox has room for a message counting
        ``size`` (or the session is closing)."""
        while self._inbox_full(cursor, size) and not self._closing:
            self._inbox_waiters += 1
            try:
                await self._wait_changed()
            finally:
                self._inbox_waiters -= 1

    async def _deliver(self, connection: Connection, seq: int, data: Any, size: int) -> bool:
        """Queue a client message for the app, exactly once; return whether it was new.

        A client keeps at most its window of messages unacknowledged (the inbox's bounds,
        which hold for each client), and they are acknowledged only as the app takes
        them, so a conforming client never fills its share. One that does (more than
        ``inbox_messages`` queued, or more than ``inbox_bytes``: ``size`` is what this
        one counts for) is made to wait: its connection stops being read until the app
        catches up. A client with nothing queued always has one message taken, however
        large.
        """
        cursor = connection.cursor
        assert cursor is not None
        if seq <= cursor.received:
            return False
        await self._inbox_room(cursor, size)
        if self._closing:
            raise ProtocolError(
                "terminated",
                f"session is terminating ({self.reason}); msg {seq} was not processed",
            )
        if self._delivery.receive(cursor, seq) == "duplicate":
            return False
        self._received += 1
        self._last_activity = trio.current_time()
        self._incoming.append(Message(client=connection.client, seq=seq, data=data, size=size))
        cursor.queued += 1
        cursor.queued_bytes += size
        self._wake_receivers(everyone=False)
        store = self._manager._store
        if store is not None and store.log_messages:
            self._manager._log_message(
                self, "in", encode_data({"client": connection.client, "seq": seq, "data": data})
            )
        return True

    def _acknowledged(self, connection: Connection, seq: int) -> None:
        assert connection.cursor is not None
        if seq >= connection.next_seq and seq > connection.cursor.acked:
            raise ProtocolError(
                "bad_frame",
                f"ack.seq is {seq} but this connection was sent only up to seq "
                f"{connection.next_seq - 1}",
            )
        before = len(self._delivery.buffer)
        self._delivery.acknowledge(connection.cursor, seq)
        if len(self._delivery.buffer) != before:
            self._wake_changed()
