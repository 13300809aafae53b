"""The in-memory channel pair and the fault-injecting wrapper."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from statesession import ChannelBrokenError, ChannelClosedError, FrameTooLargeError
from statesession.testing import FaultyChannel, memory_channel_pair


async def test_memory_pair_moves_frames_in_order_both_ways() -> None:
    """A memory channel pair delivers frames in order in both directions."""
    server, client = memory_channel_pair()
    for i in range(10):
        await client.send(f"c{i}")
        await server.send(f"s{i}")
    assert [await server.receive() for _ in range(10)] == [f"c{i}" for i in range(10)]
    assert [await client.receive() for _ in range(10)] == [f"s{i}" for i in range(10)]


async def test_memory_pair_closed_by_this_side_vs_broken_by_the_peer() -> None:
    """aclose() makes this side's calls ChannelClosedError; the peer sees the frames sent
    before the close, then ChannelBrokenError."""
    server, client = memory_channel_pair()
    await client.send("last words")
    await client.aclose()
    await client.aclose()  # idempotent
    with pytest.raises(ChannelClosedError):
        await client.send("x")
    with pytest.raises(ChannelClosedError):
        await client.receive()
    assert await server.receive() == "last words"
    with pytest.raises(ChannelBrokenError) as info:
        await server.receive()
    assert info.value.__cause__ is not None
    with pytest.raises(ChannelBrokenError):
        await server.send("anyone?")


async def test_memory_pair_cut_breaks_both_ends_and_loses_frames_in_flight() -> None:
    """cut() breaks both ends with ChannelBrokenError (cut) and loses a frame still in flight."""
    server, client = memory_channel_pair()
    await client.send("in flight")
    client.cut()
    with pytest.raises(ChannelBrokenError, match="cut"):
        await server.receive()
    with pytest.raises(ChannelBrokenError, match="cut"):
        await client.send("x")


async def test_memory_pair_cut_wakes_a_blocked_receive() -> None:
    """cut() wakes a receive blocked on the other end with ChannelBrokenError."""
    server, client = memory_channel_pair()

    async def cut_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        client.cut()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cut_soon)
        with pytest.raises(ChannelBrokenError):
            await server.receive()


async def test_memory_pair_send_waits_when_the_peer_stops_reading(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With buffer=2 frames unread, the next send waits."""
    _server, client = memory_channel_pair(buffer=2)
    await client.send("1")
    await client.send("2")
    with trio.move_on_after(1) as waited:
        await client.send("3")
    assert waited.cancelled_caught


async def test_memory_pair_receive_enforces_max_frame() -> None:
    """A frame over max_frame raises FrameTooLargeError on receive with its UTF-8 size and the
    limit."""
    server, client = memory_channel_pair(max_frame=10)
    await client.send("é" * 6)  # 12 bytes
    with pytest.raises(FrameTooLargeError) as info:
        await server.receive()
    assert (info.value.size, info.value.limit) == (12, 10)


def test_memory_pair_rejects_a_bad_buffer() -> None:
    """A negative buffer is a ValueError; an unbounded one (math.inf) is accepted."""
    with pytest.raises(ValueError, match="buffer"):
        memory_channel_pair(buffer=-1)
    memory_channel_pair(buffer=math.inf)


async def test_faulty_cut_after_counts_frames_both_ways() -> None:
    """FaultyChannel(cut_after=3) cuts after the third frame either way: the next send fails and
    frames in flight are lost."""
    server, client = memory_channel_pair()
    faulty = FaultyChannel(client, cut_after=3)
    await faulty.send("a")
    await server.send("b")
    assert await faulty.receive() == "b"
    await faulty.send("c")
    assert faulty.is_cut
    with pytest.raises(ChannelBrokenError):
        await faulty.send("d")
    with pytest.raises(ChannelBrokenError):  # "a" and "c" were in flight: lost
        await server.receive()


async def test_faulty_drop_and_delay(autojump_clock: trio.testing.MockClock) -> None:
    """FaultyChannel drops the frames drop matches, both ways, and delivers the others it sends
    after delay seconds."""
    server, client = memory_channel_pair()
    faulty = FaultyChannel(client, drop=lambda f: f.startswith("x"), delay=0.5)
    await faulty.send("x-dropped")
    await faulty.send("kept")
    assert await server.receive() == "kept"
    assert trio.current_time() == pytest.approx(0.5)
    await server.send("x-also-dropped")
    await server.send("seen")
    assert await faulty.receive() == "seen"


async def test_faulty_silence_drops_everything_without_closing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After silence() a FaultyChannel drops every frame both ways without closing: receives on
    either end just wait."""
    server, client = memory_channel_pair()
    faulty = FaultyChannel(client)
    faulty.silence()
    await faulty.send("lost")
    await server.send("also lost")
    with trio.move_on_after(5) as waited:
        await faulty.receive()
    assert waited.cancelled_caught
    with trio.move_on_after(5) as waited:
        await server.receive()
    assert waited.cancelled_caught


async def test_faulty_cut_wakes_pending_operations() -> None:
    """FaultyChannel.cut() wakes its own blocked receive with ChannelBrokenError and breaks the
    other end too."""
    server, client = memory_channel_pair()
    faulty = FaultyChannel(client)

    async def cut_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        faulty.cut()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cut_soon)
        with pytest.raises(ChannelBrokenError):
            await faulty.receive()
    with pytest.raises(ChannelBrokenError):
        await server.receive()


async def test_memory_pair_abort_closes_this_end_and_breaks_the_peer() -> None:
    """abort() closes this end at once (ChannelClosedError here), loses frames in
    flight, and the peer's receive and send raise ChannelBrokenError saying it was
    reset."""
    server, client = memory_channel_pair()
    await client.send("in flight")
    await client.abort()
    await client.abort()  # idempotent
    with pytest.raises(ChannelClosedError):
        await client.receive()
    with pytest.raises(ChannelClosedError):
        await client.send("x")
    with pytest.raises(ChannelBrokenError, match="reset"):
        await server.receive()
    with pytest.raises(ChannelBrokenError, match="reset"):
        await server.send("anyone?")
    await server.aclose()


async def test_faulty_abort_aborts_the_inner_channel() -> None:
    """A FaultyChannel's abort() aborts the channel it wraps, so the peer sees a reset."""
    server, client = memory_channel_pair()
    faulty = FaultyChannel(client)
    await faulty.abort()
    with pytest.raises(ChannelClosedError):
        await faulty.receive()
    with pytest.raises(ChannelBrokenError, match="reset"):
        await server.receive()
