"""Exactly-once, in-order delivery: the replay buffer and each client's cursors (sans-IO).

Theory of operation
-------------------
Server -> client. Every message a session sends gets the next ``seq`` (1, 2, ...) and is
encoded once; the text goes into the :class:`ReplayBuffer`. Each client acknowledges, with
cumulative ``ack {seq}`` frames, the highest seq it has processed. A message leaves the
buffer once every client the session remembers has acknowledged it. A client that comes
back with ``ack = n`` is sent every held message above ``n``, in order, before any new
one; if a message above ``n`` is no longer held, it gets ``resume_gap`` instead -- never a
silent hole.

The buffer is bounded by ``buffer_messages`` and ``buffer_bytes``. When it is full, the
``backpressure`` policy makes ``session.send`` wait until acknowledgements make room; the
``drop_oldest`` policy evicts the oldest message, and whoever still needed it gets
``resume_gap`` when it resumes (or at once, if it is attached and had not yet been sent it).

Client -> server. Each client numbers its messages 1, 2, ... The server accepts seq
``received + 1`` only; a lower seq is a duplicate (a resend after reconnecting), dropped and
acknowledged again; a higher one means the client lost track, a fatal protocol error. A
message is acknowledged once the application has taken it (``processed``), not when it
arrives: the client's window of unacknowledged messages is then the flow control, and the
server never has to stop reading a connection -- which would leave the client's acks
unread behind its messages while the application waits for them.

Joining and resuming. A client says which it does (``hello.resume``). A *resuming*
client continues the streams of a client the session remembers; one the session has
forgotten is refused with ``resume_gap``: what it sent (and was sent) since can no longer
be accounted for, and admitting it as new would have the application take its
unacknowledged messages a second time. A *joining* client is new: it must not name a
client the session knows, and it starts at the session's current message (or, with
``ack = 0``, at the oldest one still held).

A client is remembered while it is attached and for one reconnect window after it
detached; a session remembers at most ``max_clients`` clients.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import attrs

from .exceptions import ProtocolError
from .fifo import Fifo

__all__ = ["ClientCursor", "Delivery", "ReplayBuffer", "ack_is_due"]


class ReplayBuffer:
    """The encoded server messages not yet acknowledged by every client, by seq."""

    __slots__ = (
        "_bytes",
        "_first",
        "_frames",
        "drop_oldest",
        "dropped",
        "max_bytes",
        "max_messages",
    )

    def __init__(self, *, max_messages: int, max_bytes: int, drop_oldest: bool) -> None:
        self._frames: Fifo[str] = Fifo()
        #: Seq of the oldest held message (or of the next one, when nothing is held).
        self._first = 1
        self._bytes = 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.drop_oldest = drop_oldest
        #: How many messages were evicted before every client acknowledged them.
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return self._bytes

    @property
    def first_seq(self) -> int:
        """Seq of the oldest message held; ``last_seq + 1`` when nothing is held."""
        return self._first

    @property
    def last_seq(self) -> int:
        """Seq of the newest message ever appended (0 before the first)."""
        return self._first + len(self._frames) - 1

    def restore(self, first_seq: int, frames: tuple[str, ...]) -> None:
        """Hold ``frames`` as messages ``first_seq``, ``first_seq + 1``, ... (an empty
        buffer only: for a session brought back from a snapshot)."""
        if self._frames:
            raise RuntimeError("restore() needs an empty replay buffer")
        self._first = first_seq
        for frame in frames:
            self._frames.append(frame)
            self._bytes += len(frame)

    def has_room(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes fits without evicting anything."""
        return len(self._frames) < self.max_messages and self._bytes + size <= self.max_bytes

    def append(self, frame: str) -> int:
        """Hold ``frame`` as the next message and return its seq.

        Evicts the oldest messages if the policy is ``drop_oldest``; otherwise the caller
        must have waited for :meth:`has_room`.
        """
        size = len(frame)
        if not self.has_room(size):
            if not self.drop_oldest:
                raise RuntimeError("replay buffer is full; wait for has_room() first")
            while self._frames and not self.has_room(size):
                self._evict()
                self.dropped += 1
        self._frames.append(frame)
        self._bytes += size
        return self.last_seq

    def trim(self, upto: int) -> int:
        """Drop every message with ``seq <= upto``; return how many were dropped."""
        count = 0
        while self._frames and self._first <= upto:
            self._evict()
            count += 1
        return count

    def _evict(self) -> None:
        self._bytes -= len(self._frames.popleft())
        self._first += 1

    def holds_after(self, ack: int) -> bool:
        """Whether every message above ``ack`` is still held (a resume from ``ack`` is
        gapless)."""
        return ack >= self._first - 1

    def frame(self, seq: int) -> str:
        """The held frame with this seq."""
        return self._frames[seq - self._first]

    def frames_after(self, ack: int) -> Iterator[tuple[int, str]]:
        """Every held ``(seq, frame)`` above ``ack``, oldest first."""
        start = max(ack + 1, self._first)
        for index in range(start - self._first, len(self._frames)):
            yield self._first + index, self._frames[index]


