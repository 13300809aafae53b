"""What one connection can make the server hold is bounded, in count and in bytes, and
one connection cannot starve the others: the inbox, decoded data, control replies, bad
frames and their log lines, anonymous sessions and the store."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
import trio.testing

import statesession
from statesession import Channel, MemoryStore, ProtocolError, SessionConfig
from statesession._core.shape import MAX_DEPTH, MAX_VALUES
from statesession.protocol import decode_client_frame
from statesession.testing import MemoryChannel, memory_channel_pair

from ..helpers import RawPeer, Served, serving


async def never_takes(session: statesession.Session) -> None:
    await trio.sleep_forever()


async def only_connection(served: Served) -> Any:
    await trio.testing.wait_all_tasks_blocked()
    (session,) = served.manager.sessions.values()
    (connection,) = session._connections
    return session, connection


# -- decoded data --------------------------------------------------------------------


@pytest.mark.parametrize("element", ["[]", "{}", "0", '"ab"'])
def test_decode_refuses_a_frame_holding_too_many_values(element: str) -> None:
    """A frame holding more than MAX_VALUES JSON values (what makes 1 MiB of `[[],...]`
    decode to 21 MiB) is a bad frame naming the limit."""
    data = "[" + ",".join([element] * (MAX_VALUES + 1)) + "]"
    with pytest.raises(ProtocolError, match=f"the limit is {MAX_VALUES}") as caught:
        decode_client_frame(f'{{"type":"msg","seq":1,"data":{data}}}', max_frame=1 << 24)
    assert caught.value.code == "bad_frame"


def test_decode_takes_many_values_in_text() -> None:
    """Separators inside strings are not values: a long text full of commas decodes."""
    text = json.dumps("a, b: [c], {d}, " * 20000)
    frame = decode_client_frame(f'{{"type":"msg","seq":1,"data":{text}}}', max_frame=1 << 24)
    assert isinstance(frame.data, str)  # type: ignore[union-attr]


def test_decode_refuses_nesting_deeper_than_the_limit() -> None:
    """A frame nesting deeper than MAX_DEPTH is a bad frame naming the limit; one at the
    limit decodes."""
    # The frame itself is one level: its data may nest MAX_DEPTH - 1 more.
    ok = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    decode_client_frame(f'{{"type":"msg","seq":1,"data":{ok}}}', max_frame=1 << 20)
    deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    with pytest.raises(ProtocolError, match=f"the limit is {MAX_DEPTH}"):
        decode_client_frame(f'{{"type":"msg","seq":1,"data":{deep}}}', max_frame=1 << 20)


# -- the inbox -----------------------------------------------------------------------


async def test_inbox_is_bounded_in_bytes(autojump_clock: trio.testing.MockClock) -> None:
    """An app that does not take messages holds at most inbox_bytes of them (plus one):
    past that the connection is not read, and nothing is lost."""
    config = SessionConfig(inbox_bytes=64 * 1024)
    async with serving(never_takes, config=config) as served:
        peer = await served.peer(buffer=1000)
        await peer.hello()
        for seq in range(1, 201):
            await peer.send({"type": "msg", "seq": seq, "data": "x" * 1000})
        session, connection = await only_connection(served)
        held = connection.cursor.queued_bytes
        assert held <= config.inbox_bytes + 2000
        assert len(session._incoming) < 100


async def test_inbox_counts_what_decoding_costs(autojump_clock: trio.testing.MockClock) -> None:
    """A message dense in values counts for what it costs decoded, not for its bytes on
    the wire: a few of them fill the inbox."""
    config = SessionConfig(inbox_bytes=1024 * 1024)
    dense = [[] for _ in range(30000)]  # 90 KB on the wire, about 2 MB decoded
    async with serving(never_takes, config=config) as served:
        peer = await served.peer(buffer=100)
        await peer.hello()
        for seq in range(1, 21):
            await peer.send({"type": "msg", "seq": seq, "data": dense})
        session, _ = await only_connection(served)
        assert len(session._incoming) <= 1


# -- control replies, bad frames, fairness -------------------------------------------


async def test_pongs_to_a_peer_that_does_not_read_are_coalesced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ten thousand pings from a peer that reads nothing queue at most one pong."""
    async with serving() as served:
        server_side, client_side = memory_channel_pair(buffer=20000)
        served.nursery.start_soon(served.manager.serve_channel, server_side)
        peer = RawPeer(client_side)
        await peer.hello()
        for _ in range(10000):
            await client_side.send('{"type":"ping"}')
        _, connection = await only_connection(served)
        assert len(connection._control or ()) <= 2


