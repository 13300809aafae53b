"""The ``websockets`` transport beyond the conformance suite: it interoperates with the
trio-websocket one, answers the WebSocket protocol's own frames (ping, fragments, a plain
HTTP request) without a task of its own, and writes a batch of frames at once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import TEXT, Frame
from websockets.http11 import Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

import statesession
from statesession import Channel, SessionConfig
from statesession.protocol import CLOSE_CODES
from statesession_websocket import WebsocketsChannel

from ..helpers import echo_app, examples, live_tasks
from ..network import net_server


@pytest.mark.parametrize(
    ("server", "client"), [("websockets", "websocket"), ("websocket", "websockets")]
)
async def test_either_websocket_transport_talks_to_the_other(server: str, client: str) -> None:
    """Either WebSocket transport's client talks to either's server: 50 messages, non-ASCII too,
    round-trip in order."""
    async with (
        net_server(server, echo_app) as served,
        statesession.open_client(served.url, transport=client) as session,
    ):
        for i in range(50):
            await session.send({"n": i, "pad": "é" * i})
        with trio.fail_after(10):
            got = [await session.receive() for _ in range(50)]
        assert got == [{"n": i, "pad": "é" * i} for i in range(50)]


@asynccontextmanager
async def served(
    handler: Callable[[Channel], Awaitable[None]], config: SessionConfig
) -> AsyncIterator[str]:
    """The ``websockets`` transport serving ``handler`` on 127.0.0.1; yields its URL."""
    transport = statesession.load_transport("websockets")
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: transport.serve(
                handler, "ws://127.0.0.1:0/", config=config, task_status=task_status
            )
        )
        yield url
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def frame_echo(max_frame: int = 65536) -> AsyncIterator[tuple[str, list[Channel]]]:
    """A ``websockets`` server that echoes every frame back, and its channels."""
    channels: list[Channel] = []

    async def handler(channel: Channel) -> None:
        channels.append(channel)
        try:
            while True:
                frame = await channel.receive()
                assert isinstance(frame, str)  # decoded once, by the transport
                await channel.send(frame)
        except statesession.ChannelError:
            pass

    config = SessionConfig(max_frame=max_frame, send_timeout=2.0, handshake_timeout=2.0)
    async with served(handler, config) as url:
        yield url, channels


@asynccontextmanager
async def held(config: SessionConfig) -> AsyncIterator[tuple[str, list[Channel]]]:
    """A ``websockets`` server that keeps each channel it accepts for the test to drive."""
    channels: list[Channel] = []

    async def handler(channel: Channel) -> None:
        channels.append(channel)
        await trio.sleep_forever()

    async with served(handler, config) as url:
        yield url, channels


async def first(channels: list[Channel]) -> Channel:
    """The first channel the server accepted, once it has."""
    with trio.fail_after(5):
        while not channels:  # noqa: ASYNC110 - the server's handler fills it
            await trio.sleep(0.01)
    return channels[0]


class RawClient:
    """A WebSocket client driven by hand: websockets' client protocol over a trio stream,
    for sending what neither transport sends (fragments, pings)."""

    def __init__(self, stream: trio.SocketStream, protocol: ClientProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self.events: list[Any] = []

    @classmethod
    async def open(cls, url: str) -> RawClient:
        uri = parse_uri(url)
        client = cls(await trio.open_tcp_stream(uri.host, uri.port), ClientProtocol(uri))
        client.protocol.send_request(client.protocol.connect())
        await client.flush()
        response = await client.next_event()
        assert isinstance(response, Response)
        assert response.status_code == 101
        return client

    async def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                await self.stream.send_all(data)

    async def next_event(self) -> Any:
        with trio.fail_after(5):
            while not self.events:
                data = await self.stream.receive_some(65536)
                if data:
                    self.protocol.receive_data(data)
                else:
                    self.protocol.receive_eof()
                self.events.extend(self.protocol.events_received())
                await self.flush()
                if not data and not self.events:
                    raise EOFError("the server closed the connection")
        return self.events.pop(0)


async def test_a_fragmented_message_is_received_whole() -> None:
    """A text message sent in three fragments is received, and echoed, whole."""
    async with frame_echo() as (url, _):
        client = await RawClient.open(url)
        client.protocol.send_text(b'{"greeting":"h', fin=False)
        client.protocol.send_continuation("é".encode(), fin=False)
        client.protocol.send_continuation(b'llo"}', fin=True)
        await client.flush()
        frame = await client.next_event()
        assert isinstance(frame, Frame)
        assert (frame.opcode, frame.fin) == (TEXT, True)
        assert frame.data.decode() == '{"greeting":"héllo"}'
        await client.stream.aclose()


async def test_a_ping_is_answered_by_the_receiving_task() -> None:
    """A WebSocket ping is answered while the channel is being read: there is no task of
    the transport's own to do it."""
    async with frame_echo() as (url, _):
        client = await RawClient.open(url)
        client.protocol.send_ping(b"are you there")
        await client.flush()
        pong = await client.next_event()
        assert isinstance(pong, Frame)
        assert pong.data == b"are you there"
        client.protocol.send_text(b'{"still":"works"}')
        await client.flush()
        echoed = await client.next_event()
        assert echoed.data == b'{"still":"works"}'
        await client.stream.aclose()