def ack_is_due(
    *, acked: int, processed: int, ack_every: int, due: float, now: float, last: bool
) -> bool:
    """Whether a side that has acknowledged up to ``acked`` and processed up to
    ``processed`` sends its cumulative ``ack`` now: when there is something new to
    acknowledge and ``ack_every`` messages wait for it, its delay ran out (``due``;
    ``-inf`` once the peer pinged for it), or the connection is about to end (``last``).
    The same rule on both sides of the protocol."""
    unacked = processed - acked
    return unacked > 0 and (unacked >= ack_every or last or due <= now)


@attrs.define(eq=False)
class ClientCursor:
    """What a session knows about one client."""

    id: str
    #: Highest server seq this client acknowledged.
    acked: int = 0
    #: Highest client seq the server accepted (queued for the application).
    received: int = 0
    #: Highest client seq the application has taken; what ``ack`` frames say.
    processed: int = 0
    #: Highest ``processed`` its connection has sent it an ``ack`` for.
    ack_sent: int = 0
    #: When the ack for the messages processed since then is due (inf: none waiting).
    ack_due: float = math.inf
    #: Connections of this client currently attached (0 or 1).
    attached: int = 0
    #: When its last connection detached (``None`` while attached).
    detached_at: float | None = None
    #: Its messages in the session's inbox (not taken yet), and what they count for:
    #: the inbox's bounds hold per client, so one client cannot stop another's reading.
    queued: int = 0
    queued_bytes: int = 0


