"""A trio client for wire protocol v1 that survives dropped connections.

Theory of operation
-------------------
:func:`open_client` opens a channel (through the ``connect`` callable), says ``hello``,
and waits for ``welcome`` before handing the client over, so a refusal raises at once.
A supervisor task then keeps the session connected: whenever the channel breaks (or the
server stays silent for three heartbeats) it opens a new one, with exponential backoff and
jitter, and resumes with the session's token and the highest seq it has received.

Server messages are handed out exactly once, in order: a resend of something already
received is dropped. They are acknowledged as the application takes them (``receive``),
so an application that falls behind slows the server down instead of piling up memory.
The client's own messages stay in a pending buffer until the server acknowledges them, and
are resent after a reconnect from the server's ``welcome.ack`` on.

Once welcomed, every reconnect *resumes* (``hello.resume``): if the server no longer
remembers this client it refuses with ``resume_gap``, raised to the application, rather
than admit it as new and take its unacknowledged messages twice. A refusal the server
may lift later (:data:`~statesession.protocol.RETRYABLE_CODES`: the server is stopping,
or cannot attach the session right now) is retried like a dropped connection; any other
is final. A session passivated while idle lets the client go dormant -- it reconnects
when it has something to send -- but never while the server has not acknowledged one of
its messages: those are sent again at once.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import attrs
import trio

from .._core.channel import Channel
from .._core.codec import PING_TEXT, PONG_TEXT, encode_frame, encode_message_data
from .._core.config import MiB
from .._core.decode import decode_server_frame
from .._core.delivery import ack_is_due
from .._core.errors import FINAL_CODES, RETRYABLE_CODES
from .._core.exceptions import (
    ChannelBrokenError,
    ChannelError,
    FrameTooLargeError,
    MessageTooLargeError,
    ProtocolError,
    RemoteError,
    ResumeGapError,
    SessionClosedError,
)
from .._core.frames import (
    AckFrame,
    ByeFrame,
    ClosedFrame,
    ErrorFrame,
    HelloFrame,
    MsgFrame,
    PingFrame,
    StateFrame,
    WelcomeFrame,
)
from .._core.shape import decoded_cost
from .._core.util import collapse_single_exception_group
from .._runtime.transport import Transport, pick_transport

__all__ = ["Backoff", "Client", "ClientStatistics", "open_client"]

log = logging.getLogger("statesession.client")

Connect = Callable[[], Awaitable[Channel]]

#: What the ``msg`` envelope adds to a message's cost in the server's inbox, at most.
_ENVELOPE_COST = 512

#: Seconds a channel gets to close before it is abandoned.
_CLOSE_TIMEOUT = 10.0


@attrs.frozen(kw_only=True)
class Backoff:
    """Delays between reconnect attempts: ``initial * multiplier**n``, capped at
    ``maximum``, each randomized by +/- ``jitter`` (a fraction) so that many clients
    dropped at once do not come back at once."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.multiplier**attempt)
        return base * (1 + self.jitter * (2 * random.random() - 1))


@attrs.frozen(kw_only=True)
class ClientStatistics:
    """Counters of one client, from :meth:`Client.statistics`."""

    connected: bool
    #: The server passivated the idle session; the client reconnects on the next send.
    dormant: bool
    connects: int
    pending: int
    received: int
    sent: int