async def test_a_cancelled_receive_keeps_a_pong_and_the_frame_after_it() -> None:
    """Receives cancelled over and over while pings and frames arrive lose nothing."""
    async with held(SessionConfig(send_timeout=2.0)) as (url, channels):
        client = await RawClient.open(url)
        server = await first(channels)
        for i in range(20):
            client.protocol.send_ping(str(i).encode())
            client.protocol.send_text(f'{{"n":{i}}}'.encode())
        await client.flush()
        # Every receive is cancelled right after it read the socket, as it answers the
        # pings.
        protocol: Any = server.protocol  # type: ignore[attr-defined]
        receive_data = protocol.receive_data
        scopes: list[trio.CancelScope] = []

        def receive_then_cancel(data: bytes) -> None:
            receive_data(data)
            scopes[-1].cancel()

        protocol.receive_data = receive_then_cancel
        got: list[str | bytes] = []
        with trio.fail_after(10):
            while len(got) < 20:
                with trio.CancelScope() as scope:
                    scopes.append(scope)
                    got.append(await server.receive())
        assert got == [f'{{"n":{i}}}' for i in range(20)]
        pongs = [(await client.next_event()).data for _ in range(20)]
        assert pongs == [str(i).encode() for i in range(20)]
        await client.stream.aclose()


async def test_a_plain_http_request_is_answered_and_ends_only_itself() -> None:
    """A plain HTTP request gets a 4xx answer and ends only that connection; a WebSocket client
    still round-trips."""
    async with frame_echo() as (url, _):
        host, port = url.split("//")[1].rstrip("/").split(":")
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            with trio.fail_after(5):
                while data := await stream.receive_some(65536):
                    answer += data
        status = answer.split(b"\r\n", 1)[0]
        assert status.startswith(b"HTTP/1.1 4"), status
        client = await RawClient.open(url)
        client.protocol.send_text(b'{"bystander":"fine"}')
        await client.flush()
        assert (await client.next_event()).data == b'{"bystander":"fine"}'
        await client.stream.aclose()


async def test_send_many_writes_a_batch_at_once() -> None:
    """send_many writes a batch of 1000 frames with one write, and they all arrive in order."""
    transport = statesession.load_transport("websockets")
    async with frame_echo() as (url, _), trio.open_nursery() as nursery:
        channel = await transport.connect(url, nursery=nursery, max_frame=65536)
        stream: Any = channel.stream  # type: ignore[attr-defined]
        writes = 0
        send_all = stream.send_all

        async def counted(data: bytes) -> None:
            nonlocal writes
            writes += 1
            await send_all(data)

        stream.send_all = counted
        frames = [f'{{"n":{i}}}' for i in range(1000)]
        await channel.send_many(frames)
        assert writes == 1
        with trio.fail_after(10):
            got = [await channel.receive() for _ in frames]
        assert got == frames
        await channel.aclose()


async def test_an_idle_connection_holds_no_task() -> None:
    """The server side of a connection runs in the task that serves it, and in no other."""
    async with frame_echo() as (url, channels):
        await trio.testing.wait_all_tasks_blocked()
        before = len(live_tasks())
        clients = [await RawClient.open(url) for _ in range(5)]
        with trio.fail_after(5):
            while len(channels) < 5:  # noqa: ASYNC110 - polls the server
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert len(live_tasks()) - before == 5
        for client in clients:
            await client.stream.aclose()


def test_websocket_close_codes_are_the_protocol_tables() -> None:
    """Both WebSocket transports close with the protocol table's code for each error,
    and 1000 for a normal close."""
    import statesession_websocket

    assert statesession_websocket.CLOSE_CODES == {None: 1000, **CLOSE_CODES}


