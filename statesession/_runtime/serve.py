"""Serving one connection: the handshake (create, join or resume a session, or refuse
with a precise error), then the connection's run, then its close.

A layer of :class:`~statesession.SessionManager` (one object, several modules)."""

from __future__ import annotations

import secrets
from contextlib import suppress
from inspect import isawaitable
from typing import Any

import trio

from .._core.channel import Channel
from .._core.codec import error_text
from .._core.decode import decode_client_frame
from .._core.exceptions import (
    ChannelError,
    FrameTooLargeError,
    ProtocolError,
)
from .._core.frames import HelloFrame
from .._core.util import new_id, plural
from .connection import Connection
from .registry import Registry, _hash_token, log
from .session import Session

__all__ = ["ChannelServer"]

#: Most seconds a connection refused before its welcome is given for its error frame and
#: its close (or send_timeout, if shorter).
REFUSAL_LINGER = 2.0


class ChannelServer(Registry):
    """Serves connections: handshakes, refusals, and each connection's run."""

    async def serve_channel(self, channel: Channel) -> None:
        """Serve one connection until it ends; close the channel before returning.

        Never raises for anything the peer does: bad input is answered with an ``error``
        frame and, if fatal, the end of this connection only.
        """
        connection: Connection | None = None
        close_error: str | None = None
        close_by = trio.current_time() + self.config.send_timeout
        if self._idle.is_set():
            self._idle = trio.Event()
        self._serving += 1
        try:
            with trio.CancelScope() as handshake:
                self._handshakes.add(handshake)
                address: str | None = None
                try:
                    address = self._count_handshake(channel.peer_address)
                    connection = await self._handshake(channel)
                except ProtocolError as exc:
                    self._refused += 1
                    left_out = self._refusal_log.allow(trio.current_time())
                    if left_out is not None:
                        log.info(
                            "refused %s: %s%s",
                            channel.peer,
                            exc,
                            f" ({left_out} more refusals were left out of the log)"
                            if left_out
                            else "",
                        )
                    for tell in self._observers.refused:
                        tell(channel.peer, exc)
                    close_error = exc.code
                    close_by = trio.current_time() + self._refusal_linger()
                    await self._send_last_words(channel, exc, close_by)
                    return
                except ChannelError:
                    return
                finally:
                    self._handshakes.discard(handshake)
                    if address is not None:
                        self._uncount_handshake(address)
            shut_out = handshake.cancelled_caught
            del handshake  # (not held while the connection runs)
            if shut_out:
                if self._closing:
                    refusal = ProtocolError(
                        "server_shutdown", "server is shutting down", fatal=True
                    )
                    for tell in self._observers.refused:
                        tell(channel.peer, refusal)
                    close_error = "server_shutdown"
                    close_by = trio.current_time() + self._refusal_linger()
                    await self._send_last_words(channel, refusal, close_by)
                return
            assert connection is not None
            try:
                await connection.run()
            finally:
                close_error = connection.close_error
                close_by = connection.close_deadline()
                connection.session.detach(connection)
        except Exception as exc:
            # Nothing a peer sends should get here; if a bug does, it ends this connection
            # only, and the transport serving the others never sees it.
            log.error("internal error serving %s: %s", channel.peer, exc, exc_info=exc)
        finally:
            try:
                await self._close_channel(channel, close_error, close_by)
            finally:
                self._serving -= 1
                if not self._serving:
                    self._idle.set()

    async def _handshake(self, channel: Channel) -> Connection:
        config = self.config
        with trio.move_on_after(config.handshake_timeout) as waited:
            try:
                text = await channel.receive()
            except FrameTooLargeError as exc:
                raise ProtocolError("frame_too_large", str(exc), fatal=True) from None
        if waited.cancelled_caught:
            raise ProtocolError(
                "handshake_timeout",
                f"no hello within handshake_timeout ({config.handshake_timeout:g} s)",
                fatal=True,
            )
        try:
            hello = decode_client_frame(text, max_frame=config.max_frame)
        except ProtocolError as exc:
            raise ProtocolError(exc.code, exc.message, fatal=True) from None
        if not isinstance(hello, HelloFrame):
            raise ProtocolError(
                "bad_frame",
                f"the first frame must be hello, got {type(hello).__name__[:-5].lower()}",
                fatal=True,
            )
        if self._closing:
            raise ProtocolError("server_shutdown", "server is shutting down", fatal=True)
        if hello.session is None:
            principal = await self._principal(hello.auth)
            return await self._create(channel, hello, principal)
        try:
            principal = await self._principal(hello.auth)
            connection = await self._resume(channel, hello, principal)
        except ProtocolError as exc:
            self._tell_resume(hello, exc.code)
            raise
        self._tell_resume(hello, "resumed" if hello.resume else "joined")
        return connection

    def _tell_resume(self, hello: HelloFrame, outcome: str) -> None:
        assert hello.session is not None
        for tell in self._observers.resume:
            tell(hello.session, hello.client, outcome)

    async def _principal(self, auth: Any) -> str | None:
        if self._authenticate is None:
            return None
        try:
            principal = self._authenticate(auth)
            if isawaitable(principal):
                principal = await principal
        except Exception as exc:
            raise ProtocolError("bad_token", f"authentication failed: {exc}", fatal=True) from None
        if not isinstance(principal, str):
            raise ProtocolError("bad_token", "authentication failed", fatal=True)
        return principal

    async def _create(
        self, channel: Channel, hello: HelloFrame, principal: str | None
    ) -> Connection:
        if self._closing:  # checked again: authenticating may have taken a while
            raise ProtocolError("server_shutdown", "server is shutting down", fatal=True)
        if self._authenticate is None:
            self._admit_peer(channel.peer_address)
        self._admit(principal)
        token = secrets.token_urlsafe(24)
        session = Session(
            id=new_id(12),
            principal=principal,
            runtime=self._runtime,
            token_hash=_hash_token(token),
        )
        self._register(session)
        self._created += 1
        connection = Connection(
            channel,
            session,
            runtime=self._runtime,
            client=hello.client or new_id(9),
            token=token,
            resumed=False,
        )
        try:
            await session.attach(connection, hello.ack)
        except BaseException:
            # Nobody else holds this session's token: it would wait out its window alone.
            session.terminate("handshake_failed")
            raise
        return connection

    async def _resume(
        self, channel: Channel, hello: HelloFrame, principal: str | None
    ) -> Connection:
        assert hello.session is not None
        assert hello.token is not None
        client = hello.client or new_id(9)
        for attempt in range(3):
            session = await self._find(hello.session, hello.token, principal)
            connection = Connection(
                channel,
                session,
                runtime=self._runtime,
                client=client,
                token=hello.token,
                resumed=hello.resume,
            )
            try:
                await session.attach(connection, hello.ack)
            except ProtocolError as exc:
                # It began to be saved after it was found: wait for that and bring it
                # back (a session being saved is alive, not gone).
                if exc.code == "unavailable" and session.state == "passivated" and attempt < 2:
                    continue
                raise
            return connection
        raise AssertionError("unreachable")

    def _count_handshake(self, address: str | None) -> str | None:
        """Count a connection waiting for its welcome (already in ``_handshakes``), or
        refuse it ``unavailable`` past ``max_handshakes`` in all or ``peer_handshakes``
        from its peer address: each may hold up to ``max_frame`` of a hello. Returns the
        address counted, for :meth:`_uncount_handshake`."""
        config = self.config
        if len(self._handshakes) > config.max_handshakes:
            raise ProtocolError(
                "unavailable",
                f"the server has {plural(config.max_handshakes, 'connection')} waiting for "
                "their welcome (max_handshakes); try again later",
                fatal=True,
            )
        if address is None:
            return None
        waiting = self._peer_handshakes.get(address, 0)
        if waiting >= config.peer_handshakes:
            raise ProtocolError(
                "unavailable",
                f"{address} has {plural(waiting, 'connection')} waiting for their welcome "
                "(peer_handshakes); try again once they are answered",
                fatal=True,
            )
        self._peer_handshakes[address] = waiting + 1
        return address

    def _uncount_handshake(self, address: str) -> None:
        waiting = self._peer_handshakes[address] - 1
        if waiting:
            self._peer_handshakes[address] = waiting
        else:
            del self._peer_handshakes[address]

    def _refusal_linger(self) -> float:
        """How long a connection refused before its welcome gets for its error and its
        close together: a peer that has not spoken the protocol is not waited for."""
        return min(self.config.send_timeout, REFUSAL_LINGER)

    async def _send_last_words(
        self, channel: Channel, error: ProtocolError, close_by: float
    ) -> None:
        with trio.move_on_at(close_by), suppress(ChannelError):
            await channel.send(error_text(error))

    async def _close_channel(self, channel: Channel, error: str | None, close_by: float) -> None:
        """Close ``channel`` by ``close_by`` (already past: at once, forcefully -- a
        transport's ``aclose`` closes even when cancelled)."""
        with trio.CancelScope(shield=True, deadline=close_by), suppress(ChannelError):
            await channel.aclose(error)
