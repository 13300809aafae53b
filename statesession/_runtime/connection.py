"""One channel attached to a session: reads client frames, writes server frames.

Theory of operation
-------------------
After the handshake a connection runs two loops, the *reader* in the task that called
``serve_channel`` (the transport's), which decodes each client frame and applies it to the
session, and the *writer*, which sends what the connection's frame schedule (its base
class, :class:`~statesession._runtime.scheduling.FrameSchedule`) says goes next. This
module does the I/O; the schedule decides what to send, and in what order.

The writer never holds a copy of a message: it reads the encoded frame from the session's
replay buffer by seq, so N connections cost N cursors, not N queues. What is ready goes
in one ``send_many`` (up to :data:`BATCH_BYTES`) when the channel writes a batch at once:
a replay of a thousand messages is a few writes, not a thousand. Every send is bounded
by ``send_timeout`` (one timer per connection on the manager's heap checks it); a peer
that stops reading is dropped, never waited on forever.

Either loop ending ends the connection: the peer going away stops the writer; the final
frame having been sent stops the reader. The session is then told the connection detached.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from .._core.channel import Channel
from .._core.decode import decode_client_frame
from .._core.delivery import ClientCursor
from .._core.exceptions import ChannelError, FrameTooLargeError, ProtocolError
from .._core.frames import AckFrame, ByeFrame, HelloFrame, MsgFrame, PingFrame
from .._core.shape import decoded_cost
from .ports import SessionPort
from .scheduling import GOODBYE, FrameSchedule, is_resend
from .timers import Timer

if TYPE_CHECKING:
    from .context import Runtime

__all__ = ["BATCH_BYTES", "WRITER_IDLE", "Connection"]

log = logging.getLogger("statesession")

#: A writer gathers frames that are ready into one send_many up to about this many bytes.
BATCH_BYTES = 65536
#: Seconds a connection's writer waits with nothing to send before it ends (see wake).
WRITER_IDLE = 1.0
#: Frames costing more than this wait for inbox room before they are decoded.
_DECODE_FIRST = 4096
#: The reader yields to other tasks after this many frames.
_YIELD_EVERY = 16


class Connection(FrameSchedule):
    """A channel attached to a session as one client."""

    __slots__ = (
        "_bye",
        "_idle_since",
        "_idle_timer",
        "_open",
        "_parked_writer",
        "_retiring",
        "_scope",
        "_send_timer",
        "_writer_done",
        "_writer_running",
        "_writer_scope",
        "channel",
        "client",
        "peer",
        "resumed",
        "runtime",
        "session",
        "token",
    )

    def __init__(
        self,
        channel: Channel,
        session: SessionPort,
        *,
        runtime: Runtime,
        client: str,
        token: str,
        resumed: bool,
    ) -> None:
        super().__init__(ack_every=runtime.config.ack_every, now=trio.current_time())
        self.channel = channel
        self.session = session
        self.runtime = runtime
        self.client = client
        self.token = token
        self.resumed = resumed
        self.peer = channel.peer
        self._bye = False
        #: The reader's cancel scope once the connection runs, and the writer's while it
        #: runs: cancelling both (``_drop``) drops the connection.
        self._scope: trio.CancelScope | None = None
        self._writer_scope: trio.CancelScope | None = None
        #: Set when the writer ends, if the reader waits for it to.
        self._writer_done: trio.Event | None = None
        #: Checks, send_timeout after a send began, that it is over (see _check_send).
        self._send_timer: Timer | None = None
        #: While the connection runs, a writer may be started (see wake).
        self._open = False
        self._writer_running = False
        #: The writer's task while it waits for something to send.
        self._parked_writer: trio.lowlevel.Task | None = None
        #: Since when the writer has waited, and the timer that retires it (see wake).
        self._idle_since = 0.0
        self._idle_timer: Timer | None = None
        self._retiring = False

    # -- called by the session (synchronously) ------------------------------------------

    def attach(self, cursor: ClientCursor, seen: int, now: float) -> None:
        """The session accepted this connection: queue the welcome, replay from ``seen``."""
        self.welcome(
            cursor,
            seen,
            now,
            session_id=self.session.id,
            token=self.token,
            client=self.client,
            resumed=self.resumed,
            config=self.runtime.config,
        )

    def finish(self, text: str, *, flush: bool, error: str | None = None) -> None:
        """End the connection with ``text``, after the pending messages if ``flush``;
        ``error`` is the protocol error code ``text`` carries (the transport closes with
        it: a WebSocket close code in the 4000 range)."""
        self.finish_at(trio.current_time(), text, flush=flush, error=error)

    def fail(self, error: ProtocolError) -> None:
        """Tell the peer about ``error``; end the connection if it is fatal, or if the
        peer has sent more bad frames than its budget allows (see ``escalate``)."""
        self.fail_at(error, trio.current_time())

    def report_bad_frame(self, error: ProtocolError, now: float) -> None:
        left_out = self.runtime.bad_frame_log.allow(now)
        if left_out is not None:
            log.info(
                "session %s: %s sent a bad frame: %s%s",
                self.session.id,
                self.peer,
                error,
                f" ({left_out} more bad frames were left out of the log)" if left_out else "",
            )

    def wake(self) -> None:
        """There may be something to send: wake the writer, or start it if it retired.

        A writer that has had nothing to send for :data:`WRITER_IDLE` seconds ends (an
        idle connection holds no writer task, about 2.3 KiB); the next frame to send
        starts another. Writers run in the manager's nursery, each in the connection's
        own cancel scope, so that a connection holds no nursery of its own: an idle one
        is its reader, waiting in the transport's task."""
        task = self._parked_writer
        if task is not None:
            self._parked_writer = None
            trio.lowlevel.reschedule(task)
        elif not self._writer_running and self._open:
            self._writer_running = True
            try:
                self.runtime.nursery.start_soon(self._write_loop)
            except RuntimeError:  # the manager is gone: so is the connection
                self._writer_running = False
                self._drop()

    def _retire_writer(self) -> None:
        """The idle timer: end the writer if it has waited WRITER_IDLE seconds."""
        self._idle_timer = None
        if self._parked_writer is None:
            return  # it is writing; the next wait arms the timer again
        due = self._idle_since + WRITER_IDLE
        if trio.current_time() >= due:
            self._retiring = True
            self.wake()
        else:
            self._idle_timer = self.runtime.timers.arm(due, self._retire_writer)

    def _abort_park(self, raise_cancel: object) -> trio.lowlevel.Abort:
        self._parked_writer = None
        return trio.lowlevel.Abort.SUCCEEDED

    def abort(self) -> None:
        """Drop the connection now, sending nothing more."""
        self._aborted = True
        self._drop()

    def _drop(self) -> None:
        """End the connection: stop its reader and its writer wherever they are."""
        for scope in (self._scope, self._writer_scope):
            if scope is not None:
                scope.cancel()

    @property
    def aborted(self) -> bool:
        return self._aborted

    def close_deadline(self) -> float:
        """When closing the channel must be over (see :meth:`close_deadline_at`)."""
        return self.close_deadline_at(trio.current_time(), self.runtime.config.send_timeout)

    # -- the connection's own task ------------------------------------------------------

    async def run(self) -> None:
        """Read and write until the connection ends: the writer in a task of its own, the
        reader in this one (inline: an idle connection waits one frame deep)."""
        session = self.session
        channel = self.channel
        max_frame = self.runtime.config.max_frame
        outside = False
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._aborted:
                    scope.cancel()
                self._open = True
                self.wake()
                burst = 0
                try:
                    while True:
                        # A stream transport hands out what one read returned without a
                        # checkpoint: yield now and then, so that one connection working
                        # through thousands of frames does not starve the others.
                        burst += 1
                        if burst == _YIELD_EVERY:
                            burst = 0
                            await trio.lowlevel.checkpoint()
                        try:
                            text = await channel.receive()
                        except FrameTooLargeError as exc:
                            self.fail(ProtocolError("frame_too_large", str(exc), fatal=True))
                            await trio.sleep_forever()
                        except ChannelError:
                            break
                        self.last_received = trio.current_time()
                        size = decoded_cost(text)
                        cursor = self.cursor
                        if (
                            size > _DECODE_FIRST
                            and cursor is not None
                            and session.inbox_full(cursor, size)
                            and not is_resend(text, cursor)
                        ):
                            # Past its share of the inbox the client is not read until
                            # the app catches up: a large frame waits before it is
                            # decoded, so that what waits is its text, not the (many
                            # times larger) decoded data. (A small one -- an ack, a
                            # ping -- is decoded and handled; a msg then waits. So
                            # does a large msg that only looked like a resend.)
                            await session.wait_inbox_room(cursor, size)
                        try:
                            frame = decode_client_frame(text, max_frame=max_frame)
                            kind = type(frame)
                            if kind is MsgFrame:
                                assert isinstance(frame, MsgFrame)
                                await self._on_msg(frame, size)
                            elif kind is AckFrame:
                                assert isinstance(frame, AckFrame)
                                session.acknowledged(self, frame.seq)
                            elif kind is PingFrame:
                                self.pinged()
                            elif kind is ByeFrame:
                                assert isinstance(frame, ByeFrame)
                                self._bye = True
                                log.info(
                                    "session %s: %s said bye (%s)",
                                    session.id,
                                    self.peer,
                                    frame.reason,
                                )
                                session.terminate("bye")
                            elif kind is HelloFrame:
                                raise ProtocolError(
                                    "bad_frame", "hello may only be the first frame"
                                )
                        except ProtocolError as exc:
                            self.fail(exc)
                            if exc.fatal:
                                await trio.sleep_forever()
                except trio.Cancelled:
                    # Not by this connection's own scope: the transport's task is being
                    # cancelled (the server stops serving it). The writer stays, to say
                    # goodbye.
                    outside = not scope.cancel_called
                    raise
                finally:
                    self._open = False
                    if not outside:
                        self._drop()
                    self._disarm_timers()
        finally:
            if outside:
                await self._goodbye()
            # However the reader ended (even cancelled from outside), the connection ends
            # when its writer has: the channel is closed after this returns.
            if self._writer_running:
                self._writer_done = trio.Event()
                with trio.CancelScope(shield=True):
                    await self._writer_done.wait()
        timeout = self.runtime.config.send_timeout
        since = self._sending_since
        if since is not None and trio.current_time() - since >= timeout:
            log.info(
                "session %s: %s took over %.1f s to take a frame; dropped it",
                self.session.id,
                self.peer,
                trio.current_time() - since,
            )

    async def _goodbye(self) -> None:
        """The transport's task is cancelled under a welcomed connection: send it what it
        has not been sent and ``error server_shutdown`` (its session lives on, for it to
        resume), within send_timeout, shielded; then drop it."""
        if self.cursor is not None and not self._aborted:
            self.finish(GOODBYE, flush=True, error="server_shutdown")
            self._open = True  # (so that wake() can start a writer if none runs)
            self.wake()
            self._open = False
            timeout = self.runtime.config.send_timeout
            with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout):
                while self._writer_running:
                    self._writer_done = done = trio.Event()
                    await done.wait()
        self._drop()

    async def _on_msg(self, frame: MsgFrame, size: int) -> None:
        session = self.session
        if session.closing or self._bye:
            raise ProtocolError(
                "terminated",
                f"session is terminating ({session.reason}); msg {frame.seq} was not processed",
            )
        if not await session.deliver(self, frame.seq, frame.data, size):
            self.reack()  # a duplicate (a resend after reconnecting)

    async def _write_loop(self) -> None:
        session = self.session
        buffer = session.replay_buffer
        send = self.channel.send
        send_many = self.channel.send_many
        # Gathering frames is for channels that write a batch at once; one that sends
        # them one by one is given them one by one, each send under send_timeout.
        batching = type(self.channel).send_many is not Channel.send_many
        next_frame = self.next_frame
        clock = trio.current_time
        timers = self.runtime.timers
        timeout = self.runtime.config.send_timeout
        wait = trio.lowlevel.wait_task_rescheduled
        current_task = trio.lowlevel.current_task
        ending = True
        try:
            with trio.CancelScope() as own:
                self._writer_scope = own
                if not self._open or self._aborted:
                    own.cancel()  # the connection ended before this writer started
                while True:
                    text, last = next_frame(buffer, clock())
                    if text is None:
                        if self._retiring:
                            ending = False
                            return
                        # Wait to be woken (wake(); a held-back ack's timer wakes the writers
                        # when due: see Session.receive).
                        self._idle_since = trio.current_time()
                        if self._idle_timer is None:
                            self._idle_timer = timers.arm(
                                self._idle_since + WRITER_IDLE, self._retire_writer
                            )
                        self._parked_writer = current_task()
                        await wait(self._abort_park)
                        continue
                    self._retiring = False
                    batch: list[str] | None = None
                    if batching and not last:
                        # Whatever else is ready goes in the same write.
                        size = len(text)
                        while size < BATCH_BYTES:
                            more, last = next_frame(buffer, clock())
                            if more is None:
                                break
                            if batch is None:
                                batch = [text]
                            batch.append(more)
                            size += len(more)
                            if last:
                                break
                    self._sending_since = now = trio.current_time()
                    if self._send_timer is None:
                        self._send_timer = timers.arm(now + timeout, self._check_send)
                    if batch is None:
                        await send(text)
                    else:
                        await send_many(batch)
                    self._sending_since = None
                    if last:
                        return
        except ChannelError:
            self._sending_since = None
        except Exception as exc:  # a bug ends this connection only, never the manager
            log.error(
                "session %s: %s: the writer failed: %s", session.id, self.peer, exc, exc_info=exc
            )
        finally:
            self._writer_scope = None
            self._writer_running = False
            self._retiring = False
            if ending:
                self._drop()
            if not self._open:
                self._disarm_timers()  # (this writer may have armed them after run ended)
            if self._writer_done is not None:
                self._writer_done.set()

    def _disarm_timers(self) -> None:
        for timer in (self._send_timer, self._idle_timer):
            if timer is not None:
                timer.disarm()
        self._send_timer = self._idle_timer = None

    def _check_send(self) -> None:
        """Drop the connection if its send under way began ``send_timeout`` ago; else
        check again when the one under way (if any) reaches that age.

        One timer per connection on the manager's heap, armed by the first send after the
        last check, rather than a deadline set and cleared on every send (which cost about
        5% of the server's CPU per echoed message, registering deadlines with trio)."""
        self._send_timer = None
        since = self._sending_since
        if since is None:
            return  # idle: the next send arms it again
        due = since + self.runtime.config.send_timeout
        if trio.current_time() >= due:
            self._drop()
        else:
            self._send_timer = self.runtime.timers.arm(due, self._check_send)
