"""The session manager: admits connections, owns every session, shuts them all down.

Theory of operation
-------------------
:func:`open_manager` opens a nursery that owns every session's actor. A transport hands
each new connection to :meth:`SessionManager.serve_channel`, which runs the handshake in
the caller's task: read ``hello`` (within ``handshake_timeout``), authenticate, then either
create a session (within the admission limits) or find the one named and check its token,
and attach. Anything wrong is answered with a fatal ``error`` frame on that connection
only. After the welcome, the same task runs the connection until it ends.

Each session runs inside its own error boundary: whatever its application or its tasks do,
the exception ends that session and is logged; it never reaches the manager's nursery.

Leaving ``open_manager`` -- normally, by an exception, or by cancellation -- refuses new
connections with ``server_shutdown``, terminates every session (reason
``server_shutdown``) and returns once all of them have run their cleanup cascade and every
connection has said goodbye (bounded by ``send_timeout``), so that the transports can be
stopped right after. Housekeeping that is tied to a session's state (reconnect windows,
heartbeats, dead-peer detection) runs as that state's work inside the session, under this
nursery.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, suppress
from inspect import isawaitable
from typing import Any

import attrs
import trio

from .._core.channel import Channel
from .._core.codec import error_text
from .._core.config import SessionConfig
from .._core.decode import decode_client_frame
from .._core.exceptions import (
    ChannelError,
    CorruptSnapshotError,
    FrameTooLargeError,
    ProtocolError,
    StoreError,
    StoreVersionError,
)
from .._core.frames import HelloFrame
from .._core.snapshot import LogEntry, SessionRecord
from .._core.util import LogLimit, collapse_single_exception_group, new_id, plural
from .._lifecycle.compiled import Lifecycle
from .._stores.port import SessionStore
from .connection import Connection
from .session import Session
from .timers import Timers

__all__ = ["ManagerStatistics", "SessionManager", "open_manager"]

#: States a session's record gives the reason for (why it ended, why it was saved).
_REASONED = frozenset({"passivated", "terminated", "error"})

log = logging.getLogger("statesession")

#: Most peer addresses whose new-session rate is remembered (the least recently seen is
#: forgotten first: it starts again with a full burst).
MAX_PEERS = 10_000

#: Most seconds a connection refused before its welcome is given for its error frame and
#: its close (or send_timeout, if shorter).
REFUSAL_LINGER = 2.0

App = Callable[[Session], Awaitable[object]]
Authenticate = Callable[[Any], "str | Awaitable[str]"]
SessionHook = Callable[[Session], Awaitable[object]]
Observer = Callable[[Session, str, str, str], object]


def _hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@attrs.frozen(kw_only=True)
class ManagerStatistics:
    """A snapshot of a manager's counters, from :meth:`SessionManager.statistics`."""

    sessions: int
    by_state: Mapping[str, int]
    connections: int
    handshakes: int
    created: int
    refused: int
    closing: bool