async def test_a_flood_of_bad_frames_closes_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer sending bad frame after bad frame is cut off after a few (with a fatal
    error saying why), instead of being answered for ever; a bystander is untouched."""
    async with serving() as served:
        bystander, _ = await served.new_session()
        peer, _ = await served.new_session()
        for _ in range(1000):
            await peer.send("{not json")
        frames = []
        with trio.move_on_after(10):
            while True:
                try:
                    frames.append(await peer.receive())
                except statesession.ChannelError:
                    break
        errors = [f for f in frames if f["type"] == "error"]
        assert len(errors) < 100
        assert errors[-1]["fatal"] is True
        assert "bad frames" in errors[-1]["message"]
        await bystander.send({"type": "msg", "seq": 1, "data": "hi"})
        assert (await bystander.receive_type("msg"))["data"] == "hi"


async def test_bad_frame_log_lines_are_rate_limited(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad frames from many connections write a bounded number of log lines, then say how
    many were left out."""
    caplog.set_level(logging.INFO, logger="statesession")
    async with serving() as served:
        for _ in range(50):
            peer, _ = await served.new_session()
            for _ in range(5):
                await peer.send("{not json")
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(2)
        for _ in range(5):
            await peer.send("{not json")
        await trio.testing.wait_all_tasks_blocked()
    lines = [r.getMessage() for r in caplog.records if "bad frame" in r.getMessage()]
    assert len(lines) < 60
    assert any("left out" in line for line in lines)


class BurstChannel(Channel):
    """A channel holding many frames already read, handed out without a checkpoint (as
    a stream transport does with what one read returned)."""

    def __init__(self, inner: MemoryChannel, frames: list[str]) -> None:
        self.inner = inner
        self.frames = frames

    async def send(self, frame: str) -> None:
        await self.inner.send(frame)

    async def receive(self) -> str | bytes:
        if self.frames:
            return self.frames.pop(0)
        return await self.inner.receive()

    async def aclose(self, error: str | None = None) -> None:
        await self.inner.aclose()


async def test_a_burst_of_frames_does_not_starve_other_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A connection working through thousands of frames it received at once lets the
    other tasks run in between."""
    turns = 0
    done = False

    async def other() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with serving() as served:
        server_side, _ = memory_channel_pair(buffer=100000)
        hello = '{"type":"hello","v":1}'
        burst = BurstChannel(server_side, [hello] + ['{"type":"pong"}'] * 3200)
        await served.nursery.start(_serve_started, served, burst)
        served.nursery.start_soon(other)
        while burst.frames:
            await trio.lowlevel.checkpoint()
        done = True
        assert turns >= 3200 // 64


async def _serve_started(
    served: Served, channel: Channel, task_status: trio.TaskStatus[None]
) -> None:
    task_status.started()
    await served.manager.serve_channel(channel)


# -- anonymous sessions and the store ------------------------------------------------


async def test_store_quota_ends_sessions_it_cannot_keep(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With the store at max_stored_sessions, a session whose window expires is ended
    instead of saved; the store holds no more than the quota."""
    store = MemoryStore()
    config = SessionConfig(max_stored_sessions=3, reconnect_window=5)
    async with serving(config=config, store=store) as served:
        for _ in range(5):
            peer, _ = await served.new_session()
            assert isinstance(peer.channel, MemoryChannel)
            peer.channel.cut()
        await trio.sleep(10)
        assert len(served.manager) == 0
    assert store.statistics().snapshots == 3
    records = await store.sessions()
    assert sorted(r.state for r in records) == ["passivated"] * 3 + ["terminated"] * 2


async def test_anonymous_sessions_per_peer_are_rate_limited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One peer address creating anonymous sessions as fast as it can is refused past
    peer_session_burst, with session_limit naming the rule; another peer is not, and the
    first gets room back as time passes."""
    config = SessionConfig(peer_session_rate=2.0, peer_session_burst=5)
    async with serving(config=config) as served:
        answers = []
        for _ in range(8):
            peer = await served.peer(peer_address="192.0.2.7")
            answers.append(await peer.hello())
        kinds = [a["type"] for a in answers]
        assert kinds == ["welcome"] * 5 + ["error"] * 3
        assert answers[-1]["code"] == "session_limit"
        assert "peer_session_rate" in answers[-1]["message"]
        other = await served.peer(peer_address="192.0.2.8")
        assert (await other.hello())["type"] == "welcome"
        await trio.sleep(1)
        again = await served.peer(peer_address="192.0.2.7")
        assert (await again.hello())["type"] == "welcome"


async def test_authenticated_sessions_are_not_rate_limited_per_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With an authenticate hook the per-principal limit applies instead; the per-peer
    rate is for anonymous sessions."""
    config = SessionConfig(peer_session_rate=1.0, peer_session_burst=1)
    async with serving(config=config, authenticate=lambda auth: str(auth)) as served:
        for n in range(5):
            peer = await served.peer(peer_address="192.0.2.7")
            assert (await peer.hello(auth=f"user{n}"))["type"] == "welcome"


async def test_open_client_keeps_within_the_servers_inbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The welcome says how much the session's inbox holds, and open_client keeps its
    unacknowledged messages within it: large messages to an echo app whose replies wait
    on acks never make the server stop reading the client (which would stall both)."""
    config = SessionConfig(inbox_bytes=256 * 1024, buffer_bytes=1024 * 1024)

    async def echo(session: statesession.Session) -> None:
        async for message in session:
            await session.send(message.data)

    payload = "x" * 50_000
    async with serving(echo, config=config) as served:

        async def connect() -> Channel:
            return await served.open_channel()

        async with statesession.open_client(connect) as client:
            received = 0

            async def read() -> None:
                nonlocal received
                while received < 100:
                    assert await client.receive() == payload
                    received += 1

            with trio.fail_after(100):  # virtual time: a stall waits for ever
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    for _ in range(100):
                        await client.send(payload)
            assert client._state.inbox_bytes == config.inbox_bytes
