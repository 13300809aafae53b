"""Regression tests pinning the trio-websocket behaviours the WebSocket transport is built
around. If one of these changes, the transport's design must be looked at again."""

from __future__ import annotations

import errno
from contextlib import suppress

import pytest
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection

import statesession
from statesession import SessionConfig
from statesession.sockets import reset
from statesession_websocket._trio_websocket import WebSocketChannel

from ..network import TEXT, RawWebSocket, net_server


async def test_pitfall_a_handler_exception_ends_a_trio_websocket_server() -> None:
    """Pins the pitfall: with serve_websocket, one handler's exception tears down the
    whole server -- which is why the transport serves each connection in its own error
    boundary instead."""
    crashed: list[BaseException] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await request.accept()
        raise RuntimeError("one bad connection")

    async def run_server(task_status: trio.TaskStatus[trio_websocket.WebSocketServer]) -> None:
        try:
            await trio_websocket.serve_websocket(
                handler, "127.0.0.1", 0, None, task_status=task_status
            )
        except BaseExceptionGroup as exc:
            crashed.append(exc)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_server)
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await trio_websocket.wrap_client_stream(
                nursery, stream, f"127.0.0.1:{server.port}", "/"
            )
            with trio.fail_after(5):
                while not crashed:  # noqa: ASYNC110 - waits for the other task's outcome
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    (group,) = crashed
    assert isinstance(group, BaseExceptionGroup)
    assert group.split(RuntimeError)[0] is not None


async def test_transport_survives_a_failing_connection() -> None:
    """Our transport: an app-level failure in one connection leaves the server serving."""

    async def app(session: statesession.Session) -> None:
        async for message in session:
            await session.send(message.data)

    async with net_server("websocket", app) as server:

        async def exploding(channel: statesession.Channel) -> None:
            raise RuntimeError("one bad connection")

        loaded = statesession.load_transport("websocket")
        url = await server.nursery.start(
            lambda task_status: loaded.serve(
                exploding, "ws://127.0.0.1:0/", config=SessionConfig(), task_status=task_status
            )
        )
        for _ in range(3):
            channel = await loaded.connect(url, nursery=server.nursery, max_frame=65536)
            with pytest.raises(statesession.ChannelError), trio.fail_after(5):
                await channel.receive()
            await channel.aclose()
        async with statesession.open_client(server.url) as client:
            await client.send("alive")
            assert await client.receive() == "alive"


async def test_pitfall_max_message_size_counts_characters() -> None:
    """Pins: trio-websocket measures a message by len() of the text, not by its UTF-8
    bytes, so the core checks frame bytes itself (frame_too_large)."""
    received: list[str] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        connection = await request.accept()
        received.append(str(await connection.get_message()))

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_websocket.serve_websocket(
                handler, "127.0.0.1", 0, None, max_message_size=100, task_status=task_status
            )
        )
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, f"127.0.0.1:{server.port}", "/"
            )
            await ws.send_message("é" * 100)  # 200 bytes, 100 characters
            with trio.fail_after(5):
                while not received:  # noqa: ASYNC110 - waits for the server's handler
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert received == ["é" * 100]


