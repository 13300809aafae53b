"""End to end over real 127.0.0.1 sockets: cuts, resume, expiry, hostile clients, load.

These run on the real clock with short timeouts (a virtual clock would jump while the
tasks wait on the network).
"""

from __future__ import annotations

import json
import resource
import socket
from contextlib import suppress
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import statesession
from statesession import Backoff, Channel, RemoteError, SessionConfig
from statesession.protocol import decode_server_frame
from statesession_tcp import FrameDecoder, encode_frame

from ..helpers import live_tasks
from ..network import CLOSE, TEXT, RawWebSocket, net_server, scheme_of

TRANSPORTS = ["websocket", "websockets", "tcp"]
WS_TRANSPORTS = ["websocket", "websockets"]
QUICK = SessionConfig(
    reconnect_window=2.0,
    heartbeat_interval=0.5,
    heartbeat_timeout=1.5,
    handshake_timeout=0.5,
    cancel_grace=0.2,
    send_timeout=2.0,
    max_frame=64 * 1024,
    buffer_bytes=1024 * 1024,
)
FAST_BACKOFF = Backoff(initial=0.02, maximum=0.1)


async def streamer(session: statesession.Session) -> None:
    """Answers {"count": n} with the numbers 0..n-1."""
    async for message in session:
        for i in range(message.data["count"]):
            await session.send(i)
            if i % 20 == 0:
                await trio.sleep(0.001)


async def echo(session: statesession.Session) -> None:
    async for message in session:
        await session.send(message.data)


async def abort(channel: Channel) -> None:
    """Kill a server-side connection abruptly (RST), as a crash or a network failure."""
    await channel.abort()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_e2e_resume_after_server_side_connection_is_killed(transport: str) -> None:
    """The server-side TCP connection is reset three times mid-stream; the client resumes
    each time and receives every message exactly once, in order."""
    async with (
        net_server(transport, streamer, config=QUICK) as server,
        statesession.open_client(server.url, transport=transport, backoff=FAST_BACKOFF) as client,
    ):
        await client.send({"count": 600})
        got: list[int] = []
        with trio.fail_after(30):
            while len(got) < 600:
                got.append(await client.receive())
                if len(got) in (100, 300, 450):
                    # (The client may hold messages it read before the reset: wait for
                    # it to reconnect, so that the next reset hits the new connection.)
                    connects = client.statistics().connects
                    await abort(server.channels[-1])
                    while client.statistics().connects == connects:  # noqa: ASYNC110
                        await trio.sleep(0.005)
        assert got == list(range(600))
        assert client.statistics().connects == 4
        (session,) = server.manager.sessions.values()
        assert session.state == "active"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_e2e_window_expiry_ends_the_session_with_a_clear_error(transport: str) -> None:
    """A client kept away past the reconnect window finds its session terminated and is
    told so (code terminated, reason window_expired), never served a silent new start."""
    async with net_server(transport, echo, config=QUICK) as server:
        reachable = True
        loaded = statesession.load_transport(transport)

        async def connect() -> Channel:
            if not reachable:
                raise OSError("network is down")
            return await loaded.connect(server.url, nursery=server.nursery, max_frame=65536)

        async with statesession.open_client(
            connect, backoff=FAST_BACKOFF, give_up_after=60
        ) as client:
            await client.send("before")
            assert await client.receive() == "before"
            (session,) = server.manager.sessions.values()
            reachable = False
            await abort(server.channels[-1])
            report = await session.wait_terminated()
            assert report is not None
            assert report.reason == "window_expired"
            reachable = True
            with pytest.raises(RemoteError) as info, trio.fail_after(10):
                await client.receive()
            assert info.value.code == "terminated"
            assert "window_expired" in info.value.message


async def raw_connection(url: str) -> trio.SocketStream:
    host, port = url.split("//")[1].rstrip("/").split(":")
    return await trio.open_tcp_stream(host, int(port))


async def closed_by_server(stream: trio.SocketStream, within: float) -> bytes:
    """Read until the server closes the connection; return what it sent."""
    received = b""
    with trio.fail_after(within):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return received
            if not data:
                return received
            received += data


