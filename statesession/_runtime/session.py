"""One live session: the application's API, over the layers that run it.

Theory of operation
-------------------
Every session has one *actor*: the task that owns the session's nursery and is the only
caller of the shared :class:`~statesession._lifecycle.interpreters.Lifecycle` for it.
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

One object, several modules: :class:`Session` is the top of a chain of slotted layers,
each in its own module and each calling only the layers below it --
``state`` (every field; posting jobs, stepping the chart, waking waiters) <- ``tasks``
<- ``resources`` <- ``heartbeat`` (the state's timer) <- ``attachments`` (connections,
the inbox, acks) <- ``states`` (the chart's host: entry and exit actions, state work,
passivation, the report) <- ``actor`` <- this module (the application's API). The
layers add behaviour, not state: a session is one object with no ``__dict__``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._core.codec import MSG_ENVELOPE, encode_data, encode_message_data, msg_text
from .._core.exceptions import MessageTooLargeError, SessionClosedError
from .._core.report import CleanupReport
from .._core.shape import decoded_cost
from .._core.snapshot import Snapshot

if TYPE_CHECKING:
    from .context import Runtime

from .actor import Actor
from .state import Message

__all__ = ["Message", "Session", "SessionStatistics", "restore_session"]


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


class Session(Actor):
    """A live client session, handed to the application as ``app(session)``.

    The application talks to its clients with :meth:`send` and :meth:`receive` (or
    ``async for message in session``), runs background work with :meth:`start_soon`, and
    registers what must be closed with :meth:`add_resource` / :meth:`enter_resource`.
    Everything it starts is owned by the session and ends with it.
    """

    __slots__ = ()

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
        frame = msg_text(seq, body)
        buffer.append(frame)
        self._last_activity = trio.current_time()
        self._wake_writers()
        for tell in self._runtime.observers.message:
            tell(self, "out", frame)
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
                delay = self._runtime.config.ack_delay
                cursor.ack_due = trio.current_time() + delay
                if delay > 0:
                    self._runtime.timers.arm(cursor.ack_due, self._wake_writers)
                else:
                    self._wake_writers()
            elif (
                cursor.ack_due == -math.inf  # asked for by a ping
                or message.seq - cursor.ack_sent >= self._runtime.config.ack_every
            ):
                self._wake_writers()
        if self._inbox_waiters:
            self._wake_changed()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    def _frame_size(self, body: str, seq: int) -> int:
        size = len(body) + len(str(seq)) + MSG_ENVELOPE
        max_frame = self._runtime.config.max_frame
        if size > max_frame:
            raise MessageTooLargeError(
                f"message frame of {size} bytes is over max_frame ({max_frame} bytes); "
                "split the message or raise max_frame"
            )
        return size

    def __aiter__(self) -> Session:
        return self

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

    async def _wait_gone(self) -> None:
        """Wait until the actor has left (the session terminated, or went to the store)."""
        while not self._finished:
            await self._wait_changed()

    async def wait_saved(self) -> None:
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

    @classmethod
    def _restore(cls, runtime: Runtime, snapshot: Snapshot) -> Session:
        """A session brought back from its snapshot, in state ``passivated``; its actor
        rehydrates it."""
        session = cls(
            id=snapshot.id,
            principal=snapshot.principal,
            runtime=runtime,
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
            size = decoded_cost(encode_data(message.data)) + MSG_ENVELOPE
            session._incoming.append(
                Message(client=message.client, seq=message.seq, data=message.data, size=size)
            )
            cursor = clients.get(message.client)
            if cursor is not None:
                cursor.queued += 1
                cursor.queued_bytes += size
        return session


def restore_session(runtime: Runtime, snapshot: Snapshot) -> Session:
    """A session brought back from its snapshot, in state ``passivated``, for ``runtime``;
    its actor rehydrates it once it runs."""
    return Session._restore(runtime, snapshot)