class SessionManager:
    """Owns sessions; made by :func:`open_manager`, not directly."""

    def __init__(
        self,
        app: App,
        *,
        config: SessionConfig,
        nursery: trio.Nursery,
        authenticate: Authenticate | None,
        setup: SessionHook | None,
        health_check: SessionHook | None,
        store: SessionStore | None,
    ) -> None:
        self.config = config
        self._store = store
        #: Sessions being brought back from the store, by id.
        self._rehydrating: dict[str, trio.Event] = {}
        self._app = app
        self._nursery = nursery
        self._authenticate = authenticate
        self._setup = setup
        self._health_check = health_check
        self._lifecycle = Lifecycle()
        #: Every session's state timer, fired by one task (see ``timers.py``).
        self._timers = Timers()
        self._timers_scope = trio.CancelScope()
        self._sessions: dict[str, Session] = {}
        self._per_principal: Counter[str] = Counter()
        self._tombstones: OrderedDict[str, str] = OrderedDict()
        self._handshakes: set[trio.CancelScope] = set()
        self._peer_handshakes: dict[str, int] = {}  # peer address -> handshakes waiting
        self._observers: list[Observer] = []
        self._closing = False
        #: Sessions flagged in `error`: kept for inspection, not counted against limits.
        self._in_error = 0
        self._created = 0
        self._refused = 0
        self._all_gone = trio.Event()
        self._all_gone.set()
        #: Connections being served, and an event set when there are none.
        self._serving = 0
        self._idle = trio.Event()
        self._idle.set()
        #: Sessions being saved (they count against max_stored_sessions already).
        self._saving = 0
        #: Per peer address: new anonymous sessions it may still create, and when.
        self._peer_budgets: dict[str, tuple[float, float]] = {}
        #: Log lines about bad frames, and about a full store, are rate-limited.
        self._bad_frame_log = LogLimit(rate=1.0, burst=10)
        self._refusal_log = LogLimit(rate=1.0, burst=10)
        self._store_full_log = LogLimit(rate=0.1, burst=3)

    # -- public -----------------------------------------------------------------------------

    @property
    def sessions(self) -> Mapping[str, Session]:
        """The live sessions by id (a read-only view)."""
        return _ReadOnly(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(session, event, source, target)`` after every transition that
        changes a session's state. It runs inside the lifecycle step: it must be quick and
        must not block or raise."""
        self._observers.append(observer)

    def terminate(self, session_id: str, reason: str = "admin") -> bool:
        """Ask a session to terminate; return whether it was found."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        session.terminate(reason)
        return True

    def passivate(self, session_id: str, reason: str = "admin") -> bool:
        """Ask a live session to passivate (save itself to the store and leave memory);
        return whether it was found. A busy session stays (see ``Session.busy``); without
        a store nothing happens."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        session._post(
            lambda: session._step(
                "passivate",
                store=self._store_has_room(session.id),
                busy=session._busy,
                reason=reason,
            )
        )
        return True

    @property
    def store(self) -> SessionStore | None:
        """The store passivated sessions go to, if any."""
        return self._store

    def statistics(self) -> ManagerStatistics:
        by_state = Counter(s.state or "new" for s in self._sessions.values())
        return ManagerStatistics(
            sessions=len(self._sessions),
            by_state=dict(by_state),
            connections=sum(len(s._connections) for s in self._sessions.values()),
            handshakes=len(self._handshakes),
            created=self._created,
            refused=self._refused,
            closing=self._closing,
        )

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
                    close_error = "server_shutdown"
                    close_by = trio.current_time() + self._refusal_linger()
                    await self._send_last_words(
                        channel,
                        ProtocolError("server_shutdown", "server is shutting down", fatal=True),
                        close_by,
                    )
                return
            assert connection is not None
            try:
                await connection.run()
            finally:
                close_error = connection.close_error
                close_by = connection.close_deadline()
                connection.session._detach(connection)
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

    # -- the handshake ---------------------------------------------------------------------

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
        principal = await self._principal(hello.auth)
        if hello.session is None:
            return await self._create(channel, hello, principal)
        return await self._resume(channel, hello, principal)

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
            manager=self,
            token_hash=_hash_token(token),
        )
        self._register(session)
        self._created += 1
        connection = Connection(
            channel,
            session,
            client=hello.client or new_id(9),
            token=token,
            resumed=False,
        )
        try:
            await session._attach(connection, hello.ack)
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
                channel, session, client=client, token=hello.token, resumed=hello.resume
            )
            try:
                await session._attach(connection, hello.ack)
            except ProtocolError as exc:
                # It began to be saved after it was found: wait for that and bring it
                # back (a session being saved is alive, not gone).
                if exc.code == "unavailable" and session.state == "passivated" and attempt < 2:
                    continue
                raise
            return connection
        raise AssertionError("unreachable")

    async def _find(self, session_id: str, token: str, principal: str | None) -> Session:
        """The live session a resuming client names -- brought back from the store if it
        was passivated -- once its token (and principal) check out."""
        while True:
            if self._closing:  # checked again: authenticating or loading takes a while
                raise ProtocolError("server_shutdown", "server is shutting down", fatal=True)
            session = self._sessions.get(session_id)
            if session is not None and session.state == "passivated" and session.closing:
                # Being saved: once it is, it is in the store; if the save fails, it
                # ends (and the attach says so). Only a caller with the right token
                # waits for either.
                self._check_token(session_id, session._token_hash, token)
                await session._wait_saved()
                continue
            if session is None:
                loading = self._rehydrating.get(session_id)
                if loading is not None:
                    await loading.wait()
                    continue
                session = await self._rehydrate(session_id, token, principal)
            self._check_token(session_id, session._token_hash, token)
            if self._authenticate is not None and principal != session.principal:
                raise ProtocolError(
                    "bad_token", "this session belongs to another principal", fatal=True
                )
            return session

    def _check_token(self, session_id: str, token_hash: bytes, token: str) -> None:
        if not hmac.compare_digest(token_hash, _hash_token(token)):
            raise ProtocolError("bad_token", "wrong token for this session", fatal=True)

    async def _rehydrate(self, session_id: str, token: str, principal: str | None) -> Session:
        """Bring a passivated session back from the store, or explain why it cannot be."""
        reason = self._tombstones.get(session_id)
        if reason is not None:
            raise ProtocolError(
                "terminated", f"session {session_id} has terminated ({reason})", fatal=True
            )
        store = self._store
        if store is None:
            raise ProtocolError(
                "unknown_session", f"no session {session_id!r} on this server", fatal=True
            )
        done = self._rehydrating[session_id] = trio.Event()
        try:
            try:
                snapshot = await store.load(session_id)
            except (CorruptSnapshotError, StoreVersionError) as exc:
                log.error("session %s cannot be restored: %s", session_id, exc)
                raise ProtocolError(
                    "terminated", f"session {session_id} cannot be restored: {exc}", fatal=True
                ) from None
            except StoreError as exc:
                log.warning("session %s cannot be loaded right now: %s", session_id, exc)
                raise ProtocolError(
                    "unavailable",
                    f"session {session_id} cannot be loaded right now ({exc}); try again",
                    fatal=True,
                ) from None
            if snapshot is None:
                raise await self._gone_for_good(session_id)
            self._check_token(session_id, snapshot.token_hash, token)
            if self._authenticate is not None and principal != snapshot.principal:
                raise ProtocolError(
                    "bad_token", "this session belongs to another principal", fatal=True
                )
            if self._closing:
                raise ProtocolError("server_shutdown", "server is shutting down", fatal=True)
            self._admit(snapshot.principal, returning=True)
            session = Session._restore(self, snapshot)
            # (The store keeps its copy until the session is active again: one whose coming
            # back is cut short -- the server stops -- goes back to it unharmed.)
            self._register(session)
            log.info("session %s: brought back from the store", session_id)
            return session
        finally:
            del self._rehydrating[session_id]
            done.set()

    async def _gone_for_good(self, session_id: str) -> ProtocolError:
        store = self._store
        assert store is not None
        try:
            record = await store.record(session_id)
        except StoreError as exc:
            return ProtocolError(
                "unavailable",
                f"session {session_id} cannot be looked up right now ({exc}); try again",
                fatal=True,
            )
        if record is None:
            return ProtocolError(
                "unknown_session", f"no session {session_id!r} on this server", fatal=True
            )
        if record.state in ("terminated", "error"):
            return ProtocolError(
                "terminated",
                f"session {session_id} has terminated ({record.reason or record.state})",
                fatal=True,
            )
        return ProtocolError(
            "terminated",
            f"session {session_id} was {record.state} when its server stopped without "
            "saving it (a crash); its state is lost",
            fatal=True,
        )

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

    def _admit_peer(self, address: str | None) -> None:
        """Refuse an anonymous new session from a peer address over its rate (a token
        bucket: ``peer_session_burst`` at once, ``peer_session_rate`` a second)."""
        if address is None:
            return
        config = self.config
        rate, burst = config.peer_session_rate, config.peer_session_burst
        now = trio.current_time()
        budgets = self._peer_budgets
        tokens, at = budgets.pop(address, (float(burst), now))
        tokens = min(float(burst), tokens + max(0.0, now - at) * rate)
        if tokens < 1:
            budgets[address] = (tokens, now)
            raise ProtocolError(
                "session_limit",
                f"{address} creates new sessions faster than this server takes them "
                f"({burst} at once, then {rate:g} a second: peer_session_burst, "
                f"peer_session_rate); try again in {(1 - tokens) / rate:.1f} s",
                fatal=True,
            )
        budgets[address] = (tokens - 1, now)  # (re-inserted: the most recent is last)
        if len(budgets) > MAX_PEERS:
            del budgets[next(iter(budgets))]

    def _store_has_room(self, session_id: str) -> bool:
        """Whether a session may be saved: there is a store, and it holds fewer than
        ``max_stored_sessions`` (a store that cannot count has no quota)."""
        store = self._store
        if store is None:
            return False
        try:
            held = store.statistics().snapshots + self._saving
        except NotImplementedError:
            return True
        except Exception as exc:  # a store that cannot count now has no quota now
            if self._store_full_log.allow(trio.current_time()) is not None:
                log.warning("the store cannot say how many sessions it holds: %s", exc)
            return True
        quota = self.config.max_stored_sessions
        if held < quota:
            return True
        if self._store_full_log.allow(trio.current_time()) is not None:
            log.warning(
                "the store holds %s (max_stored_sessions): session %s is not saved",
                plural(quota, "session"),
                session_id,
            )
        return False

    def _admit(self, principal: str | None, *, returning: bool = False) -> None:
        """Refuse a new or ``returning`` (passivated) session over the admission limits.
        A returning session refused for a full server, or for a principal at its limit,
        is told ``unavailable``: it lives on in the store, and the same resume succeeds
        once there is room."""
        config = self.config
        if len(self._sessions) - self._in_error >= config.max_sessions:
            raise ProtocolError(
                "unavailable" if returning else "session_limit",
                f"server holds its limit of {plural(config.max_sessions, 'session')} "
                "(max_sessions); try again later",
                fatal=True,
            )
        if principal is not None and (
            self._per_principal[principal] >= config.max_sessions_per_principal
        ):
            raise ProtocolError(
                "unavailable" if returning else "session_limit",
                f"{principal!r} holds its limit of "
                f"{plural(config.max_sessions_per_principal, 'session')} "
                "(max_sessions_per_principal); close one first"
                + (" (this one is saved, and can be resumed then)" if returning else ""),
                fatal=True,
            )

    def _register(self, session: Session) -> None:
        """Make a session live: in the registry, counted, its actor started."""
        self._sessions[session.id] = session
        self._count(session.principal, 1)
        self._all_gone = trio.Event() if self._all_gone.is_set() else self._all_gone
        self._nursery.start_soon(session._run, name=f"{session.id}:actor")
        if self._closing:
            session._post(session._shut_down)

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

    # -- sessions ---------------------------------------------------------------------------

    def _count(self, principal: str | None, delta: int) -> None:
        if principal is not None:
            self._per_principal[principal] += delta
            if self._per_principal[principal] <= 0:
                del self._per_principal[principal]

    def _forget(self, session: Session) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        if session.state == "error":
            self._in_error -= 1
        else:
            self._count(session.principal, -1)
        if session.state != "passivated":  # a passivated session lives on in the store
            self._tombstones[session.id] = session.reason or "terminated"
            while len(self._tombstones) > max(1000, self.config.max_sessions):
                self._tombstones.popitem(last=False)
        if not self._sessions:
            self._all_gone.set()

    def _log_message(self, session: Session, direction: str, frame: str) -> None:
        store = self._store
        assert store is not None
        store.log(
            LogEntry(
                session=session.id,
                time=time.time(),
                kind="message",
                event=direction,
                detail=frame,
            )
        )

    def _observe(self, session: Session, event: str, source: str, target: str) -> None:
        store = self._store
        if store is not None:
            now = time.time()
            store.log(
                LogEntry(
                    session=session.id,
                    time=now,
                    kind="transition",
                    event=event,
                    source=source,
                    target=target,
                )
            )
            store.note(
                SessionRecord(
                    id=session.id,
                    state=target,
                    principal=session.principal,
                    created=session.created,
                    last_activity=now,
                    reason=session.reason if target in _REASONED else None,
                )
            )
            if target == "terminated":
                store.forget(session.id)
        if "error" in (source, target):
            # A flagged session keeps its place in the registry (for inspection and a
            # retry) but not in the admission limits.
            change = 1 if target == "error" else -1
            self._in_error += change
            self._count(session.principal, -change)
        for observer in self._observers:
            try:
                observer(session, event, source, target)
            except Exception as exc:
                log.error("lifecycle observer %r raised: %s", observer, exc, exc_info=exc)

    async def _shutdown(self) -> None:
        self._closing = True
        for scope in list(self._handshakes):
            scope.cancel()
        # Each session's actor decides, from the state it is really in (and one made
        # from here on is told as it is registered).
        for session in list(self._sessions.values()):
            session._post(session._shut_down)
        await self._all_gone.wait()
        if self._store is not None:
            # The store keeps retrying a failing write; the manager waits for it for
            # cleanup_timeout (its own closing flush waits longer).
            with trio.move_on_after(self.config.cleanup_timeout) as waited:
                try:
                    await self._store.flush()
                except StoreError as exc:
                    log.error("sessions may be lost: %s", exc)
            if waited.cancelled_caught:
                log.error(
                    "the store has not written every saved session after %g s "
                    "(cleanup_timeout); it goes on trying until it is closed",
                    self.config.cleanup_timeout,
                )
        # Let every connection finish its goodbye (a WebSocket close handshake needs the
        # transport's tasks, which the caller may cancel once this returns).
        with trio.move_on_after(self.config.send_timeout):
            await self._idle.wait()
        self._timers_scope.cancel()

    async def _run_timers(self) -> None:
        with self._timers_scope:
            await self._timers.run()


class _ReadOnly(Mapping[str, Session]):
    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Session]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Session:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@asynccontextmanager
async def open_manager(
    app: App,
    *,
    config: SessionConfig | None = None,
    authenticate: Authenticate | None = None,
    setup: SessionHook | None = None,
    health_check: SessionHook | None = None,
    store: SessionStore | None = None,
) -> AsyncIterator[SessionManager]:
    """Open a session manager that runs ``app(session)`` for every session.

    ``authenticate(auth)`` (sync or async) turns ``hello.auth`` into a principal string, or
    raises to refuse; a session's token is then bound to its principal. ``setup(session)``
    allocates what a session needs before it becomes active; ``health_check(session)``
    returns whether it may (both async). With a ``store`` (see :func:`open_store`),
    sessions are passivated to it -- when their reconnect window expires, when idle for
    ``config.passivate_after``, and when the manager shuts down -- and brought back when
    their clients resume. On exit every session is passivated (with a store) or
    terminated, and cleaned up, before this returns.
    """
    with collapse_single_exception_group():
        async with trio.open_nursery() as nursery:
            services: trio.Nursery = await nursery.start(_run_services)
            manager = SessionManager(
                app,
                config=config or SessionConfig(),
                nursery=services,
                authenticate=authenticate,
                setup=setup,
                health_check=health_check,
                store=store,
            )
            services.start_soon(manager._run_timers, name="statesession timers")
            try:
                yield manager
            finally:
                with trio.CancelScope(shield=True):
                    await manager._shutdown()
                # Every session is gone and its connections told; a connection's writer
                # still sending (it is bounded by send_timeout) does not hold the exit.
                services.cancel_scope.cancel()


async def _run_services(task_status: trio.TaskStatus[trio.Nursery]) -> None:
    """The nursery of everything the manager runs -- actors, writers, the timers -- in a
    task of its own, shielded from cancellation coming from outside: cancelling the code
    around ``open_manager`` cancels the code in its block (which is not in here), and the
    shutdown that follows still has writers to say goodbye and timers that fire. Only
    the manager's exit cancels it."""
    async with trio.open_nursery() as services:
        services.cancel_scope.shield = True
        task_status.started(services)
        await trio.sleep_forever()