def test_importing_the_package_loads_no_websocket_library() -> None:
    """Either WebSocket transport loads without the other's library."""
    code = (
        "import sys, statesession_websocket as w; "
        "assert w.CLOSE_CODES['bad_token'] == 4004; "
        "print(sorted(m for m in ('trio_websocket', 'websockets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- property: framing, fragments and control frames, however the bytes are cut ------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("msg"), _text, st.integers(1, 4)),  # text, in how many fragments
        st.tuples(st.just("ping"), st.binary(max_size=20), st.just(1)),
    ),
    max_size=15,
)


def _fragments(data: bytes, parts: int) -> list[bytes]:
    size = max(1, -(-len(data) // parts))
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@settings(max_examples=examples(50), deadline=None)
@given(steps=_steps, cuts=st.lists(st.integers(1, 700), min_size=1, max_size=10))
def test_whatever_the_peer_sends_and_however_it_is_cut_arrives_whole(
    steps: list[tuple[str, Any, int]], cuts: list[int]
) -> None:
    """A client's messages -- whole or fragmented, with pings between them -- written in
    arbitrary pieces arrive whole and in order through a channel on a real socket pair;
    every ping is answered, in order; what the channel sends back arrives whole too."""

    async def main() -> None:
        server_sock, client_sock = trio.socket.socketpair()
        server_stream = trio.SocketStream(server_sock)
        client_stream = trio.SocketStream(client_sock)
        server = WebsocketsChannel(
            server_stream, ServerProtocol(state=State.OPEN, max_size=1 << 20), max_frame=1 << 20
        )
        client = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=State.OPEN)
        expected: list[str] = []
        pings: list[bytes] = []
        for kind_, value, parts in steps:
            if kind_ == "msg":
                data = value.encode()
                expected.append(value)
                pieces = _fragments(data, parts)
                if len(pieces) == 1:
                    client.send_text(pieces[0])
                else:
                    client.send_text(pieces[0], fin=False)
                    for piece in pieces[1:-1]:
                        client.send_continuation(piece, fin=False)
                    client.send_continuation(pieces[-1], fin=True)
            else:
                pings.append(value)
                client.send_ping(value)
        wire = b"".join(client.data_to_send())
        replies = [f'{{"n":{i}}}' for i in range(len(expected))]

        async def write() -> None:
            position, turn = 0, 0
            while position < len(wire):
                size = cuts[turn % len(cuts)]
                await client_stream.send_all(wire[position : position + size])
                position += size
                turn += 1
                await trio.lowlevel.checkpoint()

        got: list[str] = []

        async def read() -> None:  # as a connection does: always receiving
            while True:
                got.append(await server.receive())

        pongs: list[bytes] = []
        texts: list[str] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                nursery.start_soon(read)
                await server.send_many(replies)
                while len(pongs) < len(pings) or len(texts) < len(replies):
                    client.receive_data(await client_stream.receive_some(65536))
                    for event in client.events_received():
                        if event.opcode.name == "PONG":
                            pongs.append(event.data)
                        elif event.opcode.name == "TEXT":
                            texts.append(event.data.decode())
                while len(got) < len(expected):  # noqa: ASYNC110 - the reader fills it
                    await trio.sleep(0.001)
                nursery.cancel_scope.cancel()
        assert got == expected
        assert pongs == pings
        assert texts == replies
        await client_stream.aclose()  # (first: a server closing first lingers for its reply)
        await server.aclose()

    trio.run(main)


async def test_the_reply_to_a_close_goes_out_even_while_a_write_is_under_way() -> None:
    """The peer closes while this side's writer is stuck in a big write: receive reports
    the close only once that write (which carries the reply) is over, so the writer being
    cancelled next -- as a connection does when its reader ends -- loses no reply."""
    transport = statesession.load_transport("websockets")
    config = SessionConfig(max_frame=1 << 20, send_timeout=5.0)
    async with held(config) as (url, channels), trio.open_nursery() as nursery:
        client = await transport.connect(url, nursery=nursery, max_frame=1 << 20)
        server = await first(channels)
        with trio.fail_after(10):
            async with trio.open_nursery() as connection:
                writer = trio.CancelScope()

                async def write() -> None:
                    with writer:  # more than the socket buffers hold: it waits
                        await server.send_many(["x" * 500_000] * 16)

                async def read() -> None:
                    with pytest.raises(statesession.ChannelBrokenError, match="1000"):
                        await server.receive()
                    writer.cancel()  # the reader ended: so does the writer

                connection.start_soon(write)
                connection.start_soon(read)
                await trio.sleep(0.2)
                await client.aclose()  # reads what the server still sends, then its reply
        await server.aclose()
        close = client.protocol.close_rcvd  # type: ignore[attr-defined]
        assert close is not None
        assert close.code == 1000
        nursery.cancel_scope.cancel()