async def test_pitfall_aclose_after_the_peer_closed_leaves_the_stream_open() -> None:
    """Pins: when the peer closed first, WebSocketConnection.aclose() returns without
    closing the TCP stream -- which is why WebSocketChannel closes its stream itself."""
    streams: list[trio.SocketStream] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        connection = await request.accept()
        await connection.aclose()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        streams.append(stream)
        connection = await trio_websocket.wrap_client_stream(
            nursery, stream, f"127.0.0.1:{server.port}", "/"
        )
        with pytest.raises(trio_websocket.ConnectionClosed), trio.fail_after(5):
            await connection.get_message()
        await connection.aclose()
        assert stream.socket.fileno() != -1  # still open after aclose()
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_pitfall_a_failed_tls_handshake_leaves_trio_websocket_waiting() -> None:
    """Pins the pitfall: when the TLS handshake fails inside trio-websocket's own opening
    handshake (an untrusted certificate), wrap_client_stream waits for ever instead of
    raising -- which is why the transport finishes the TLS handshake first."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await request.accept()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            trio_websocket.serve_websocket, handler, "127.0.0.1", 0, server_context
        )
        stream = trio.SSLStream(
            await trio.open_tcp_stream("127.0.0.1", server.port),
            ssl.create_default_context(),  # does not trust the test's CA
            server_hostname="127.0.0.1",
        )
        with trio.move_on_after(1) as waited:
            try:
                await trio_websocket.wrap_client_stream(
                    nursery, stream, f"127.0.0.1:{server.port}", "/"
                )
            except Exception as exc:  # a fixed trio-websocket raises here
                raise AssertionError(f"the pitfall is gone: it raised {exc!r}") from exc
        assert waited.cancelled_caught
        await trio.aclose_forcefully(stream)
        nursery.cancel_scope.cancel()


async def test_pitfall_text_that_is_not_utf8_is_dropped_without_a_close_frame() -> None:
    """Pins the pitfall: when wsproto refuses what a client sent (here text that is not
    UTF-8), trio-websocket drops the TCP connection without the close frame RFC 6455 asks
    for (1007) -- which is why the transport builds its own connection class, which sends
    it."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        connection = await request.accept()
        with suppress(trio_websocket.ConnectionClosed):
            await connection.get_message()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        async with await RawWebSocket.connect(f"ws://127.0.0.1:{server.port}/") as raw:
            await raw.send_frame(TEXT, b'{"type":"\xff"}')
            assert await raw.close_code() is None  # the stream ended, with no close frame
        nursery.cancel_scope.cancel()


async def test_pitfall_a_server_hanging_up_during_the_upgrade_leaves_the_client_waiting() -> None:
    """Pins the pitfall: a server that reads the upgrade request and closes the connection
    without answering leaves wrap_client_stream waiting for ever -- which is why the
    transport opens its client connections itself and fails them instead."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def hang_up(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, hang_up, listeners)
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            with trio.move_on_after(1) as waited:
                await trio_websocket.wrap_client_stream(nursery, stream, f"127.0.0.1:{port}", "/")
            assert waited.cancelled_caught
        nursery.cancel_scope.cancel()


async def _reset_pair() -> trio.SocketStream:
    """A real server-side TCP stream whose peer has just reset the connection."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    await listener.aclose()
    await reset(client)
    await client.aclose()
    with trio.fail_after(5):
        while True:
            try:
                server.socket.getpeername()
            except OSError:
                return server
            await trio.sleep(0.01)


async def test_pitfall_remote_raises_once_the_peer_reset_the_socket() -> None:
    """Pins the pitfall: a WebSocketConnection's ``remote`` calls getpeername, which
    raises ENOTCONN once the peer reset the TCP connection."""
    stream = await _reset_pair()
    connection = trio_websocket.WebSocketConnection(stream, WSConnection(ConnectionType.SERVER))
    with pytest.raises(OSError, match="not connected") as raised:
        connection.remote  # noqa: B018 - the property access is what raises
    assert raised.value.errno == errno.ENOTCONN
    await stream.aclose()


async def test_a_channel_over_a_reset_socket_is_built_and_names_no_peer() -> None:
    """A peer that resets its connection during the upgrade costs the server a channel
    that says ``ws:?`` and no peer address, never an exception in the connection task."""
    stream = await _reset_pair()
    connection = trio_websocket.WebSocketConnection(stream, WSConnection(ConnectionType.SERVER))
    for given in (stream, None):
        channel = WebSocketChannel(connection, given, max_frame=65536)
        assert channel.peer == "ws:?"
        assert channel.peer_address is None
    await stream.aclose()