class Client:
    """A session seen from the client side; made by :func:`open_client`."""

    def __init__(
        self,
        connect: Connect,
        *,
        session: str | None,
        token: str | None,
        client: str | None,
        auth: Any,
        max_frame: int,
        max_pending: int,
        backoff: Backoff,
        give_up_after: float | None,
        connect_timeout: float,
        ack_delay: float,
        ack_every: int,
    ) -> None:
        self._connect = connect
        self._connect_timeout = connect_timeout
        #: The session id (set by the first ``welcome``).
        self.session_id = session
        #: The session's secret token, needed to resume it.
        self.token = token
        #: This client's id within the session.
        self.client_id = client
        #: Whether the next hello resumes this client (it was welcomed as it, or the
        #: application named it) rather than joining or creating the session.
        self._resuming = session is not None and client is not None
        #: The session's lifecycle state as last reported by the server.
        self.state: str | None = None
        self._auth = auth
        self._max_frame = max_frame
        self._max_pending = max_pending
        self._ack_delay = ack_delay
        self._ack_every = ack_every
        #: When the ack for what was consumed since the last one is due (inf: none).
        self._ack_due = math.inf
        #: A ping asking the server for its ack is out (see send()).
        self._ack_asked = False
        self._backoff = backoff
        self._give_up_after = give_up_after
        self._window = 30.0
        self._heartbeat = 10.0
        # server -> client
        self._received = 0  # highest seq placed in the inbox
        self._consumed = 0  # highest seq handed to the application
        self._inbox: deque[tuple[int, Any]] = deque()
        self._inbox_lot = trio.lowlevel.ParkingLot()
        # client -> server
        self._next_seq = 1
        #: (seq, frame, what the server's inbox counts it for), until acknowledged.
        self._pending: deque[tuple[int, str, int]] = deque()
        self._pending_bytes = 0
        #: The session's inbox bounds (from the welcome): unacknowledged messages are
        #: kept within them, so the server never stops reading this client.
        self._inbox_messages: int | None = None
        self._inbox_bytes: int | None = None
        self._room_lot = trio.lowlevel.ParkingLot()
        # the current connection
        self._channel: Channel | None = None
        self._out_seq = 1
        self._acked_sent = 0
        self._control: deque[str] = deque()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._welcomed = trio.Event()
        self._connected = False
        self._connects = 0
        self._closed_reason: str | None = None
        self._failure: BaseException | None = None
        self._bye_sent = False
        self._bye_reason: str | None = None
        self._ended = trio.Event()
        self._last_error = "none"
        #: The server passivated the session for being idle: stay away until there is
        #: something to send.
        self._dormant = False
        self._wake = trio.Event()
        self._stopped = trio.Event()
        self._fatal: RemoteError | None = None

    # -- the application's API ------------------------------------------------------------

    async def send(self, data: Any) -> None:
        """Send ``data`` (any JSON value) to the session, exactly once.

        Waits while ``max_pending`` messages are still unacknowledged, or as many as the
        session's inbox holds (``welcome.inbox_messages``, ``inbox_bytes``): a message is
        acknowledged when the server's application takes it, so this client never sends
        more than the server takes without stopping to read it. Raises
        :class:`SessionClosedError` or :class:`RemoteError` once the session is over.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check()
        body = encode_message_data(data)
        size = decoded_cost(body) + _ENVELOPE_COST
        while self._window_full(size):
            if self._connected and not self._ack_asked:
                # Ask the server for its ack now rather than after its ack delay.
                self._ack_asked = True
                self._control.append(PING_TEXT)
                self._writer_lot.unpark_all()
            await self._room_lot.park()
            self._check()
        seq = self._next_seq
        text = f'{{"type":"msg","seq":{seq},"data":{body}}}'
        if len(text) > self._max_frame:
            raise MessageTooLargeError(
                f"message frame of {len(text)} bytes is over max_frame ({self._max_frame})"
            )
        self._next_seq = seq + 1
        cost = decoded_cost(text)
        self._pending.append((seq, text, cost))
        self._pending_bytes += cost
        self._writer_lot.unpark_all()
        self._wake.set()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive(self) -> Any:
        """Wait for the next message from the session and return its data.

        Raises :class:`SessionClosedError` once the server closed the session and every
        message has been handed out, or :class:`RemoteError` if the server refused it.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._inbox:
            self._check()
            await self._inbox_lot.park()
        seq, data = self._inbox.popleft()
        self._consumed = seq
        # Acks are delayed and cumulative: wake the writer for the first message an ack
        # will cover (to arm the delay) and when ack_every are waiting.
        if self._ack_due == math.inf:
            self._ack_due = trio.current_time() + self._ack_delay
            self._writer_lot.unpark_all()
        elif self._ack_due == -math.inf or seq - self._acked_sent >= self._ack_every:
            self._writer_lot.unpark_all()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Any:
        """``async for data in client`` ends when the server has closed the session."""
        try:
            return await self.receive()
        except SessionClosedError:
            raise StopAsyncIteration from None

    async def close(self, reason: str | None = None) -> None:
        """End the session (``bye``) and wait until the server confirms (``closed``)."""
        await trio.lowlevel.checkpoint()
        if self._ended.is_set():
            return
        self._bye_sent = True
        self._bye_reason = reason
        self._control.append(encode_frame(ByeFrame(reason=reason)))
        self._writer_lot.unpark_all()
        self._wake.set()
        await self._ended.wait()

    @property
    def closed_reason(self) -> str | None:
        """Why the server closed the session, once it has."""
        return self._closed_reason

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            connected=self._connected,
            dormant=self._dormant,
            connects=self._connects,
            pending=len(self._pending),
            received=self._received,
            sent=self._next_seq - 1,
        )

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed_reason is not None:
            raise SessionClosedError(self._closed_reason)

    # -- the supervisor -------------------------------------------------------------------

    async def _supervise(self) -> None:
        attempt = 0
        dropped_at: float | None = None
        try:
            while True:
                started = trio.current_time()
                # connect_timeout bounds the whole way in: opening the channel and the
                # hello/welcome exchange.
                deadline = started + self._connect_timeout
                try:
                    with trio.fail_at(deadline):
                        channel = await self._connect()
                except (OSError, ChannelError, trio.TooSlowError) as exc:
                    self._last_error = f"connect failed: {exc or 'timed out'}"
                    log.info("%s", self._last_error)
                else:
                    self._channel = channel
                    try:
                        welcomed = await self._converse(channel, deadline)
                    finally:
                        self._channel = None
                        self._connected = False
                        with trio.CancelScope(shield=True) as scope:
                            scope.deadline = trio.current_time() + _CLOSE_TIMEOUT
                            await channel.aclose()
                    if self._ended.is_set():
                        return
                    if welcomed:
                        # It was up: the time without a connection starts now.
                        attempt, dropped_at = 0, trio.current_time()
                    if self._dormant:
                        # Passivated while idle: come back when there is something to
                        # send (the server has nothing to say until then).
                        await self._wake.wait()
                        self._dormant = False
                        attempt, dropped_at = 0, None
                        continue
                if self.session_id is None and self._bye_sent:
                    return
                now = trio.current_time()
                if dropped_at is None:  # never up yet: count from the first attempt
                    dropped_at = started
                limit = self._give_up_after if self._give_up_after is not None else self._window
                remaining = dropped_at + limit - now
                if remaining <= 0:
                    self._fail(
                        ChannelBrokenError(
                            f"could not reach the server for {limit:g} s; giving up "
                            f"(last error: {self._last_error})"
                        )
                    )
                    return
                await trio.sleep(min(self._backoff.delay(attempt), remaining))
                attempt += 1
        except (RemoteError, ProtocolError) as exc:
            self._fail(exc)
        finally:
            self._stopped.set()

    def _fail(self, error: BaseException) -> None:
        if self._closed_reason is None and self._failure is None:
            if self._bye_sent and isinstance(error, RemoteError) and error.code == "terminated":
                # The session ended on our bye while we were reconnecting.
                self._closed_reason = "bye"
            else:
                self._failure = error
        self._end()

    def _end(self) -> None:
        self._ended.set()
        self._welcomed.set()
        self._inbox_lot.unpark_all()
        self._room_lot.unpark_all()

    async def _converse(self, channel: Channel, deadline: float) -> bool:
        """Handshake and run one connection; return whether it was welcomed."""
        if self.session_id is None:
            ack = None  # a new session
        elif self._resuming:
            # The highest seq received; with none yet, the server knows where it was.
            ack = self._received or None
        else:
            ack = 0  # joining as a new client: everything the server still holds
        hello = HelloFrame(
            session=self.session_id,
            token=self.token,
            client=self.client_id,
            ack=ack,
            auth=self._auth,
            resume=self._resuming,
        )
        try:
            with trio.move_on_at(deadline) as waited:
                await channel.send(encode_frame(hello))
                text = await channel.receive()
        except ChannelError as exc:
            self._last_error = f"handshake failed: {exc}"
            log.info("%s", self._last_error)
            return False
        if waited.cancelled_caught:
            self._last_error = "no welcome from the server"
            log.info("%s; reconnecting", self._last_error)
            return False
        # A server whose answer is not valid v1 will not get better by retrying.
        frame = decode_server_frame(text, max_frame=self._max_frame)
        if isinstance(frame, ErrorFrame):
            if frame.code in RETRYABLE_CODES:
                self._last_error = f"{frame.code}: {frame.message}"
                log.info("server answered %s; trying again", self._last_error)
                return False
            raise self._remote_error(frame)
        if not isinstance(frame, WelcomeFrame):
            log.warning("server answered hello with %s; reconnecting", type(frame).__name__)
            return False
        self._welcome(frame)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop, channel, nursery.cancel_scope)
            with suppress(ChannelError):
                await self._read_loop(channel)
            nursery.cancel_scope.cancel()
        if self._fatal is not None:
            raise self._fatal
        return True

    def _welcome(self, frame: WelcomeFrame) -> None:
        self.session_id = frame.session
        self.token = frame.token
        self.client_id = frame.client
        self._resuming = True
        self.state = frame.state
        self._window = frame.window
        self._heartbeat = frame.heartbeat
        self._inbox_messages, self._inbox_bytes = frame.inbox_messages, frame.inbox_bytes
        self._room_lot.unpark_all()  # the window may have grown
        self._drop_acknowledged(frame.ack)
        received = frame.ack if frame.received is None else max(frame.ack, frame.received)
        if not self._pending and self._next_seq <= received:
            # Resuming a client this process never was (given session, token and
            # client): number on from what the server has received, or the next
            # messages would be dropped as duplicates of the old process's.
            self._next_seq = received + 1
        # Resend what the server has not received; what it received and the app has not
        # taken yet stays pending (unacknowledged) but is not sent again.
        self._out_seq = (
            min(max(self._pending[0][0], received + 1), self._next_seq)
            if self._pending
            else self._next_seq
        )
        self._acked_sent = self._received
        self._ack_asked = False
        self._control.clear()
        if self._bye_sent:
            self._control.append(encode_frame(ByeFrame(reason=self._bye_reason)))
        self._connected = True
        self._connects += 1
        self._welcomed.set()

    def _remote_error(self, frame: ErrorFrame) -> RemoteError:
        if frame.code == "resume_gap":
            return ResumeGapError(frame.code, frame.message)
        return RemoteError(frame.code, frame.message)

    def _window_full(self, size: int) -> bool:
        pending = self._pending
        if not pending:
            return False  # the server's inbox always takes one message
        limit = self._max_pending
        if self._inbox_messages is not None:
            limit = min(limit, self._inbox_messages)
        if len(pending) >= limit:
            return True
        return self._inbox_bytes is not None and self._pending_bytes + size > self._inbox_bytes

    def _drop_acknowledged(self, seq: int) -> None:
        pending = self._pending
        dropped = False
        while pending and pending[0][0] <= seq:
            self._pending_bytes -= pending.popleft()[2]
            dropped = True
        if dropped:
            self._ack_asked = False
            self._room_lot.unpark_all()

    async def _read_loop(self, channel: Channel) -> None:
        silence = self._heartbeat * 3
        while True:
            with trio.move_on_after(silence) as waited:
                try:
                    text = await channel.receive()
                except FrameTooLargeError as exc:
                    # Reconnecting would only resend the same frame: this is final.
                    self._fatal = RemoteError(
                        "frame_too_large",
                        f"a frame over the limit ended the connection ({exc}); the server's "
                        "or this client's max_frame is smaller than the message",
                    )
                    return
            if waited.cancelled_caught:
                log.info("server silent for %.1f s; reconnecting", silence)
                return
            try:
                frame = decode_server_frame(text, max_frame=self._max_frame)
            except ProtocolError as exc:
                log.warning("bad frame from the server (%s); reconnecting", exc)
                return
            if isinstance(frame, MsgFrame):
                if not self._received:
                    # With no history yet, the stream starts where the server starts it
                    # (a client joining a session mid-way is not sent what came before).
                    self._received = frame.seq - 1
                if frame.seq == self._received + 1:
                    self._received = frame.seq
                    self._inbox.append((frame.seq, frame.data))
                    self._inbox_lot.unpark()
                elif frame.seq > self._received + 1:
                    log.warning(
                        "server skipped from seq %d to %d; resuming", self._received, frame.seq
                    )
                    return
            elif isinstance(frame, AckFrame):
                self._drop_acknowledged(frame.seq)
            elif isinstance(frame, PingFrame):
                # A server waiting for acks pings: the next ack goes as soon as there is
                # something to acknowledge, without waiting for ack_delay.
                self._ack_due = -math.inf
                self._control.append(PONG_TEXT)
                self._writer_lot.unpark_all()
            elif isinstance(frame, StateFrame):
                self.state = frame.state
                if frame.state == "passivated" and not self._pending:
                    # Nothing of ours is waiting for the server: stay away until there
                    # is. (With a message unacknowledged, reconnect at once: the session
                    # comes back and takes it.)
                    self._dormant = True
                    self._wake = trio.Event()
            elif isinstance(frame, ClosedFrame):
                self._closed_reason = frame.reason
                self.state = "terminated"
                self._end()
                return
            elif isinstance(frame, ErrorFrame):
                if frame.fatal:
                    if frame.code in FINAL_CODES:
                        # Raised after the connection's nursery has closed, so the user
                        # gets the error itself, not a group holding it.
                        self._fatal = self._remote_error(frame)
                        return
                    log.info("server ended the connection: %s (%s)", frame.code, frame.message)
                    return
                log.info("server reported %s: %s", frame.code, frame.message)

    async def _write_loop(self, channel: Channel, done: trio.CancelScope) -> None:
        try:
            while True:
                text = self._next_frame()
                if text is None:
                    if self._consumed <= self._acked_sent:
                        await self._writer_lot.park()
                    else:  # an ack is waiting for its delay
                        with trio.move_on_at(self._ack_due):
                            await self._writer_lot.park()
                    continue
                await channel.send(text)
        except ChannelError:
            pass
        finally:
            done.cancel()

    def _next_frame(self) -> str | None:
        """Control frames first, then a due ack (small, and the server may be waiting on
        it to send more), then our own messages. An ack is due after ``ack_delay``, when
        ``ack_every`` messages wait for it, and before a ``bye``."""
        consumed = self._consumed
        if consumed > self._acked_sent and ack_is_due(
            acked=self._acked_sent,
            processed=consumed,
            ack_every=self._ack_every,
            due=self._ack_due,
            now=trio.current_time(),
            last=self._bye_sent,
        ):
            self._acked_sent = consumed
            self._ack_due = math.inf
            return f'{{"type":"ack","seq":{consumed}}}'
        if self._control:
            return self._control.popleft()
        pending = self._pending
        if pending and self._out_seq <= pending[-1][0]:
            index = self._out_seq - pending[0][0]
            if index < 0:
                index = 0
            seq, text, _ = pending[index]
            self._out_seq = seq + 1
            return text
        return None


