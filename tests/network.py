"""Channel pairs over each transport, for the conformance suite and end-to-end tests, and
a WebSocket peer built by hand, byte by byte."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from urllib.parse import urlsplit

import trio

import statesession
from statesession import Channel, SessionConfig
from statesession.testing import memory_channel_pair

MAX_FRAME = 256 * 1024


def scheme_of(transport: str) -> str:
    """The URL scheme a transport is served at: the first it declares."""
    return statesession.load_transport(transport).schemes[0]


def pair_opener(
    name: str, *, max_frame: int = MAX_FRAME
) -> Callable[[], AbstractAsyncContextManager[tuple[Channel, Channel]]]:
    """An ``open_pair`` for the conformance suite: (server end, client end)."""

    @asynccontextmanager
    async def open_memory() -> AsyncIterator[tuple[Channel, Channel]]:
        server, client = memory_channel_pair(max_frame=max_frame)
        try:
            yield server, client
        finally:
            await server.aclose()
            await client.aclose()

    @asynccontextmanager
    async def open_network() -> AsyncIterator[tuple[Channel, Channel]]:
        transport = statesession.load_transport(name)
        config = SessionConfig(max_frame=max_frame, send_timeout=2.0)
        handed: trio.MemorySendChannel[Channel]
        handed, taken = trio.open_memory_channel[Channel](math.inf)
        done = trio.Event()

        async def handler(channel: Channel) -> None:
            await handed.send(channel)
            await done.wait()

        scheme = scheme_of(name)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: transport.serve(
                    handler, f"{scheme}://127.0.0.1:0/", config=config, task_status=task_status
                )
            )
            client = await transport.connect(url, nursery=nursery, max_frame=max_frame)
            with trio.fail_after(10):
                server = await taken.receive()
            try:
                yield server, client
            finally:
                done.set()
                with trio.move_on_after(20):
                    await client.aclose()
                    await server.aclose()
                nursery.cancel_scope.cancel()

    return open_memory if name == "memory" else open_network


class NetServer:
    """A manager served over a real transport on 127.0.0.1, recording server channels."""

    def __init__(self, manager: statesession.SessionManager, url: str, nursery: trio.Nursery):
        self.manager = manager
        self.url = url
        self.nursery = nursery
        self.channels: list[Channel] = []


@asynccontextmanager
async def net_server(
    transport: str,
    app: Callable[[statesession.Session], object],
    *,
    config: SessionConfig | None = None,
    store: statesession.SessionStore | None = None,
) -> AsyncIterator[NetServer]:
    config = config or SessionConfig()
    loaded = statesession.load_transport(transport)
    scheme = scheme_of(transport)
    async with trio.open_nursery() as nursery:
        async with statesession.open_manager(app, config=config, store=store) as manager:  # type: ignore[arg-type]
            server: NetServer

            async def handler(channel: Channel) -> None:
                server.channels.append(channel)
                await manager.serve_channel(channel)

            url = await nursery.start(
                lambda task_status: loaded.serve(
                    handler, f"{scheme}://127.0.0.1:0/", config=config, task_status=task_status
                )
            )
            server = NetServer(manager, url, nursery)
            yield server
        # Sessions are cleaned up and their clients told; now stop listening.
        nursery.cancel_scope.cancel()


# -- a WebSocket peer built by hand ------------------------------------------------------------

#: WebSocket opcodes (RFC 6455, section 5.2).
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())


class RawWebSocket:
    """One end of a WebSocket connection whose frames are built and parsed here, by hand,
    with no WebSocket library: for sending what neither transport would (text that is not
    UTF-8, a binary message) and for reading exactly what came back (a close frame's
    code, the end of the stream)."""

    def __init__(self, stream: trio.SocketStream, buffered: bytes, *, client: bool) -> None:
        self.stream = stream
        self._buffer = bytearray(buffered)
        self.client = client  # a client masks what it sends (RFC 6455, section 5.3)
        self.ended = False

    async def __aenter__(self) -> RawWebSocket:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stream.aclose()

    @property
    def name(self) -> str:
        """``host:port`` of this end, as the other end's logs name it."""
        host, port = self.stream.socket.getsockname()[:2]
        return f"{host}:{port}"

    @classmethod
    async def connect(cls, url: str) -> RawWebSocket:
        """Open a connection to ``url`` and do the HTTP upgrade (``async with`` the result
        closes it)."""
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        key = base64.b64encode(os.urandom(16))
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n" % (parts.hostname.encode(), parts.port, key)
        )
        head, rest = await _read_head(stream)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert _accept_key(key) in head, head
        return cls(stream, rest, client=True)

    @classmethod
    async def accept(cls, stream: trio.SocketStream) -> RawWebSocket:
        """Answer the HTTP upgrade a client sent on ``stream``."""
        head, rest = await _read_head(stream)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % _accept_key(key)
        )
        return cls(stream, rest, client=False)

    async def send_frame(
        self, opcode: int, payload: bytes, *, fin: bool = True, masked: bool | None = None
    ) -> None:
        """Send one frame, masked if this end is the client (unless ``masked`` says
        otherwise, to break the protocol)."""
        size = len(payload)
        masked = self.client if masked is None else masked
        mask_bit = 0x80 if masked else 0
        if size < 126:
            head = struct.pack("!BB", (0x80 if fin else 0) | opcode, mask_bit | size)
        elif size < 65536:
            head = struct.pack("!BBH", (0x80 if fin else 0) | opcode, mask_bit | 126, size)
        else:
            head = struct.pack("!BBQ", (0x80 if fin else 0) | opcode, mask_bit | 127, size)
        if masked:
            mask = os.urandom(4)
            payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
            head += mask
        await self.stream.send_all(head + payload)

    def _parse(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        size, start = buffer[1] & 0x7F, 2
        if size == 126:
            if len(buffer) < 4:
                return None
            (size,), start = struct.unpack("!H", buffer[2:4]), 4
        elif size == 127:
            if len(buffer) < 10:
                return None
            (size,), start = struct.unpack("!Q", buffer[2:10]), 10
        mask = b""
        if buffer[1] & 0x80:
            mask, start = bytes(buffer[start : start + 4]), start + 4
        if len(buffer) < start + size:
            return None
        opcode = buffer[0] & 0x0F
        payload = bytes(buffer[start : start + size])
        if mask:
            payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        del buffer[: start + size]
        return opcode, payload

    async def next_frame(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next frame as ``(opcode, payload)``; ``None`` once the other end has ended
        the stream (EOF or a reset)."""
        with trio.fail_after(timeout):
            while (frame := self._parse()) is None:
                if self.ended:
                    return None
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    self.ended = True
                self._buffer += data
        return frame

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Read (and drop) frames until the other end's close frame: its code (``None``
        if the stream ended first)."""
        while (frame := await self.next_frame(timeout)) is not None:
            opcode, payload = frame
            if opcode == CLOSE:
                return int.from_bytes(payload[:2], "big")
        return None

    async def wait_ended(self, timeout: float = 5.0) -> None:
        """Read (and drop) everything until the other end ends the stream."""
        while await self.next_frame(timeout) is not None:
            pass


async def _read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """An HTTP head, and the bytes read after it."""
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data:
            more = await stream.receive_some(65536)
            assert more, f"the connection ended during the HTTP upgrade: {data!r}"
            data += more
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


@asynccontextmanager
async def raw_websocket_server() -> AsyncIterator[
    tuple[str, trio.MemoryReceiveChannel[RawWebSocket]]
]:
    """A WebSocket server built by hand on 127.0.0.1: yields its ``ws://`` URL and where
    each connection it upgrades arrives, as a :class:`RawWebSocket` to drive."""
    accepted, arrived = trio.open_memory_channel[RawWebSocket](math.inf)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def on_connection(stream: trio.SocketStream) -> None:
        async with stream:  # the test drives the connection; it closes with the server
            await accepted.send(await RawWebSocket.accept(stream))
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, on_connection, listeners)
        yield f"ws://127.0.0.1:{port}/", arrived
        nursery.cancel_scope.cancel()
