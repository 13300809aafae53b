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

from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import trio

from .._core.config import SessionConfig
from .._core.exceptions import (
    StoreError,
)
from .._core.util import collapse_single_exception_group
from .._stores.port import SessionStore
from .observers import SessionObserver, TransitionCallback
from .registry import App, Authenticate, Observer, SessionHook, _ReadOnly, log
from .serve import ChannelServer
from .session import Session

__all__ = ["ManagerStatistics", "SessionManager", "open_manager"]


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


class SessionManager(ChannelServer):
    """Owns sessions; made by :func:`open_manager`, not directly."""

    @property
    def sessions(self) -> Mapping[str, Session]:
        """The live sessions by id (a read-only view)."""
        return _ReadOnly(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    def add_observer(self, observer: SessionObserver | Observer) -> None:
        """Tell ``observer`` what happens to the sessions from now on.

        A :class:`~statesession.SessionObserver` is told each event whose method it
        overrides (transitions, attaches and detaches, messages if it wants them,
        refusals, resume outcomes, cleanup reports, passivations); a plain callable is
        called as ``observer(session, event, source, target)`` after every transition
        that changes a session's state. Either is called synchronously where the thing
        happened, so it must be quick and must not block; what it raises is logged and
        the session goes on."""
        if not isinstance(observer, SessionObserver):
            if not callable(observer):
                raise TypeError(
                    "an observer is a SessionObserver or a callable "
                    f"observer(session, event, source, target), got {type(observer).__name__}"
                )
            observer = TransitionCallback(observer)
        self._observers.add(observer)

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
        session.request_passivation(reason)
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
            connections=sum(s.connection_count for s in self._sessions.values()),
            handshakes=len(self._handshakes),
            created=self._created,
            refused=self._refused,
            closing=self._closing,
        )

    async def _shutdown(self) -> None:
        self._closing = True
        for scope in list(self._handshakes):
            scope.cancel()
        # Each session's actor decides, from the state it is really in (and one made
        # from here on is told as it is registered).
        for session in list(self._sessions.values()):
            session.request_shutdown()
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
