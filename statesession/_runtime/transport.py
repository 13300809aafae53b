"""Transports: how sessions reach a network, found by name or URL scheme.

Theory of operation
-------------------
A transport turns network connections into :class:`~statesession.Channel` objects and
nothing more: handshake, resume, acks, heartbeats and limits live in the core. It serves
(calling a handler with one channel per accepted connection), connects (returning one
channel), or both: a transport that only serves (a bridge inside another server) or only
connects (a client in a browser) leaves the other method out, and asking it for that role
raises :class:`TransportError` naming what it can do. It declares the URL schemes it
handles (the first is the one it serves at) and the port such a URL means when it names
none; ``statesession serve`` builds its default URL from them, and nothing else keeps a
table of schemes or ports.

Transports are distributions of their own, registered in the entry-point group
``statesession.transports`` under their name *and* under each URL scheme they are the
one for, so ``load_transport("websocket")`` and ``load_transport("ws://host:8765/")``
find the same one. An entry point may name the extra that brings the transport's
dependencies (``"statesession_websocket:transport [websocket]"``), so a missing
dependency is reported as the command that installs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import trio

from .._core.channel import Channel
from .._core.config import SessionConfig
from .._core.exceptions import TransportError

if TYPE_CHECKING:
    from .manager import SessionManager

__all__ = [
    "ENTRY_POINT_GROUP",
    "Role",
    "Transport",
    "for_role",
    "load_transport",
    "pick_transport",
    "serve",
]

ENTRY_POINT_GROUP = "statesession.transports"

Handler = Callable[[Channel], Awaitable[None]]
#: What a transport is asked to do.
Role = Literal["serve", "connect"]


class Transport:
    """A way to move frames over a network; see docs/writing-a-transport.md.

    A subclass overrides :meth:`serve`, :meth:`connect` or both; the one it leaves out
    raises :class:`TransportError`, and :attr:`can_serve` / :attr:`can_connect` say
    which it has."""

    #: The transport's name (also its entry point's name).
    name: str = ""
    #: The URL schemes it handles, the one it serves at first (``("ws", "wss")``).
    schemes: tuple[str, ...] = ()
    #: The port a URL of its first scheme means when it names none (and the port
    #: ``statesession serve`` listens on by default); ``None`` when its URLs have no
    #: port (a socket file's path).
    default_port: int | None = None

    @property
    def can_serve(self) -> bool:
        """Whether it serves: its class overrides :meth:`serve`."""
        return type(self).serve is not Transport.serve

    @property
    def can_connect(self) -> bool:
        """Whether it connects: its class overrides :meth:`connect`."""
        return type(self).connect is not Transport.connect

    async def serve(
        self,
        handler: Handler,
        url: str,
        *,
        config: SessionConfig,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections at ``url`` and run ``handler(channel)`` for each, until
        cancelled. Each connection runs inside its own error boundary: nothing one peer
        does may end the others or the server. Calls ``task_status.started(url)`` with the
        URL actually listened on (the real port when ``url`` asked for port 0). Enforces
        ``config.max_frame`` on what it receives."""
        await trio.lowlevel.checkpoint()
        raise self._missing("serve")

    async def connect(self, url: str, *, nursery: trio.Nursery, max_frame: int) -> Channel:
        """Open one connection to ``url``. Background work the connection needs runs in
        ``nursery`` and ends when the channel is closed."""
        await trio.lowlevel.checkpoint()
        raise self._missing("connect")

    def _missing(self, role: str) -> TransportError:
        """The error for asking this transport for a role it does not have."""
        other = "connects" if role == "serve" else "serves"
        can = self.can_connect if role == "serve" else self.can_serve
        does = f"it only {other}" if can else "it neither serves nor connects"
        return TransportError(
            f"the {self.name or type(self).__name__!r} transport cannot {role}: {does}"
        )


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_transport(name_or_url: str) -> Transport:
    """The transport registered under a name (``"tcp"``) or for a URL's scheme
    (``"tcp://127.0.0.1:9000"``). Raises :class:`TransportError` when there is none, or
    when its dependencies are not installed (naming the extra to install)."""
    key = urlsplit(name_or_url).scheme if "://" in name_or_url else name_or_url
    registered = _entry_points()
    entry_point = registered.get(key)
    if entry_point is None:
        known = ", ".join(sorted(registered)) or "none"
        raise TransportError(
            f"no transport is registered for {key!r} (registered: {known}); install one "
            f"that provides it in the {ENTRY_POINT_GROUP!r} entry-point group"
        )
    try:
        transport = entry_point.load()
    except ImportError as exc:
        raise TransportError(
            f"the {entry_point.name!r} transport cannot be loaded ({exc}); "
            f"{_install_hint(entry_point)}"
        ) from exc
    if not isinstance(transport, Transport):
        raise TransportError(
            f"entry point {entry_point.name!r} = {entry_point.value!r} is not a Transport"
        )
    return transport


def _install_hint(entry_point: EntryPoint) -> str:
    """What to install for an entry point whose module cannot be imported: the extra it
    names, of the distribution that declares it (statesession itself is installed from
    a checkout, not from the package index)."""
    extras = ",".join(entry_point.extras)
    dist = entry_point.dist.name if entry_point.dist is not None else None
    if not extras:
        return f"install the distribution that provides {entry_point.value!r}"
    if dist is None or dist == "statesession":
        return (
            f"install statesession's {extras!r} extra: pip install '.[{extras}]' in the "
            "root of its checkout"
        )
    return f"pip install '{dist}[{extras}]'"


def for_role(transport: Transport, role: Role) -> Transport:
    """``transport``, if it can ``role`` (serve or connect); else TransportError saying
    what it can do."""
    if not (transport.can_serve if role == "serve" else transport.can_connect):
        raise transport._missing(role)
    return transport


def pick_transport(
    url: str, transport: str | Transport | None, *, role: Role | None = None
) -> Transport:
    """The transport to reach ``url`` with: ``transport`` (a name or an instance) when
    given, else the one registered for the URL's scheme; with ``role``, one that can
    serve or connect (else TransportError, before anything is tried)."""
    if transport is None:
        picked = load_transport(url)
    elif isinstance(transport, str):
        picked = load_transport(transport)
    elif isinstance(transport, Transport):
        picked = transport
    else:
        raise TypeError(f"transport must be a name or a Transport, not {transport!r}")
    return picked if role is None else for_role(picked, role)


async def serve(
    manager: SessionManager,
    url: str = "ws://127.0.0.1:8765/",
    *,
    transport: str | Transport | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``manager``'s sessions at ``url`` (``ws://``, ``tcp://``, or any registered
    scheme) until cancelled, with the transport registered for the URL's scheme or the one
    ``transport`` names (``"websockets"``) or is. With ``await nursery.start(serve,
    manager, url)``, returns the URL actually listened on once connections are accepted."""
    await pick_transport(url, transport, role="serve").serve(
        manager.serve_channel, url, config=manager.config, task_status=task_status
    )
