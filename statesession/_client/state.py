"""The client's side of wire protocol v1, without I/O (sans-IO: no trio, no channel).

Theory of operation
-------------------
:class:`ClientProtocol` holds everything a client knows about its session and decides
every frame it sends; the trio supervisor (``supervisor.py``) only moves text between it
and a channel, and wakes whoever waits. Another client of the protocol (a browser's, say)
follows the same rules:

- **Hello.** No session yet: create one (``ack`` omitted). Welcomed before, or given
  ``session``, ``token`` and ``client``: resume (``resume: true``) from the highest seq
  received, or omit ``ack`` when nothing was received yet. Given only ``session`` and
  ``token``: join as a new client with ``ack = 0`` (everything the server still holds).
  A refusal in :data:`~statesession.protocol.RETRYABLE_CODES` is tried again; any other
  is final (:func:`remote_error`).
- **Server -> client.** Messages go into the inbox exactly once, in order: with nothing
  received yet the stream starts where the server starts it; a seq already received is
  dropped; a seq that skips ahead drops the connection (the resume fills the gap). The
  application takes them with :meth:`~ClientProtocol.take`, and acks are cumulative and
  delayed: due ``ack_delay`` after the first message they cover, at once when
  ``ack_every`` wait, when the server pinged for one, or before a ``bye``
  (:func:`~statesession._core.delivery.ack_is_due`, the server's rule too).
- **Client -> server.** Messages are numbered 1, 2, ... and stay *pending* until the
  server acknowledges them. Pending messages are kept within ``max_pending`` and the
  session's inbox bounds from the welcome (``inbox_messages``, ``inbox_bytes``, counted as
  the server counts them), so the server never has to stop reading this client; a sender
  waiting for room pings once to ask for the server's ack at once.
- **Welcome.** It drops what ``welcome.ack`` acknowledges and resends what the server has
  not received: the pending messages above ``welcome.received`` (what it received but its
  application has not taken stays pending, unsent). A client resuming from a new process,
  with nothing pending, numbers on from ``received``.
- **Next frame.** A due ack, then control frames (pong, ping, bye), then the pending
  messages not yet sent on this connection.
- **Dormancy.** ``state passivated`` with nothing pending: stay away until there is
  something to send. With a message pending, reconnect at once.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import Any, Literal

from .._core.codec import PING_TEXT, PONG_TEXT, ack_text, encode_frame, msg_text
from .._core.delivery import ack_is_due
from .._core.errors import FINAL_CODES, RETRYABLE_CODES
from .._core.exceptions import (
    MessageTooLargeError,
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
    ServerFrame,
    StateFrame,
    WelcomeFrame,
)
from .._core.shape import decoded_cost

__all__ = ["ClientProtocol", "Effect", "message_cost", "remote_error"]

#: What the ``msg`` envelope adds to a message's cost in the server's inbox, at most.
_ENVELOPE_COST = 512


class Effect(enum.Enum):
    """What the I/O side does after :meth:`ClientProtocol.on_frame`."""

    NOTHING = enum.auto()  # a duplicate message, a pong, a state change
    DELIVERED = enum.auto()  # a message went into the inbox: wake a receiver
    ROOM = enum.auto()  # acknowledged messages left the window: wake the senders
    WRITE = enum.auto()  # a control frame (a pong) was queued: wake the writer
    DORMANT = enum.auto()  # passivated while idle: then wait for something to send
    CLOSED = enum.auto()  # the server closed the session: end the client
    SKIPPED = enum.auto()  # the server skipped seqs: drop the connection and resume
    DROPPED = enum.auto()  # a fatal error reconnecting may cure: reconnect
    FINAL = enum.auto()  # a final error: raise remote_error(frame)
    REPORTED = enum.auto()  # a non-fatal error: log it and go on


def remote_error(frame: ErrorFrame) -> RemoteError:
    """The exception a refusal or a final error raises in the application."""
    if frame.code == "resume_gap":
        return ResumeGapError(frame.code, frame.message)
    return RemoteError(frame.code, frame.message)


def message_cost(body: str) -> int:
    """What a message with this encoded ``data`` counts for in the server's inbox, at
    most (the window is kept in these units before the frame is built)."""
    return decoded_cost(body) + _ENVELOPE_COST


class ClientProtocol:
    """One client's protocol state: its identity in the session, both message streams
    and what the current connection has sent. Every method is given what happened and
    changes state or says what to send; none waits or does I/O."""

    __slots__ = (
        "ack_asked",
        "ack_delay",
        "ack_due",
        "ack_every",
        "acked_sent",
        "auth",
        "bye_reason",
        "bye_sent",
        "client_id",
        "closed_reason",
        "connected",
        "connects",
        "consumed",
        "control",
        "dormant",
        "failure",
        "heartbeat",
        "inbox",
        "inbox_bytes",
        "inbox_messages",
        "max_frame",
        "max_pending",
        "next_seq",
        "out_seq",
        "pending",
        "pending_bytes",
        "received",
        "resuming",
        "session_id",
        "state",
        "token",
        "window",
    )

    def __init__(
        self,
        *,
        session: str | None,
        token: str | None,
        client: str | None,
        auth: Any,
        max_frame: int,
        max_pending: int,
        ack_delay: float,
        ack_every: int,
    ) -> None:
        #: The session id (set by the first ``welcome``).
        self.session_id = session
        #: The session's secret token, needed to resume it.
        self.token = token
        #: This client's id within the session.
        self.client_id = client
        #: Whether the next hello resumes this client (it was welcomed as it, or the
        #: application named it) rather than joining or creating the session.
        self.resuming = session is not None and client is not None
        #: The session's lifecycle state as last reported by the server.
        self.state: str | None = None
        self.auth = auth
        self.max_frame = max_frame
        self.max_pending = max_pending
        self.ack_delay = ack_delay
        self.ack_every = ack_every
        #: When the ack for what was consumed since the last one is due (inf: none).
        self.ack_due = math.inf
        #: A ping asking the server for its ack is out (see :meth:`ask_for_ack`).
        self.ack_asked = False
        #: The session's reconnect window and heartbeat (from the welcome).
        self.window = 30.0
        self.heartbeat = 10.0
        # server -> client
        self.received = 0  # highest seq placed in the inbox
        self.consumed = 0  # highest seq handed to the application
        self.inbox: deque[tuple[int, Any]] = deque()
        # client -> server
        self.next_seq = 1
        #: (seq, frame, what the server's inbox counts it for), until acknowledged.
        self.pending: deque[tuple[int, str, int]] = deque()
        self.pending_bytes = 0
        #: The session's inbox bounds (from the welcome): unacknowledged messages are
        #: kept within them, so the server never stops reading this client.
        self.inbox_messages: int | None = None
        self.inbox_bytes: int | None = None
        # the current connection
        self.out_seq = 1  # the next pending seq to send on it
        self.acked_sent = 0  # the highest consumed seq it has sent an ack for
        self.control: deque[str] = deque()
        self.connected = False
        self.connects = 0
        # the end
        self.closed_reason: str | None = None
        self.failure: BaseException | None = None
        self.bye_sent = False
        self.bye_reason: str | None = None
        #: The server passivated the session for being idle: stay away until there is
        #: something to send.
        self.dormant = False

    # -- the application's side ---------------------------------------------------------

    def check(self) -> None:
        """Raise what the application gets once the session is over."""
        if self.failure is not None:
            raise self.failure
        if self.closed_reason is not None:
            raise SessionClosedError(self.closed_reason)

    def window_full(self, size: int) -> bool:
        """Whether a message of ``size`` (:func:`message_cost`) must wait for acks."""
        pending = self.pending
        if not pending:
            return False  # the server's inbox always takes one message
        limit = self.max_pending
        if self.inbox_messages is not None:
            limit = min(limit, self.inbox_messages)
        if len(pending) >= limit:
            return True
        return self.inbox_bytes is not None and self.pending_bytes + size > self.inbox_bytes

    def ask_for_ack(self) -> bool:
        """A sender waits for room: ask the server for its ack now rather than after its
        ack delay, once per wait. Return whether a ping was queued (wake the writer)."""
        if self.connected and not self.ack_asked:
            self.ack_asked = True
            self.control.append(PING_TEXT)
            return True
        return False

    def queue_message(self, body: str) -> None:
        """Number the message with encoded ``data`` ``body`` and hold it pending; raise
        :class:`MessageTooLargeError` if its frame is over ``max_frame``."""
        seq = self.next_seq
        text = msg_text(seq, body)
        if len(text) > self.max_frame:
            raise MessageTooLargeError(
                f"message frame of {len(text)} bytes is over max_frame ({self.max_frame})"
            )
        self.next_seq = seq + 1
        cost = decoded_cost(text)
        self.pending.append((seq, text, cost))
        self.pending_bytes += cost

    def take(self, now: float) -> tuple[Any, bool]:
        """Hand the application the next message of the inbox (not empty); return its
        data and whether to wake the writer for the ack."""
        seq, data = self.inbox.popleft()
        self.consumed = seq
        # Acks are delayed and cumulative: wake the writer for the first message an ack
        # will cover (to arm the delay) and when ack_every are waiting.
        if self.ack_due == math.inf:
            self.ack_due = now + self.ack_delay
            return data, True
        return data, self.ack_due == -math.inf or seq - self.acked_sent >= self.ack_every

    def say_bye(self, reason: str | None) -> None:
        """End the session: queue a ``bye`` (and again on every later connection)."""
        self.bye_sent = True
        self.bye_reason = reason
        self.control.append(encode_frame(ByeFrame(reason=reason)))

    def fail(self, error: BaseException) -> None:
        """The client gives up with ``error`` (unless the session is already over)."""
        if self.closed_reason is None and self.failure is None:
            if self.bye_sent and isinstance(error, RemoteError) and error.code == "terminated":
                # The session ended on our bye while we were reconnecting.
                self.closed_reason = "bye"
            else:
                self.failure = error

    # -- a connection -------------------------------------------------------------------

    def hello(self) -> str:
        """The text of the ``hello`` that opens the next connection."""
        if self.session_id is None:
            ack = None  # a new session
        elif self.resuming:
            # The highest seq received; with none yet, the server knows where it was.
            ack = self.received or None
        else:
            ack = 0  # joining as a new client: everything the server still holds
        return encode_frame(
            HelloFrame(
                session=self.session_id,
                token=self.token,
                client=self.client_id,
                ack=ack,
                auth=self.auth,
                resume=self.resuming,
            )
        )

    def on_answer(self, frame: ServerFrame) -> Literal["welcomed", "refused", "unexpected"]:
        """Take the server's answer to ``hello``: a welcome (taken, see :meth:`welcome`),
        a refusal worth trying again, or a frame that is not an answer. Raise the final
        refusals (:func:`remote_error`)."""
        if isinstance(frame, ErrorFrame):
            if frame.code in RETRYABLE_CODES:
                return "refused"
            raise remote_error(frame)
        if not isinstance(frame, WelcomeFrame):
            return "unexpected"
        self.welcome(frame)
        return "welcomed"

    def welcome(self, frame: WelcomeFrame) -> None:
        """The session is attached: take its identity and bounds, drop what it
        acknowledged and start this connection from what it has not received. (Wake the
        senders after it: the window may have grown.)"""
        self.session_id = frame.session
        self.token = frame.token
        self.client_id = frame.client
        self.resuming = True
        self.state = frame.state
        self.window = frame.window
        self.heartbeat = frame.heartbeat
        self.inbox_messages, self.inbox_bytes = frame.inbox_messages, frame.inbox_bytes
        self.drop_acknowledged(frame.ack)
        received = frame.ack if frame.received is None else max(frame.ack, frame.received)
        if not self.pending and self.next_seq <= received:
            # Resuming a client this process never was (given session, token and
            # client): number on from what the server has received, or the next
            # messages would be dropped as duplicates of the old process's.
            self.next_seq = received + 1
        # Resend what the server has not received; what it received and the app has not
        # taken yet stays pending (unacknowledged) but is not sent again.
        self.out_seq = (
            min(max(self.pending[0][0], received + 1), self.next_seq)
            if self.pending
            else self.next_seq
        )
        self.acked_sent = self.received
        self.ack_asked = False
        self.control.clear()
        if self.bye_sent:
            self.control.append(encode_frame(ByeFrame(reason=self.bye_reason)))
        self.connected = True
        self.connects += 1

    def disconnected(self) -> None:
        """The connection is gone."""
        self.connected = False

    def drop_acknowledged(self, seq: int) -> bool:
        """The server acknowledged every message up to ``seq``: stop holding them.
        Return whether any left the window (wake the senders)."""
        pending = self.pending
        dropped = False
        while pending and pending[0][0] <= seq:
            self.pending_bytes -= pending.popleft()[2]
            dropped = True
        if dropped:
            self.ack_asked = False
        return dropped

    def on_frame(self, frame: ServerFrame) -> Effect:
        """Take a frame the server sent on a welcomed connection."""
        if isinstance(frame, MsgFrame):
            if not self.received:
                # With no history yet, the stream starts where the server starts it
                # (a client joining a session mid-way is not sent what came before).
                self.received = frame.seq - 1
            if frame.seq == self.received + 1:
                self.received = frame.seq
                self.inbox.append((frame.seq, frame.data))
                return Effect.DELIVERED
            if frame.seq > self.received + 1:
                return Effect.SKIPPED
            return Effect.NOTHING
        if isinstance(frame, AckFrame):
            return Effect.ROOM if self.drop_acknowledged(frame.seq) else Effect.NOTHING
        if isinstance(frame, PingFrame):
            # A server waiting for acks pings: the next ack goes as soon as there is
            # something to acknowledge, without waiting for ack_delay.
            self.ack_due = -math.inf
            self.control.append(PONG_TEXT)
            return Effect.WRITE
        if isinstance(frame, StateFrame):
            self.state = frame.state
            if frame.state == "passivated" and not self.pending:
                # Nothing of ours is waiting for the server: stay away until there is.
                # (With a message unacknowledged, reconnect at once: the session comes
                # back and takes it.)
                self.dormant = True
                return Effect.DORMANT
            return Effect.NOTHING
        if isinstance(frame, ClosedFrame):
            self.closed_reason = frame.reason
            self.state = "terminated"
            return Effect.CLOSED
        if isinstance(frame, ErrorFrame):
            if not frame.fatal:
                return Effect.REPORTED
            return Effect.FINAL if frame.code in FINAL_CODES else Effect.DROPPED
        return Effect.NOTHING

    @property
    def ack_waiting(self) -> bool:
        """Whether the application took messages no ack has covered yet (the writer
        wakes at ``ack_due`` for them)."""
        return self.consumed > self.acked_sent

    def next_frame(self, now: float) -> str | None:
        """The next frame to send on this connection, or ``None`` for now.

        A due ack first (small, and the server may be waiting on it to send more), then
        control frames, then our own messages. An ack is due after ``ack_delay``, when
        ``ack_every`` messages wait for it, and before a ``bye``."""
        consumed = self.consumed
        if consumed > self.acked_sent and ack_is_due(
            acked=self.acked_sent,
            processed=consumed,
            ack_every=self.ack_every,
            due=self.ack_due,
            now=now,
            last=self.bye_sent,
        ):
            self.acked_sent = consumed
            self.ack_due = math.inf
            return ack_text(consumed)
        if self.control:
            return self.control.popleft()
        pending = self.pending
        if pending and self.out_seq <= pending[-1][0]:
            index = self.out_seq - pending[0][0]
            if index < 0:
                index = 0
            seq, text, _ = pending[index]
            self.out_seq = seq + 1
            return text
        return None