class Delivery:
    """One session's delivery state: its replay buffer and its clients."""

    __slots__ = ("buffer", "clients", "max_clients")

    def __init__(
        self, *, max_messages: int, max_bytes: int, drop_oldest: bool, max_clients: int
    ) -> None:
        self.buffer = ReplayBuffer(
            max_messages=max_messages, max_bytes=max_bytes, drop_oldest=drop_oldest
        )
        self.clients: dict[str, ClientCursor] = {}
        self.max_clients = max_clients

    # -- attaching ----------------------------------------------------------------------

    def check(self, client_id: str, ack: int | None, *, resume: bool) -> int:
        """Validate a client's hello without changing anything; return the seq it has
        seen (replay starts above it).

        A resuming client (``resume``) must be one this session remembers; it resumes
        from ``ack`` (or from what it last acknowledged). A joining client must be new;
        it starts after the latest message when ``ack`` is omitted, or with everything
        still held when ``ack`` is 0. Raises ``ProtocolError``: ``resume_gap`` when the
        client or its history is gone, ``bad_frame`` for messages that were never sent
        or a join naming a known client, ``session_limit`` when the session has no room
        for another client.
        """
        buffer = self.buffer
        cursor = self.clients.get(client_id)
        if resume and cursor is None:
            raise ProtocolError(
                "resume_gap",
                f"this session no longer remembers client {client_id!r} (it was away "
                "longer than the reconnect window, or max_clients newer clients took its "
                "place): what it sent and was sent since cannot be accounted for; join "
                "the session again as a new client",
                fatal=True,
            )
        if not resume and cursor is not None:
            raise ProtocolError(
                "bad_frame",
                f"client {client_id!r} is already in this session; to continue it, send "
                "hello.resume: true (a join is a new client)",
                fatal=True,
            )
        if cursor is None:
            if len(self.clients) >= self.max_clients and all(
                c.attached for c in self.clients.values()
            ):
                raise ProtocolError(
                    "session_limit",
                    f"session already has {self.max_clients} clients attached (max_clients)",
                    fatal=True,
                )
            return buffer.last_seq if ack is None else buffer.first_seq - 1
        seen = cursor.acked if ack is None else ack
        if seen > buffer.last_seq:
            raise ProtocolError(
                "bad_frame",
                f"hello.ack is {seen} but the server has sent only up to seq {buffer.last_seq}",
                fatal=True,
            )
        if not buffer.holds_after(seen):
            raise ProtocolError(
                "resume_gap",
                f"cannot resume from ack {seen}: messages {seen + 1}..{buffer.first_seq - 1} "
                "are no longer held",
                fatal=True,
            )
        return seen

    def admit(self, client_id: str, ack: int | None, *, resume: bool) -> tuple[ClientCursor, int]:
        """Validate (as :meth:`check`), then find or make the client's cursor; return it
        and the seq it has seen. Resuming from a seq acknowledges everything up to it."""
        seen = self.check(client_id, ack, resume=resume)
        cursor = self.clients.get(client_id)
        if cursor is None:
            if len(self.clients) >= self.max_clients:
                # check() made sure a detached client can make room.
                detached = [c for c in self.clients.values() if not c.attached]
                oldest = min(detached, key=lambda c: c.detached_at or 0.0)
                del self.clients[oldest.id]
            cursor = self.clients[client_id] = ClientCursor(client_id)
        cursor.acked = max(cursor.acked, seen)
        self._trim()
        return cursor, seen

    def attached(self, cursor: ClientCursor) -> None:
        cursor.attached += 1
        cursor.detached_at = None

    def detached(self, cursor: ClientCursor, *, now: float) -> None:
        cursor.attached -= 1
        if not cursor.attached:
            cursor.detached_at = now

    def forget_stale(self, *, now: float, window: float) -> None:
        """Forget clients detached for longer than ``window``; their acks no longer hold
        messages in the buffer."""
        stale = [
            c.id
            for c in self.clients.values()
            if c.detached_at is not None and now - c.detached_at >= window
        ]
        for client_id in stale:
            del self.clients[client_id]
        if stale:
            self._trim()

    # -- client -> server ---------------------------------------------------------------

    def restore_client(
        self, client_id: str, *, acked: int, processed: int, received: int, now: float
    ) -> None:
        """Remember a client of a session brought back from a snapshot, as detached."""
        self.clients[client_id] = ClientCursor(
            client_id, acked=acked, received=received, processed=processed, detached_at=now
        )

    def receive(self, cursor: ClientCursor, seq: int) -> Literal["new", "duplicate"]:
        """Account for client message ``seq``: new (process it) or duplicate (drop it)."""
        if seq <= cursor.received:
            return "duplicate"
        if seq != cursor.received + 1:
            raise ProtocolError(
                "bad_frame",
                f"msg.seq jumped from {cursor.received} to {seq}; seqs must go up by one",
                fatal=True,
            )
        cursor.received = seq
        return "new"

    # -- server -> client ---------------------------------------------------------------

    def acknowledge(self, cursor: ClientCursor, seq: int) -> None:
        """Record a client's cumulative ack and drop what everyone has acknowledged."""
        if seq > self.buffer.last_seq:
            raise ProtocolError(
                "bad_frame",
                f"ack.seq is {seq} but the server has sent only up to seq {self.buffer.last_seq}",
            )
        if seq > cursor.acked:
            cursor.acked = seq
            self._trim()

    def _trim(self) -> None:
        if self.clients:
            self.buffer.trim(min(c.acked for c in self.clients.values()))
