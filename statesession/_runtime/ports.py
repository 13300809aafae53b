"""What a session and its connections need of each other, as small Protocols.

A session holds its connections as :class:`ConnectionPort` and a connection holds its
session as :class:`SessionPort`, so neither module imports the other; a session reaches
its registry as :class:`RegistryPort` (through its
:class:`~statesession._runtime.context.Runtime`), which sees it as a
:class:`SessionView`. The members are the ones each side calls, and nothing more; on
:class:`~statesession.Session` and on the manager they are public names, left out of
the documented API.
"""

from __future__ import annotations

from typing import Any, Protocol

from .._core.delivery import ClientCursor, ReplayBuffer

__all__ = ["ConnectionPort", "RegistryPort", "SessionPort", "SessionView"]


class ConnectionPort(Protocol):
    """What a session (and its cleanup) needs of a connection attached to it."""

    #: The client id it is attached as, its peer's name, and whether it resumed.
    client: str
    peer: str
    resumed: bool
    #: The client's cursor, once attached.
    cursor: ClientCursor | None
    #: When the peer last sent a frame; the seq of the next message to send it.
    last_received: float
    next_seq: int

    @property
    def aborted(self) -> bool: ...

    def attach(self, cursor: ClientCursor, seen: int, now: float) -> None: ...

    def ping(self, now: float) -> None: ...

    def queue(self, text: str) -> None: ...

    def finish(self, text: str, *, flush: bool, error: str | None = None) -> None: ...

    def wake(self) -> None: ...

    def abort(self) -> None: ...


class SessionPort(Protocol):
    """What a connection needs of the session it is attached to."""

    @property
    def id(self) -> str: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def closing(self) -> bool: ...

    @property
    def replay_buffer(self) -> ReplayBuffer: ...

    def terminate(self, reason: str = "terminated") -> None: ...

    def inbox_full(self, cursor: ClientCursor, size: int) -> bool: ...

    async def wait_inbox_room(self, cursor: ClientCursor, size: int) -> None: ...

    async def deliver(
        self, connection: ConnectionPort, seq: int, data: Any, size: int
    ) -> bool: ...

    def acknowledged(self, connection: ConnectionPort, seq: int) -> None: ...

    def detach(self, connection: ConnectionPort) -> None: ...


class SessionView(Protocol):
    """What the registry reads of a session it is told about."""

    @property
    def id(self) -> str: ...

    @property
    def principal(self) -> str | None: ...

    @property
    def created(self) -> float: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def state(self) -> str | None: ...


class RegistryPort(Protocol):
    """What a session needs of the registry that holds it."""

    @property
    def closing(self) -> bool:
        """The manager is shutting down."""
        ...

    def store_has_room(self, session_id: str) -> bool: ...

    def count_saving(self, delta: int) -> None: ...

    def forget(self, session: SessionView) -> None: ...
