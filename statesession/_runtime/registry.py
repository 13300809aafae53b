"""The registry: the live sessions of a manager, their tombstones, rehydration from the
store, and admission (limits per server, per principal and per peer address).

A layer of :class:`~statesession.SessionManager` (one object, several modules);  it builds
the manager's observers (the store recorder first, then its own accounting). It makes the
:class:`~statesession._runtime.context.Runtime` its sessions and connections are handed
(instead of the manager), and is their registry in it: the members they call
(:class:`~statesession._runtime.ports.RegistryPort`) have public, undocumented names."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import trio

from .._core.config import SessionConfig
from .._core.exceptions import (
    CorruptSnapshotError,
    ProtocolError,
    StoreError,
    StoreVersionError,
)
from .._core.util import LogLimit, plural
from .._lifecycle.interpreters import Lifecycle
from .._stores.port import SessionStore
from .context import Runtime
from .observers import Observers, StoreRecorder, TransitionCallback
from .ports import SessionView
from .session import Session, restore_session
from .timers import Timers

__all__ = ["Registry"]

log = logging.getLogger("statesession")

#: Most peer addresses whose new-session rate is remembered (the least recently seen is
#: forgotten first: it starts again with a full burst).
MAX_PEERS = 10_000

App = Callable[[Session], Awaitable[object]]

Authenticate = Callable[[Any], "str | Awaitable[str]"]

SessionHook = Callable[[Session], Awaitable[object]]

Observer = Callable[[Session, str, str, str], object]


def _hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


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


class Registry:
    """The live sessions, their admission and their coming back (a layer of the manager)."""

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
        self._nursery = nursery
        self._authenticate = authenticate
        #: Every session's state timer, fired by one task (see ``timers.py``).
        self._timers = Timers()
        self._timers_scope = trio.CancelScope()
        self._sessions: dict[str, Session] = {}
        self._per_principal: Counter[str] = Counter()
        self._tombstones: OrderedDict[str, str] = OrderedDict()
        self._handshakes: set[trio.CancelScope] = set()
        self._peer_handshakes: dict[str, int] = {}  # peer address -> handshakes waiting
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
        #: Log lines about refusals, and about a full store, are rate-limited (and those
        #: about bad frames: see the runtime's ``bad_frame_log``).
        self._refusal_log = LogLimit(rate=1.0, burst=10)
        self._store_full_log = LogLimit(rate=0.1, burst=3)
        #: Who is told what happens: the store's recorder, this registry's accounting,
        #: then the application's observers (see ``observers.py``).
        self._observers = Observers()
        if store is not None:
            self._observers.add(StoreRecorder(store), guard=False)
        self._observers.add(TransitionCallback(self._account), guard=False)
        #: What the sessions and connections run in (made once; they hold it, not this).
        self._runtime = Runtime(
            config=config,
            lifecycle=Lifecycle(),
            timers=self._timers,
            nursery=nursery,
            store=store,
            app=app,
            setup=setup,
            health_check=health_check,
            bad_frame_log=LogLimit(rate=1.0, burst=10),
            observers=self._observers,
        )
        self._runtime.registry = self

    # -- what its sessions call (RegistryPort) --------------------------------------------

    @property
    def closing(self) -> bool:
        """The manager is shutting down: sessions are saved or terminated, none is made."""
        return self._closing

    def count_saving(self, delta: int) -> None:
        """A session began (``+1``) or stopped (``-1``) being saved."""
        self._saving += delta

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
                self._check_token(session_id, session.token_hash, token)
                await session.wait_saved()
                continue
            if session is None:
                loading = self._rehydrating.get(session_id)
                if loading is not None:
                    await loading.wait()
                    continue
                session = await self._rehydrate(session_id, token, principal)
            self._check_token(session_id, session.token_hash, token)
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
            session = restore_session(self._runtime, snapshot)
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

    def store_has_room(self, session_id: str) -> bool:
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
        self._nursery.start_soon(session.run_actor, name=f"{session.id}:actor")
        if self._closing:
            session.request_shutdown()

    def _count(self, principal: str | None, delta: int) -> None:
        if principal is not None:
            self._per_principal[principal] += delta
            if self._per_principal[principal] <= 0:
                del self._per_principal[principal]

    def forget(self, session: SessionView) -> None:
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

    def _account(self, session: SessionView, event: str, source: str, target: str) -> None:
        """A flagged session keeps its place in the registry (for inspection and a retry)
        but not in the admission limits."""
        if "error" in (source, target):
            change = 1 if target == "error" else -1
            self._in_error += change
            self._count(session.principal, -change)
