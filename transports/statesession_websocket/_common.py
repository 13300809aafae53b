"""What both WebSocket transports share: close codes, what they refuse, URLs, TLS settings
and serving.

Nothing here imports a WebSocket library, so either transport loads without the other's.
"""

from __future__ import annotations

import abc
import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from urllib.parse import urlsplit

import trio

from statesession import Channel, SessionConfig, Transport, TransportError
from statesession.protocol import CLOSE_CODES as ERROR_CLOSE_CODES
from statesession.sockets import Stream, serve_tcp

__all__ = [
    "CLOSE_CODES",
    "DEFAULT_PORT",
    "INVALID_DATA",
    "MESSAGE_TOO_BIG",
    "NOT_TEXT",
    "PROTOCOL_ERROR",
    "RECEIVE_SIZE",
    "UNSUPPORTED_DATA",
    "WebSocketServing",
    "address",
    "first_cause",
]

DEFAULT_PORT = 8765

#: The WebSocket close code for each fatal protocol error, from the protocol's table
#: (1000 for a normal close).
CLOSE_CODES: dict[str | None, int] = {None: 1000}
CLOSE_CODES.update(ERROR_CLOSE_CODES.items())
#: The close code of a frame over a limit (RFC 6455: Message Too Big).
MESSAGE_TOO_BIG = 1009
#: The close code of a frame that breaks the WebSocket protocol (RFC 6455: Protocol Error).
PROTOCOL_ERROR = 1002
#: The close code of a binary message (RFC 6455: Unsupported Data): frames are text.
UNSUPPORTED_DATA = 1003
#: The close code of a text message that is not UTF-8 (RFC 6455: Invalid Frame Payload
#: Data).
INVALID_DATA = 1007
#: The reason sent with either: what the peer must send instead.
NOT_TEXT = "frames are JSON in WebSocket text messages, UTF-8"
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


class WebSocketServing(Transport):
    """What both WebSocket transports share: their TLS settings, and serving -- listening,
    and running each connection, its HTTP upgrade included, in an error boundary of its
    own, so that nothing one client does can end another connection or the server. A
    transport says how to serve one accepted connection (``_serve_one``) and how to
    connect."""

    schemes = ("ws", "wss")
    #: For ``ws://``; a ``wss://`` URL that names no port means 443, as HTTPS does.
    default_port = DEFAULT_PORT

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        client_ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        #: Serve ``wss://`` with this context (``None``: plain ``ws://``).
        self.ssl_context = ssl_context
        #: Verify ``wss://`` servers with this context when connecting (``None``: the
        #: system's certificate authorities, ``ssl.create_default_context()``).
        self.client_ssl_context = client_ssl_context

    def _server_stream(self, raw: trio.SocketStream) -> Stream:
        """An accepted connection as this transport serves it: under TLS for ``wss://``."""
        if self.ssl_context is None:
            return raw
        return trio.SSLStream(raw, self.ssl_context, server_side=True, https_compatible=True)

    async def _open_stream(self, host: str, port: int, secure: bool) -> Stream:
        """A connection to ``host``:``port``; when ``secure``, under TLS with its handshake
        done (verified with ``client_ssl_context``), or closed again if that fails."""
        raw = await trio.open_tcp_stream(host, port)
        if not secure:
            return raw
        stream = trio.SSLStream(
            raw,
            self.client_ssl_context or ssl.create_default_context(),
            server_hostname=host,
            https_compatible=True,
        )
        try:
            await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    async def serve(
        self,
        handler: Callable[[Channel], Awaitable[None]],
        url: str,
        *,
        config: SessionConfig,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        host, port, _path, secure = address(url)
        if secure and self.ssl_context is None:
            raise TransportError(
                f"serving {url} needs TLS: use {type(self).__name__}(ssl_context=...) or a "
                "ws:// URL"
            )
        await serve_tcp(
            host,
            port,
            partial(self._serve_one, handler=handler, config=config),
            scheme="ws" if self.ssl_context is None else "wss",
            path="/",
            log=logging.getLogger(f"statesession.{self.name}"),
            task_status=task_status,
        )

    @abc.abstractmethod
    async def _serve_one(
        self,
        stream: trio.SocketStream,
        handler: Callable[[Channel], Awaitable[None]],
        config: SessionConfig,
    ) -> None:
        """Upgrade one accepted connection (within ``config.handshake_timeout``) and run
        ``handler`` with its channel; return when it is over."""
