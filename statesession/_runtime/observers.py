"""Observers: what happens to a manager's sessions, told to whoever wants to know.

A manager builds one :class:`Observers` (kept in its
:class:`~statesession._runtime.context.Runtime`), and its sessions, connections and
handshakes tell it about every transition, attach and detach, message in and out,
refusal, resume outcome, cleanup report and passivation. It fans each out, in the order
they were added, to the observers that take it:

1. the store recorder (:class:`StoreRecorder`), when the manager has a store: the event
   log and the session records;
2. the registry's own accounting (sessions in ``error`` leave the admission limits);
3. the application's observers, from :meth:`SessionManager.add_observer
   <statesession.SessionManager.add_observer>`: a :class:`SessionObserver`, or a plain
   ``observer(session, event, source, target)`` callable for transitions. Each call of
   one is guarded: one that raises is logged and the others are still told.

An observer is told synchronously, from the task where the thing happened (a session's
actor, a connection's reader or writer, a handshake): it must not block. Each event is
dispatched only to the observers whose class overrides its method, so an event nobody
takes costs one attribute read and a test of an empty tuple; the text of a message is
built only when some observer wants messages (:attr:`SessionObserver.wants_messages`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from .._core.snapshot import LogEntry, SessionRecord
from .._stores.port import SessionStore

if TYPE_CHECKING:
    from .._core.exceptions import ProtocolError
    from .._core.report import CleanupReport

__all__ = ["Observers", "SessionObserver", "StoreRecorder", "TransitionCallback"]

log = logging.getLogger("statesession")

#: The events of :class:`SessionObserver`, each a method of the same name.
EVENTS = (
    "transition",
    "attached",
    "detached",
    "message",
    "refused",
    "resume",
    "cleanup_report",
    "passivated",
)

#: States a session's record gives the reason for (why it ended, why it was saved).
_REASONED = frozenset({"passivated", "terminated", "error"})


class SessionObserver:
    """Told what happens to a manager's sessions; override the methods you need.

    Every method does nothing by default, and a method left alone is never called. They
    are called synchronously, from the task where the thing happened: an observer must
    not block or await (start a task, or put the event on a memory channel, for slow
    work). ``session`` is the :class:`~statesession.Session`; read it, do not drive it.
    """

    #: Whether :meth:`message` is called: building the text of every message costs, so
    #: it is built only when some observer sets this.
    wants_messages: bool = False

    def transition(self, session: Any, event: str, source: str, target: str) -> None:
        """The session went from ``source`` to ``target`` on ``event``."""

    def attached(self, session: Any, client: str, peer: str, resumed: bool) -> None:
        """A connection from ``peer`` was attached as ``client`` (``resumed``: the
        client came back with ``hello.resume``)."""

    def detached(self, session: Any, client: str, peer: str) -> None:
        """The connection attached as ``client`` from ``peer`` ended."""

    def message(self, session: Any, direction: Literal["in", "out"], text: str) -> None:
        """A message was taken in from a client (``"in"``: ``text`` is JSON with its
        ``client``, ``seq`` and ``data``) or sent (``"out"``: ``text`` is its msg
        frame). Called only when :attr:`wants_messages` is true."""

    def refused(self, peer: str, error: ProtocolError) -> None:
        """A connection from ``peer`` was refused before its welcome, with ``error``."""

    def resume(self, session_id: str, client: str | None, outcome: str) -> None:
        """A hello named session ``session_id``: ``outcome`` is ``"resumed"`` (a client
        came back), ``"joined"`` (a new client joined it), or the error code it was
        refused with (``resume_gap``, ``bad_token``, ``unknown_session``,
        ``terminated``, ``unavailable``, ...)."""

    def cleanup_report(self, session: Any, report: CleanupReport) -> None:
        """A termination or a passivation finished its cleanup, with this report."""

    def passivated(self, session: Any, reason: str) -> None:
        """The session was saved to the store and left memory (``reason``: why)."""


class TransitionCallback(SessionObserver):
    """A plain ``observer(session, event, source, target)`` callable, as an observer."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[Any, str, str, str], object]) -> None:
        self.callback = callback

    def transition(self, session: Any, event: str, source: str, target: str) -> None:
        self.callback(session, event, source, target)

    def __repr__(self) -> str:
        return repr(self.callback)


class StoreRecorder(SessionObserver):
    """Records transitions (and messages, if the store logs them) in the event log, and
    keeps each session's record; a terminated session's snapshot is forgotten."""

    __slots__ = ("store", "wants_messages")

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.wants_messages = store.log_messages

    def transition(self, session: Any, event: str, source: str, target: str) -> None:
        store = self.store
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

    def message(self, session: Any, direction: Literal["in", "out"], text: str) -> None:
        self.store.log(
            LogEntry(
                session=session.id, time=time.time(), kind="message", event=direction, detail=text
            )
        )


def _guarded(observer: SessionObserver, method: Callable[..., None]) -> Callable[..., None]:
    def call(*args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:
            log.error("lifecycle observer %r raised: %s", observer, exc, exc_info=exc)

    return call


class Observers:
    """The observers of one manager, and the dispatch of each event to those that take
    it (a tuple of bound methods per event, rebuilt when one is added)."""

    __slots__ = ("_observers", *EVENTS)

    def __init__(self) -> None:
        self._observers: list[tuple[SessionObserver, bool]] = []
        for event in EVENTS:
            setattr(self, event, ())

    def add(self, observer: SessionObserver, *, guard: bool = True) -> None:
        """Tell ``observer`` from now on, after those added before it; ``guard``: log
        what it raises instead of letting it through (the application's observers)."""
        if not isinstance(observer, SessionObserver):
            raise TypeError(
                f"an observer is a SessionObserver or a callable, got {type(observer).__name__}"
            )
        self._observers.append((observer, guard))
        for event in EVENTS:
            handlers = []
            for each, guarded in self._observers:
                if getattr(type(each), event) is getattr(SessionObserver, event):
                    continue  # not overridden: never called
                if event == "message" and not each.wants_messages:
                    continue
                method = getattr(each, event)
                handlers.append(_guarded(each, method) if guarded else method)
            setattr(self, event, tuple(handlers))

    def __len__(self) -> int:
        return len(self._observers)

    # The per-event tuples (set in __init__ and add); ``message`` stays empty unless
    # some observer wants messages, and a sender tests it before building the text.
    if TYPE_CHECKING:
        transition: tuple[Callable[[Any, str, str, str], None], ...]
        attached: tuple[Callable[[Any, str, str, bool], None], ...]
        detached: tuple[Callable[[Any, str, str], None], ...]
        message: tuple[Callable[[Any, str, str], None], ...]
        refused: tuple[Callable[[str, ProtocolError], None], ...]
        resume: tuple[Callable[[str, str | None, str], None], ...]
        cleanup_report: tuple[Callable[[Any, CleanupReport], None], ...]
        passivated: tuple[Callable[[Any, str], None], ...]
