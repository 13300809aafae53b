"""What a transport over TCP needs besides its framing: listening, serving each connection
in an error boundary of its own, naming the peer, and resetting a connection.

Each transport would otherwise write these again; see docs/writing-a-transport.md.
Transports import these from :mod:`statesession.sockets`, their public name.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Awaitable, Callable

import trio

__all__ = [
    "Stream",
    "listen_tcp",
    "peer_address",
    "peer_name",
    "reset",
    "serve_tcp",
    "url_host",
]

#: A TCP stream, or TLS over one.
Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host


def _socket_stream(stream: Stream) -> trio.SocketStream:
    raw = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    assert isinstance(raw, trio.SocketStream)
    return raw


def peer_name(stream: Stream, scheme: str) -> str:
    """``scheme:host:port`` of the peer (``scheme:?`` once the socket is gone)."""
    try:
        name = _socket_stream(stream).socket.getpeername()
    except OSError:
        return f"{scheme}:?"
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{scheme}:{name[0]}:{name[1]}"
    return f"{scheme}:{name or '?'}"  # a Unix socket


def peer_address(stream: Stream) -> str | None:
    """The peer's IP address (no port): what a channel's ``peer_address`` says, so that
    per-peer admission limits count one client machine once whatever its ports; ``None``
    once the socket is gone, or for a Unix socket."""
    try:
        name = _socket_stream(stream).socket.getpeername()
    except OSError:
        return None
    if isinstance(name, tuple) and name:
        return str(name[0])
    return None


async def reset(stream: Stream) -> None:
    """Close ``stream`` with a TCP reset (RST), as a crashed peer or a failed network
    would; a stream already closed stays closed."""
    raw = _socket_stream(stream)
    if raw.socket.fileno() != -1:
        raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.aclose_forcefully(stream)


async def listen_tcp(host: str, port: int) -> tuple[list[trio.SocketListener], str, int]:
    """Listening sockets for ``host``:``port``, with the host (as it goes in a URL) and
    the port actually bound."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port == 0:
        # Each address a host name resolves to would get a port of its own; keep one,
        # so the URL reported is the whole truth.
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    bound = listeners[0].socket.getsockname()
    return listeners, url_host(bound[0]), bound[1]


async def serve_tcp(
    host: str,
    port: int,
    serve_one: Callable[[trio.SocketStream], Awaitable[None]],
    *,
    scheme: str,
    path: str = "",
    log: logging.Logger,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen at ``host``:``port`` and run ``serve_one(stream)`` for each connection, in an
    error boundary of its own: what one connection raises is logged and ends that
    connection only. The stream is closed when ``serve_one`` returns. Calls
    ``task_status.started`` with ``scheme://host:port`` and ``path``, the port being the
    one actually bound. Runs until cancelled."""

    async def on_connection(stream: trio.SocketStream) -> None:
        try:
            await serve_one(stream)
        except Exception as exc:  # one connection's failure must not end the server
            log.error("connection %s failed: %s", peer_name(stream, scheme), exc, exc_info=exc)
        finally:
            await trio.aclose_forcefully(stream)

    listeners, bound_host, bound_port = await listen_tcp(host, port)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, on_connection, listeners)
        task_status.started(f"{scheme}://{bound_host}:{bound_port}{path}")
