"""What a connection sends next, and when a peer has sent too many bad frames.

Theory of operation
-------------------
:class:`FrameSchedule` holds a connection's frame-scheduling state and its rules, with no
I/O and no clock of its own: every rule that depends on the time is given ``now``. It is
the base class of :class:`~statesession._runtime.connection.Connection`, which does the
reading and writing (a base class, not an object of its own: a connection costs no more
than one object).

:meth:`FrameSchedule.next_frame` answers, each time the writer asks, the frame that goes
next, in this order of priority:

1. queued control frames (``welcome``, ``pong``, ``ping``, ``state``, ``error``);
2. the final frame, when it is not to wait for the pending messages;
3. a due ``ack`` for the client's messages (it is small, and a peer may be waiting on it);
4. the next message from the session's replay buffer, by seq -- or, if the buffer has
   already dropped it, a fatal ``resume_gap``;
5. the final frame, once nothing else is pending.

A peer's non-fatal bad frames are answered with an ``error`` frame each, from a budget (a
token bucket, :data:`BAD_FRAME_BURST` at once and :data:`BAD_FRAMES_PER_SECOND` after
that); one over it ends the connection (:meth:`FrameSchedule.escalate`).

Subclasses provide :meth:`FrameSchedule.wake` (there may be something to send) and
:meth:`FrameSchedule.report_bad_frame` (a bad frame is about to be answered).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .._core.codec import PING_TEXT, PONG_TEXT, ack_text, encode_frame, error_text, peek_msg_seq
from .._core.delivery import ClientCursor, ReplayBuffer, ack_is_due
from .._core.exceptions import ProtocolError
from .._core.fifo import Fifo
from .._core.frames import WelcomeFrame

if TYPE_CHECKING:
    from .._core.config import SessionConfig

__all__ = ["BAD_FRAMES_PER_SECOND", "BAD_FRAME_BURST", "GOODBYE", "FrameSchedule", "is_resend"]

#: Bad frames a peer may send at once, and then per second, before it is cut off.
BAD_FRAME_BURST = 16
BAD_FRAMES_PER_SECOND = 1.0
#: What a welcomed connection is told when the transport's task is cancelled under it.
GOODBYE = error_text(
    ProtocolError(
        "server_shutdown",
        "the server is stopping this connection; the session lives on: resume it",
        fatal=True,
    )
)


def is_resend(text: str | bytes, cursor: ClientCursor) -> bool:
    """Whether a frame reads as a ``msg`` the session already received: a resend, which
    is dropped (and acknowledged again) without room in the inbox, so it must not wait
    for room -- the acks queued behind it would not be read, and the client's window
    would not open again."""
    seq = peek_msg_seq(text)
    return seq is not None and seq <= cursor.received


class FrameSchedule:
    """A connection's frames to send, in order, and its peer's bad-frame budget."""

    __slots__ = (
        "_aborted",
        "_ack_every",
        "_bad_at",
        "_bad_tokens",
        "_control",
        "_final",
        "_flush",
        "_goodbye_since",
        "_pong_queued",
        "_reack",
        "_sending_since",
        "close_error",
        "cursor",
        "last_ping",
        "last_received",
        "next_seq",
    )

    def __init__(self, *, ack_every: int, now: float) -> None:
        self.cursor: ClientCursor | None = None
        #: Seq of the next server message to send.
        self.next_seq = 1
        self.last_received = now
        self.last_ping = -math.inf
        #: Control frames to send ahead of messages; made when one is queued, dropped
        #: when empty (an idle connection holds none).
        self._control: Fifo[str] | None = None
        self._ack_every = ack_every
        self._reack = False
        self._final: str | None = None
        self._flush = False
        #: When the connection was told to end (its goodbye is bounded from then on).
        self._goodbye_since: float | None = None
        #: A pong is queued and not sent: another ping needs no other.
        self._pong_queued = False
        #: The peer's budget of bad frames (refilled over time; see escalate()).
        self._bad_tokens = float(BAD_FRAME_BURST)
        self._bad_at = now
        #: The protocol error code the connection ends with, if it ends with one.
        self.close_error: str | None = None
        #: The connection was dropped (no goodbye, no close handshake).
        self._aborted = False
        #: When the send under way began (None: none is).
        self._sending_since: float | None = None

    def close_deadline_at(self, now: float, send_timeout: float) -> float:
        """When closing the channel must be over: at once for a connection that was
        aborted or whose peer stopped taking frames (a close handshake would wait for it
        in vain); send_timeout after the goodbye began for one told to end (its last
        frames and its close share that budget); send_timeout from now otherwise."""
        since = self._sending_since
        if self._aborted or (since is not None and now - since >= send_timeout):
            return -math.inf
        if self._goodbye_since is not None:
            return self._goodbye_since + send_timeout
        return now + send_timeout

    # -- provided by the subclass -------------------------------------------------------

    def wake(self) -> None:
        """There may be something to send."""
        raise NotImplementedError

    def report_bad_frame(self, error: ProtocolError, now: float) -> None:
        """``error`` is about to be answered (after :meth:`escalate`)."""

    # -- rules ----------------------------------------------------------------------------

    def welcome(
        self,
        cursor: ClientCursor,
        seen: int,
        now: float,
        *,
        session_id: str,
        token: str,
        client: str,
        resumed: bool,
        config: SessionConfig,
    ) -> None:
        """The session accepted the connection: send the ``welcome`` before anything
        else, then replay from after ``seen``; the welcome says the ack."""
        text = encode_frame(
            WelcomeFrame(
                session=session_id,
                token=token,
                client=client,
                resumed=resumed,
                state="active",
                ack=cursor.processed,
                heartbeat=config.heartbeat_interval,
                window=config.reconnect_window,
                inbox_messages=config.inbox_messages,
                inbox_bytes=config.inbox_bytes,
                received=cursor.received,
            )
        )
        self.cursor = cursor
        self.next_seq = seen + 1
        cursor.ack_sent = cursor.processed  # the welcome says it
        cursor.ack_due = math.inf
        self.last_received = now
        if self._control is None:
            self._control = Fifo()
        self._control.appendleft(text)

    def ping(self, now: float) -> None:
        """Send a ``ping``, unless one is still unanswered (any frame answers it)."""
        if self.last_ping <= self.last_received:
            self.last_ping = now
            self.queue(PING_TEXT)

    def pinged(self) -> None:
        """The peer pinged: it waits for acks, so the next ack goes as soon as there is
        something to acknowledge (without waiting for ack_delay); one pong answers every
        ping queued before it is sent."""
        if self.cursor is not None:
            self.cursor.ack_due = -math.inf
        if not self._pong_queued:
            self._pong_queued = True
            self.queue(PONG_TEXT)

    def reack(self) -> None:
        """A duplicate (a resend after reconnecting) came: acknowledge again, at once."""
        self._reack = True
        self.wake()

    def queue(self, text: str) -> None:
        """Send a control frame ahead of buffered messages."""
        if self._control is None:
            self._control = Fifo()
        self._control.append(text)
        self.wake()

    def finish_at(self, now: float, text: str, *, flush: bool, error: str | None = None) -> None:
        """End with ``text`` (after the pending messages if ``flush``), unless an end is
        set already; ``error`` is the protocol error code ``text`` carries."""
        if self._final is None:
            self._final = text
            self._flush = flush
            self.close_error = error
            self._goodbye_since = now
            self.wake()

    def escalate(self, error: ProtocolError, now: float) -> ProtocolError:
        """``error`` as it is to be answered: a non-fatal one takes one from the peer's
        budget of bad frames, and one over it becomes fatal (a flood: each would cost an
        ``error`` frame and a log line)."""
        if error.fatal:
            return error
        tokens = min(
            BAD_FRAME_BURST, self._bad_tokens + (now - self._bad_at) * BAD_FRAMES_PER_SECOND
        )
        self._bad_at = now
        if tokens < 1:
            error = ProtocolError(
                "bad_frame",
                f"more than {BAD_FRAME_BURST} bad frames (at over "
                f"{BAD_FRAMES_PER_SECOND:g} a second); the last: {error.message}",
                fatal=True,
            )
        self._bad_tokens = tokens - 1
        return error

    def fail_at(self, error: ProtocolError, now: float) -> None:
        """Tell the peer about ``error``; end the connection if it is fatal, or once the
        peer is over its budget of bad frames."""
        error = self.escalate(error, now)
        self.report_bad_frame(error, now)
        if error.fatal:
            self.finish_at(now, error_text(error), flush=False, error=error.code)
        else:
            self.queue(error_text(error))

    def next_frame(self, buffer: ReplayBuffer, now: float) -> tuple[str | None, bool]:
        """The next frame to send, and whether it is the last. A due ack goes before
        messages: it is small, and a peer may be waiting on it to send more. An ack is
        due after ``ack_delay``, when ``ack_every`` messages wait for it, for a duplicate,
        and before the connection's last frame."""
        control = self._control
        if control:
            text = control.popleft()
            if not control:
                self._control = None
            if text is PONG_TEXT:
                self._pong_queued = False
            return text, False
        final = self._final
        if final is not None and not self._flush:
            return final, True
        cursor = self.cursor
        if cursor is not None:
            processed = cursor.processed
            if self._reack or (
                processed > cursor.ack_sent
                and ack_is_due(
                    acked=cursor.ack_sent,
                    processed=processed,
                    ack_every=self._ack_every,
                    due=cursor.ack_due,
                    now=now,
                    last=final is not None,
                )
            ):
                cursor.ack_sent = processed
                cursor.ack_due = math.inf
                self._reack = False
                return ack_text(processed), False
        seq = self.next_seq
        if seq <= buffer.last_seq:
            if seq < buffer.first_seq:
                self._final = None
                self.fail_at(
                    ProtocolError(
                        "resume_gap",
                        f"messages {seq}..{buffer.first_seq - 1} were dropped before this "
                        "connection was sent them (the replay buffer overflowed)",
                        fatal=True,
                    ),
                    now,
                )
                return self._final, True
            self.next_seq = seq + 1
            return buffer.frame(seq), False
        if final is not None:
            return final, True
        return None, False