@asynccontextmanager
async def open_client(
    connect: Connect | str,
    *,
    transport: str | Transport | None = None,
    session: str | None = None,
    token: str | None = None,
    client: str | None = None,
    auth: Any = None,
    max_frame: int = MiB,
    max_pending: int = 1000,
    backoff: Backoff | None = None,
    give_up_after: float | None = None,
    connect_timeout: float = 10.0,
    ack_delay: float = 0.05,
    ack_every: int = 32,
) -> AsyncIterator[Client]:
    """Connect to a session server and keep the session connected.

    ``connect`` is a URL (``"ws://127.0.0.1:8765/"``, ``"tcp://127.0.0.1:8766"``, or any
    registered transport's scheme, reached with the transport registered for it or the one
    ``transport`` names or is) or a function that opens a new :class:`Channel`; it is
    used again after every drop, with exponential backoff and jitter between attempts
    (``backoff``) and each attempt bounded by ``connect_timeout``. Pass ``session`` and
    ``token`` to attach to an existing session (with ``client`` to resume as that
    client); otherwise a new session is created. Returns once the server welcomed the
    client, raising :class:`RemoteError` if it refused. Reconnecting gives up after
    ``give_up_after`` seconds without a connection (default: the server's reconnect
    window), raising :class:`ChannelBrokenError`. Leaving the block ends the session with
    ``bye`` unless it is already over. Messages received are acknowledged as the
    application takes them, cumulatively: at the latest ``ack_delay`` seconds later, or
    at once when ``ack_every`` wait for their ack (``ack_delay=0``: each at once).
    """
    if (session is None) != (token is None):
        raise ValueError("session and token go together: give both to resume, or neither")
    if not ack_delay >= 0:
        raise ValueError(f"ack_delay must be 0 or more seconds, not {ack_delay!r}")
    if ack_every < 1:
        raise ValueError(f"ack_every must be at least 1, not {ack_every!r}")
    if isinstance(connect, str):
        picked = pick_transport(connect, transport)
    elif transport is not None:
        raise ValueError("transport goes with a URL, not with a function that connects")
    with collapse_single_exception_group():
        async with trio.open_nursery() as nursery:
            opener: Connect = (
                partial(picked.connect, connect, nursery=nursery, max_frame=max_frame)
                if isinstance(connect, str)
                else connect
            )
            client_obj = Client(
                opener,
                session=session,
                token=token,
                client=client,
                auth=auth,
                max_frame=max_frame,
                max_pending=max_pending,
                backoff=backoff or Backoff(),
                give_up_after=give_up_after,
                connect_timeout=connect_timeout,
                ack_delay=ack_delay,
                ack_every=ack_every,
            )
            nursery.start_soon(client_obj._supervise, name="statesession client")
            await client_obj._welcomed.wait()
            client_obj._check()
            try:
                yield client_obj
            finally:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + _CLOSE_TIMEOUT
                    if not client_obj._ended.is_set() and client_obj._connected:
                        await client_obj.close()
                    if client_obj._ended.is_set():
                        # Let the supervisor close its channel (a close handshake needs
                        # the transport's tasks, which the cancel below would end).
                        await client_obj._stopped.wait()
                nursery.cancel_scope.cancel()
