"""The client's connections: connect, reconnect with backoff, and run each one (trio).

Theory of operation
-------------------
:class:`Supervisor` keeps a client's session connected. It opens a channel (the
``connect`` callable), sends the hello of its :class:`~.state.ClientProtocol` and waits
for the answer; ``connect_timeout`` bounds the whole way in. A welcomed connection runs
two tasks: a reader that hands every server frame to the protocol state and wakes whoever
the frame concerns (:class:`~.state.Effect`), and a writer that sends what
:meth:`~.state.ClientProtocol.next_frame` gives, parking while there is nothing (until
``ack_due`` while an ack waits for its delay). The connection ends when either ends: the
channel broke, the server stayed silent for three heartbeats, or a frame ended it.

Whenever a connection ends, the supervisor opens a new one, with exponential backoff and
jitter between attempts, and gives up (:class:`ChannelBrokenError`) after
``give_up_after`` seconds without one (default: the session's reconnect window). A
refusal the server may lift later (:data:`~statesession.protocol.RETRYABLE_CODES`) is
retried like a dropped connection; any other, and a server that is not speaking v1, is
final. After ``state passivated`` with nothing pending, it stays away (dormant) until the
application has something to send.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import cast

import trio

from .._core.channel import Channel
from .._core.decode import decode_server_frame
from .._core.exceptions import (
    ChannelBrokenError,
    ChannelError,
    FrameTooLargeError,
    ProtocolError,
    RemoteError,
)
from .._core.frames import ErrorFrame, MsgFrame
from .backoff import Backoff
from .state import ClientProtocol, Effect, remote_error

__all__ = ["Connect", "Supervisor"]

log = logging.getLogger("statesession.client")

Connect = Callable[[], Awaitable[Channel]]

#: Seconds a channel gets to close before it is abandoned.
CLOSE_TIMEOUT = 10.0


class Supervisor:
    """The trio side of one client: its connections, and the lots and events its
    application waits on."""

    def __init__(
        self,
        state: ClientProtocol,
        connect: Connect,
        *,
        connect_timeout: float,
        backoff: Backoff,
        give_up_after: float | None,
    ) -> None:
        self.state = state
        self._connect = connect
        self._connect_timeout = connect_timeout
        self._backoff = backoff
        self._give_up_after = give_up_after
        #: Receivers wait here for the inbox, senders for room in the window.
        self.inbox = trio.lowlevel.ParkingLot()
        self.room = trio.lowlevel.ParkingLot()
        self._writer = trio.lowlevel.ParkingLot()
        self.welcomed = trio.Event()
        self.ended = trio.Event()
        #: Set when there is something to send (a dormant client reconnects).
        self.wake = trio.Event()
        self.stopped = trio.Event()
        self._last_error = "none"
        self._fatal: RemoteError | None = None

    def wake_writer(self) -> None:
        """Something may be ready to send."""
        self._writer.unpark_all()

    def check(self) -> None:
        """Raise what the application gets once the session is over."""
        self.state.check()

    async def run(self) -> None:
        """Keep the session connected until it ends or the client gives up."""
        state = self.state
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
                    try:
                        welcomed = await self._converse(channel, deadline)
                    finally:
                        state.disconnected()
                        with trio.CancelScope(shield=True) as scope:
                            scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                            await channel.aclose()
                    if self.ended.is_set():
                        return
                    if welcomed:
                        # It was up: the time without a connection starts now.
                        attempt, dropped_at = 0, trio.current_time()
                    if state.dormant:
                        # Passivated while idle: come back when there is something to
                        # send (the server has nothing to say until then).
                        await self.wake.wait()
                        state.dormant = False
                        attempt, dropped_at = 0, None
                        continue
                if state.session_id is None and state.bye_sent:
                    return
                now = trio.current_time()
                if dropped_at is None:  # never up yet: count from the first attempt
                    dropped_at = started
                limit = self._give_up_after if self._give_up_after is not None else state.window
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
            self.stopped.set()

    def _fail(self, error: BaseException) -> None:
        self.state.fail(error)
        self._end()

    def _end(self) -> None:
        self.ended.set()
        self.welcomed.set()
        self.inbox.unpark_all()
        self.room.unpark_all()

    async def _converse(self, channel: Channel, deadline: float) -> bool:
        """Handshake and run one connection; return whether it was welcomed."""
        state = self.state
        try:
            with trio.move_on_at(deadline) as waited:
                await channel.send(state.hello())
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
        frame = decode_server_frame(text, max_frame=state.max_frame)
        answer = state.on_answer(frame)
        if answer == "refused":
            refusal = cast(ErrorFrame, frame)
            self._last_error = f"{refusal.code}: {refusal.message}"
            log.info("server answered %s; trying again", self._last_error)
            return False
        if answer == "unexpected":
            log.warning("server answered hello with %s; reconnecting", type(frame).__name__)
            return False
        self.room.unpark_all()  # the window may have grown
        self.welcomed.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop, channel, nursery.cancel_scope)
            with suppress(ChannelError):
                await self._read_loop(channel)
            nursery.cancel_scope.cancel()
        if self._fatal is not None:
            raise self._fatal
        return True

    async def _read_loop(self, channel: Channel) -> None:
        state = self.state
        silence = state.heartbeat * 3
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
                frame = decode_server_frame(text, max_frame=state.max_frame)
            except ProtocolError as exc:
                log.warning("bad frame from the server (%s); reconnecting", exc)
                return
            effect = state.on_frame(frame)
            if effect is Effect.NOTHING:
                continue
            if effect is Effect.DELIVERED:
                self.inbox.unpark()
            elif effect is Effect.ROOM:
                self.room.unpark_all()
            elif effect is Effect.WRITE:
                self._writer.unpark_all()
            elif effect is Effect.DORMANT:
                self.wake = trio.Event()
            elif effect is Effect.CLOSED:
                self._end()
                return
            elif effect is Effect.SKIPPED:
                log.warning(
                    "server skipped from seq %d to %d; resuming",
                    state.received,
                    cast(MsgFrame, frame).seq,
                )
                return
            else:
                error = cast(ErrorFrame, frame)
                if effect is Effect.FINAL:
                    # Raised after the connection's nursery has closed, so the user gets
                    # the error itself, not a group holding it.
                    self._fatal = remote_error(error)
                    return
                if effect is Effect.DROPPED:
                    log.info("server ended the connection: %s (%s)", error.code, error.message)
                    return
                log.info("server reported %s: %s", error.code, error.message)

    async def _write_loop(self, channel: Channel, done: trio.CancelScope) -> None:
        state = self.state
        try:
            while True:
                text = state.next_frame(trio.current_time())
                if text is None:
                    if not state.ack_waiting:
                        await self._writer.park()
                    else:  # an ack is waiting for its delay
                        with trio.move_on_at(state.ack_due):
                            await self._writer.park()
                    continue
                await channel.send(text)
        except ChannelError:
            pass
        finally:
            done.cancel()
