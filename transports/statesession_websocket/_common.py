"""What both WebSocket transports share: close codes, URLs, listening sockets.

Nothing here imports a WebSocket library, so either transport loads without the other's.
"""

from __future__ import annotations

import socket
import struct
from urllib.parse import urlsplit

import trio

from statesession import TransportError

__all__ = [
    "CLOSE_CODES",
    "DEFAULT_PORT",
    "MESSAGE_TOO_BIG",
    "RECEIVE_SIZE",
    "address",
    "first_cause",
    "listen",
    "reset",
    "url_host",
]

DEFAULT_PORT = 8765

#: The WebSocket close code for each fatal protocol error (1000 for a normal close).
CLOSE_CODES: dict[str | None, int] = {
    None: 1000,
    "bad_frame": 4000,
    "bad_version": 4001,
    "handshake_timeout": 4002,
    "unknown_session": 4003,
    "bad_token": 4004,
    "resume_gap": 4005,
    "session_limit": 4006,
    "frame_too_large": 4007,
    "terminated": 4008,
    "server_shutdown": 4009,
}
#: The close code of a frame over a limit (RFC 6455: Message Too Big).
MESSAGE_TOO_BIG = 1009
#: Bytes asked of the socket per read.
RECEIVE_SIZE = 65536


def first_cause(exc: BaseException) -> BaseException:
    """The error underneath ``exc``: the first of a nursery's exception group, and the
    socket or TLS error (an ``OSError``) that a trio stream error was raised from."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        elif isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, OSError):
            exc = exc.__cause__
        else:
            return exc


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host


def address(url: str) -> tuple[str, int, str, bool]:
    """Host, port, path and whether TLS is asked for, from a ``ws://`` or ``wss://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise TransportError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    try:
        port = parts.port
        if port is None:
            port = 443 if secure else DEFAULT_PORT
    except ValueError as exc:
        raise TransportError(f"bad port in {url!r}: {exc}") from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return parts.hostname or "127.0.0.1", port, path, secure


async def reset(stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
    """Close ``stream`` with a TCP reset (RST), as a crashed peer or a failed network
    would; a stream already closed stays closed."""
    raw = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(raw, trio.SocketStream) and raw.socket.fileno() != -1:
        raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.aclose_forcefully(stream)


async def listen(host: str, port: int) -> tuple[list[trio.SocketListener], str, int]:
    """Listening sockets for ``host``:``port``, with the host and port actually bound."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port == 0:
        # Each address a host name resolves to would get a port of its own; keep one,
        # so the URL reported is the whole truth.
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    bound = listeners[0].socket.getsockname()
    return listeners, url_host(bound[0]), bound[1]