async def bystander_works(url: str, transport: str) -> None:
    with trio.fail_after(10):
        async with statesession.open_client(url, transport=transport) as client:
            await client.send("ok?")
            assert await client.receive() == "ok?"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_e2e_garbage_bytes_close_only_that_connection(transport: str) -> None:
    """Garbage bytes close that raw connection within 5 s while a client on the same server
    keeps round-tripping."""
    async with net_server(transport, echo, config=QUICK) as server:
        async with statesession.open_client(server.url, transport=transport) as bystander:
            async with await raw_connection(server.url) as stream:
                await stream.send_all(b"\x00\xff\xfe garbage\r\n\r\n" * 10)
                await closed_by_server(stream, within=5)
            await bystander.send("still here")
            assert await bystander.receive() == "still here"
        await bystander_works(server.url, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_e2e_slowloris_is_dropped_after_the_handshake_timeout(transport: str) -> None:
    """A client that starts a handshake and never finishes it is cut off."""
    async with net_server(transport, echo, config=QUICK) as server:
        partial = b"GET / HTTP/1.1\r\nHost: x\r\n" if transport == "websocket" else b"\x00\x00"
        async with await raw_connection(server.url) as stream:
            await stream.send_all(partial)
            started = trio.current_time()
            await closed_by_server(stream, within=5)
        assert trio.current_time() - started < 3
        assert server.manager.statistics().handshakes == 0
        await bystander_works(server.url, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_e2e_oversized_frame_is_refused(transport: str) -> None:
    """A msg over max_frame is refused (frame_too_large, or a FrameTooLargeError close) and the
    server keeps serving others."""
    async with net_server(transport, echo, config=QUICK) as server:
        loaded = statesession.load_transport(transport)
        channel = await loaded.connect(server.url, nursery=server.nursery, max_frame=1 << 20)
        await channel.send('{"type":"hello","v":1}')
        assert '"welcome"' in str(await channel.receive())
        await channel.send('{"type":"msg","seq":1,"data":"' + "x" * 100_000 + '"}')
        frames = []
        with trio.fail_after(5):
            try:
                while True:
                    frames.append(decode_server_frame(await channel.receive(), max_frame=1 << 20))
            except statesession.ChannelError as exc:
                ended = exc
        errors = [f for f in frames if getattr(f, "code", None) == "frame_too_large"]
        # TCP reports it in an error frame; WebSocket closes with 1009 (Message Too Big).
        assert errors or isinstance(ended, statesession.FrameTooLargeError)
        await channel.aclose()
        await bystander_works(server.url, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_e2e_client_sending_an_oversized_message_gets_a_final_error(
    transport: str,
) -> None:
    """The client does not reconnect and resend the same oversized frame forever."""
    async with net_server(transport, echo, config=QUICK) as server:
        async with statesession.open_client(
            server.url, transport=transport, backoff=FAST_BACKOFF
        ) as client:
            await client.send("x" * 100_000)
            with pytest.raises(RemoteError, match="frame_too_large"), trio.fail_after(5):
                await client.receive()
            assert client.statistics().connects == 1
        await bystander_works(server.url, transport)


@pytest.mark.parametrize("transport", WS_TRANSPORTS)
async def test_e2e_a_thousand_connections_at_once_leak_nothing(transport: str) -> None:
    """1,000 clients connect at once over WebSocket; each gets a session; another session
    is unaffected; when they leave, the task count is back where it started."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    # The crowd answers no pings: keep heartbeats out of it (opening 1,000 connections
    # on a busy machine can take longer than QUICK's heartbeat timeout), and give each
    # upgrade more than QUICK's half second: on two busy cores the last of 1,000 upgrades
    # served by the process that also opens them can wait longer than that for the CPU.
    config = attrs.evolve(
        QUICK,
        heartbeat_interval=30.0,
        heartbeat_timeout=60.0,
        handshake_timeout=30.0,
        peer_session_burst=2000,
        peer_handshakes=2000,
        max_handshakes=2000,
    )
    async with net_server(transport, echo, config=config) as server:
        loaded = statesession.load_transport(transport)
        await trio.testing.wait_all_tasks_blocked(0.05)
        baseline = len(live_tasks())
        async with statesession.open_client(server.url, transport=transport) as bystander:
            welcomed: list[Channel] = []

            async def one(nursery: trio.Nursery) -> None:
                channel = await loaded.connect(server.url, nursery=nursery, max_frame=65536)
                await channel.send('{"type":"hello","v":1}')
                frame: Any = decode_server_frame(await channel.receive(), max_frame=65536)
                assert frame.__class__.__name__ == "WelcomeFrame"
                welcomed.append(channel)

            async with trio.open_nursery() as crowd:
                with trio.fail_after(60):
                    async with trio.open_nursery() as openers:
                        for _ in range(1000):
                            openers.start_soon(one, crowd)
                assert len(welcomed) == 1000
                assert len(server.manager) == 1001
                await bystander.send("unaffected")
                assert await bystander.receive() == "unaffected"

                # Half say bye, half just vanish (their sessions expire with the window).
                # Connections that answered no ping may have been dropped already.
                async def leave(channel: Channel, polite: bool) -> None:
                    with suppress(statesession.ChannelError):
                        if polite:
                            await channel.send('{"type":"bye"}')
                        else:
                            await channel.aclose()

                with trio.fail_after(30):
                    async with trio.open_nursery() as leavers:
                        for i, channel in enumerate(welcomed):
                            leavers.start_soon(leave, channel, bool(i % 2))
                    while len(server.manager) > 1:  # noqa: ASYNC110 - polls the server
                        await trio.sleep(0.2)
                crowd.cancel_scope.cancel()
        with trio.fail_after(10):
            while len(live_tasks()) > baseline:  # noqa: ASYNC110 - polls the task tree
                await trio.sleep(0.1)
        assert len(live_tasks()) == baseline


@pytest.mark.parametrize("transport", WS_TRANSPORTS)
async def test_e2e_websocket_close_codes_say_why(transport: str) -> None:
    """A fatal error closes the WebSocket with its 4000-range code; a session that ended
    closes it normally (1000)."""
    async with net_server(transport, echo, config=QUICK) as server:
        loaded = statesession.load_transport(transport)
        refused = await loaded.connect(server.url, nursery=server.nursery, max_frame=65536)
        await refused.send('{"type":"hello","v":2}')
        assert '"bad_version"' in str(await refused.receive())
        with pytest.raises(statesession.ChannelBrokenError, match="4001"), trio.fail_after(5):
            await refused.receive()
        await refused.aclose()

        polite = await loaded.connect(server.url, nursery=server.nursery, max_frame=65536)
        await polite.send('{"type":"hello","v":1}')
        await polite.receive()
        await polite.send('{"type":"bye"}')

        async def drain() -> None:
            while True:
                await polite.receive()

        with pytest.raises(statesession.ChannelBrokenError, match="1000"), trio.fail_after(5):
            await drain()
        await polite.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_e2e_a_peer_that_stops_reading_is_dropped(transport: str) -> None:
    """A client that stops reading while the app streams to it cannot hold the server:
    after send_timeout its connection is dropped and the session waits for it to come
    back; other sessions carry on."""

    async def firehose(session: statesession.Session) -> None:
        async for _ in session:
            for _ in range(2000):
                await session.send("x" * 30_000)

    config = SessionConfig(
        reconnect_window=30,
        send_timeout=1.0,
        heartbeat_interval=10,
        heartbeat_timeout=30,
        buffer_bytes=128 * 1024 * 1024,
        buffer_messages=5000,
        max_frame=64 * 1024,
    )
    async with net_server(transport, firehose, config=config) as server:
        loaded = statesession.load_transport(transport)
        deaf = await loaded.connect(server.url, nursery=server.nursery, max_frame=65536)
        await deaf.send('{"type":"hello","v":1}')
        await deaf.receive()
        await deaf.send('{"type":"msg","seq":1,"data":"go"}')
        (session,) = server.manager.sessions.values()
        with trio.fail_after(15):
            while session.state != "reconnecting":  # noqa: ASYNC110 - polls the session
                await trio.sleep(0.1)
        assert server.manager.statistics().connections == 0
        await deaf.aclose()


async def test_e2e_tcp_close_never_cuts_off_the_last_frames() -> None:
    """When the server closes while the client's acks are still arriving, the last message
    and the closing frame still get through (no reset discards them)."""
    config = SessionConfig(
        buffer_bytes=64 * 1024 * 1024, buffer_messages=10_000, max_frame=1 << 20
    )

    async def burst(session: statesession.Session) -> None:
        for _ in range(150):
            await session.send("x" * 50_000)

    for _ in range(10):
        async with net_server("tcp", burst, config=config) as server:
            host, port = server.url.split("//")[1].rsplit(":", 1)
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 131072)
                await stream.send_all(encode_frame('{"type":"hello","v":1}'))
                decoder = FrameDecoder(max_frame=1 << 20)
                messages, last = 0, None
                with trio.fail_after(30):
                    while last is None:
                        data = await stream.receive_some(16384)
                        if not data:
                            break
                        decoder.feed(data)
                        while (raw := decoder.next_frame()) is not None:
                            frame = json.loads(raw)
                            if frame["type"] == "msg":
                                messages += 1
                                with suppress(trio.BrokenResourceError):
                                    await stream.send_all(
                                        encode_frame(f'{{"type":"ack","seq":{frame["seq"]}}}')
                                    )
                            elif frame["type"] == "closed":
                                last = frame
            assert messages == 150
            assert last == {"type": "closed", "reason": "completed"}


async def slow_proxy(target_port: int, delay: float, *, task_status: Any) -> None:
    """A TCP proxy on 127.0.0.1 that holds every chunk for ``delay`` (a distant client)."""

    async def pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(65536):
                await trio.sleep(delay)
                await sink.send_all(data)
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await sink.send_eof()

    async def handle(client: trio.SocketStream) -> None:
        async with (
            client,
            await trio.open_tcp_stream("127.0.0.1", target_port) as upstream,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(pipe, client, upstream)
            nursery.start_soon(pipe, upstream, client)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(listeners[0].socket.getsockname()[1])


async def stoppable_server(
    transport: str,
    app: Any,
    config: SessionConfig,
    stop: trio.Event,
    took: list[float],
    *,
    task_status: Any,
) -> None:
    """Run a server until ``stop``; record how long leaving it (the shutdown) took."""
    async with net_server(transport, app, config=config) as server:
        task_status.started(server)
        await stop.wait()
        began = trio.current_time()
    took.append(trio.current_time() - began)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_e2e_shutdown_with_a_distant_client_is_prompt(transport: str) -> None:
    """Shutting down waits for each connection's goodbye (a WebSocket close handshake over
    a slow link) instead of cutting it off and waiting out send_timeout."""
    config = SessionConfig(send_timeout=5.0)
    scheme = scheme_of(transport)
    stop, took = trio.Event(), []
    async with trio.open_nursery() as outer:
        server = await outer.start(stoppable_server, transport, echo, config, stop, took)
        port = int(server.url.rstrip("/").rsplit(":", 1)[1])
        proxy_port = await outer.start(slow_proxy, port, 0.1)
        async with statesession.open_client(
            f"{scheme}://127.0.0.1:{proxy_port}/", transport=transport
        ) as client:
            await client.send("hi")
            assert await client.receive() == "hi"
            stop.set()
            with trio.fail_after(10):
                async for _ in client:
                    pass
            assert client.closed_reason == "server_shutdown"
        with trio.fail_after(10):
            while not took:  # noqa: ASYNC110 - waits for the server task to finish
                await trio.sleep(0.05)
        assert took[0] < 3, f"shutdown took {took[0]:.1f} s"
        outer.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_e2e_handshake_in_progress_at_shutdown_is_told_why(transport: str) -> None:
    """A connection that has not said hello when the server stops gets server_shutdown."""
    loaded = statesession.load_transport(transport)
    stop, took = trio.Event(), []
    async with trio.open_nursery() as outer:
        server = await outer.start(stoppable_server, transport, echo, QUICK, stop, took)
        channel = await loaded.connect(server.url, nursery=outer, max_frame=65536)
        try:
            with trio.fail_after(5):
                while server.manager.statistics().handshakes < 1:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            stop.set()
            frames: list[Any] = []
            with trio.fail_after(10):
                try:
                    while True:
                        frames.append(
                            decode_server_frame(await channel.receive(), max_frame=65536)
                        )
                except statesession.ChannelError as exc:
                    ended: Exception = exc
            assert [f.code for f in frames] == ["server_shutdown"]
            if transport == "websocket":
                assert "4009" in str(ended)
        finally:
            await channel.aclose()
        outer.cancel_scope.cancel()


async def test_e2e_connect_timeout_bounds_the_wait_for_welcome() -> None:
    """A server that accepts connections but never answers hello is given up on within
    give_up_after, each attempt bounded by connect_timeout."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def mute(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, mute, listeners)
        began = trio.current_time()
        with pytest.raises(statesession.ChannelBrokenError, match="no welcome"):
            async with statesession.open_client(
                f"tcp://127.0.0.1:{port}",
                connect_timeout=0.5,
                give_up_after=1.5,
                backoff=FAST_BACKOFF,
            ):
                pass
        assert trio.current_time() - began < 3
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("transport", WS_TRANSPORTS)
async def test_e2e_websocket_connect_failure_names_the_cause(transport: str) -> None:
    """A connect to a port nobody listens on raises ChannelBrokenError caused by the OSError,
    not a nursery's exception group."""
    loaded = statesession.load_transport(transport)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    async with trio.open_nursery() as nursery:
        with pytest.raises(statesession.ChannelBrokenError) as info:
            await loaded.connect(f"ws://127.0.0.1:{port}/", nursery=nursery, max_frame=1024)
    assert "Exceptions from Trio nursery" not in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("transport", ["wss", "websockets"])
async def test_e2e_serving_wss_without_tls_is_refused(transport: str) -> None:
    """Serving a wss:// URL without TLS settings raises TransportError saying it needs TLS."""
    loaded = statesession.load_transport(transport)
    async with trio.open_nursery() as nursery:
        with pytest.raises(statesession.TransportError, match="needs TLS"):
            await nursery.start(
                lambda task_status: loaded.serve(
                    echo, "wss://127.0.0.1:0/", config=SessionConfig(), task_status=task_status
                )
            )


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_e2e_ipv6_urls_round_trip(transport: str) -> None:
    """A server on [::1] reports its URL with the bracketed address, and a client round-trips
    through it."""
    loaded = statesession.load_transport(transport)
    scheme = scheme_of(transport)
    async with trio.open_nursery() as nursery, statesession.open_manager(echo) as manager:
        url = await nursery.start(
            lambda task_status: loaded.serve(
                manager.serve_channel,
                f"{scheme}://[::1]:0/",
                config=manager.config,
                task_status=task_status,
            )
        )
        assert url.startswith(f"{scheme}://[::1]:")
        async with statesession.open_client(url, transport=transport) as client:
            await client.send("v6")
            assert await client.receive() == "v6"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_e2e_anonymous_sessions_are_counted_per_peer_address(transport: str) -> None:
    """Every transport names its peer's address, so the per-peer limit on new anonymous
    sessions holds over real sockets (each connection comes from a new port)."""
    config = attrs.evolve(QUICK, peer_session_burst=3, peer_session_rate=0.01)
    async with net_server(transport, echo, config=config) as server:
        for _ in range(3):
            async with statesession.open_client(server.url, transport=transport):
                pass
        with pytest.raises(RemoteError) as refused:
            async with statesession.open_client(server.url, transport=transport):
                pass
        assert refused.value.code == "session_limit"
        assert "127.0.0.1" in refused.value.message
        assert all(channel.peer_address == "127.0.0.1" for channel in server.channels)


async def firehose(session: statesession.Session) -> None:
    """Sends as fast as its clients take (and its buffer holds)."""
    n = 0
    while True:
        await session.send({"n": n, "pad": "x" * 1000})
        n += 1


@pytest.mark.parametrize("transport", WS_TRANSPORTS)
async def test_e2e_shutdown_with_a_store_closes_with_4009(transport: str) -> None:
    """With a store, stopping the server tells each client error server_shutdown and
    closes its WebSocket with 4009, as documented (it closed with 1000)."""
    stop, took = trio.Event(), []
    async with trio.open_nursery() as outer:

        async def run(task_status: Any) -> None:
            async with net_server(
                transport, echo, config=QUICK, store=statesession.MemoryStore()
            ) as server:
                task_status.started(server)
                await stop.wait()
            took.append(1.0)

        server = await outer.start(run)
        async with await RawWebSocket.connect(server.url) as ws:
            await ws.send_frame(TEXT, b'{"type":"hello","v":1}')
            _opcode, payload = await ws.next_frame() or (None, b"")
            assert b'"welcome"' in payload
            stop.set()
            frames = []
            while (frame := await ws.next_frame(timeout=10)) is not None:
                frames.append(frame)
                if frame[0] == CLOSE:
                    break
        assert any(b'"server_shutdown"' in p for op, p in frames if op == TEXT)
        assert frames[-1][0] == CLOSE
        assert int.from_bytes(frames[-1][1][:2], "big") == 4009


@pytest.mark.parametrize("transport", WS_TRANSPORTS)
async def test_e2e_shutdown_with_a_client_that_stopped_reading_is_bounded(
    transport: str,
) -> None:
    """A WebSocket client that stopped reading costs shutdown about send_timeout, not
    send_timeout for its last frames and again for a close handshake it never answers
    (it took 19 s with a 10 s send_timeout)."""
    # More than loopback's socket buffers hold, so that the server's writes block.
    config = attrs.evolve(
        QUICK, send_timeout=3.0, buffer_bytes=32 * 1024 * 1024, buffer_messages=100_000
    )
    stop, took = trio.Event(), []
    async with trio.open_nursery() as outer:
        server = await outer.start(stoppable_server, transport, firehose, config, stop, took)
        async with await RawWebSocket.connect(server.url) as ws:
            ws.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await ws.send_frame(TEXT, b'{"type":"hello","v":1}')
            await ws.next_frame()
            # The server's writes fill the socket buffers (we read no more) and block, for
            # less than send_timeout when the server stops.
            await trio.sleep(0.5)
            stop.set()
            with trio.fail_after(30):
                while not took:  # noqa: ASYNC110 - waits for the server task to finish
                    await trio.sleep(0.05)
        assert took[0] < config.send_timeout + 1.5, f"shutdown took {took[0]:.1f} s"
        outer.cancel_scope.cancel()
