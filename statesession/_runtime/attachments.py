"""Connections attaching to and leaving a session, and the session's side of the message
path: taking client messages into the inbox (bounded per client) and their acks."""

from __future__ import annotations

from typing import Any

import trio

from .._core.codec import encode_data, encode_frame
from .._core.delivery import ClientCursor
from .._core.exceptions import ProtocolError, SessionClosedError
from .._core.frames import ClosedFrame
from .heartbeat import StateTimers
from .ports import ConnectionPort
from .state import _DEFERRED, Message, _being_saved, _Reply, log


class Attachments(StateTimers):
    """A layer of :class:`Session`: its connections and inbox."""

    __slots__ = ()

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

    async def attach(self, connection: ConnectionPort, ack: int | None) -> None:
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
                self.detach(connection)
            raise
        if isinstance(reply.error, SessionClosedError):
            # The session finished before it could take this connection.
            raise ProtocolError(
                "terminated", f"session has terminated ({reply.error.reason})", fatal=True
            )
        if reply.error is not None:
            raise reply.error

    def _admit(self, connection: ConnectionPort, ack: int | None) -> None:
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

    def _register(self, connection: ConnectionPort, ack: int | None) -> None:
        if connection.aborted:
            raise ProtocolError("terminated", "connection was aborted", fatal=True)
        cursor, seen = self._delivery.admit(connection.client, ack, resume=connection.resumed)
        if self._runtime.config.attach_policy == "takeover":
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
        for tell in self._runtime.observers.attached:
            tell(self, connection.client, connection.peer, connection.resumed)

    def _fail_joins(self, error: ProtocolError) -> None:
        for _, _, reply in self._joining or ():
            reply.error = error
            reply.done.set()
        self._joining = None

    def detach(self, connection: ConnectionPort) -> None:
        """A connection ended; runs in the connection's task, synchronously."""
        if connection not in self._connections:
            return
        self._connections.remove(connection)
        if connection.cursor is not None:
            self._delivery.detached(connection.cursor, now=trio.current_time())
        self._wake_changed()
        log.info("session %s: %s detached", self.id, connection.peer)
        for tell in self._runtime.observers.detached:
            tell(self, connection.client, connection.peer)
        self._post(lambda: self._step("detach", connections=len(self._connections)))

    def inbox_full(self, cursor: ClientCursor, size: int) -> bool:
        """Whether a message counting ``size`` would overfill the client's share of the
        inbox (with nothing of it queued, it takes one message, however large)."""
        if not cursor.queued:
            return False
        config = self._runtime.config
        return (
            cursor.queued >= config.inbox_messages
            or cursor.queued_bytes + size > config.inbox_bytes
        )

    async def wait_inbox_room(self, cursor: ClientCursor, size: int) -> None:
        """Wait until the client's share of the inbox has room for a message counting
        ``size`` (or the session is closing)."""
        while self.inbox_full(cursor, size) and not self._closing:
            self._inbox_waiters += 1
            try:
                await self._wait_changed()
            finally:
                self._inbox_waiters -= 1

    async def deliver(self, connection: ConnectionPort, seq: int, data: Any, size: int) -> bool:
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
        await self.wait_inbox_room(cursor, size)
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
        observers = self._runtime.observers.message
        if observers:
            text = encode_data({"client": connection.client, "seq": seq, "data": data})
            for tell in observers:
                tell(self, "in", text)
        return True

    def acknowledged(self, connection: ConnectionPort, seq: int) -> None:
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
