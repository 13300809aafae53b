"""Exactly once, in order, across many cuts: 10,000 messages each way through a channel
that is cut every ~50 frames."""

from __future__ import annotations

import random

import trio
import trio.testing

import statesession
from statesession import Channel
from statesession.testing import FaultyChannel, memory_channel_pair

COUNT = 10_000


async def test_resume_ten_thousand_each_way_through_cuts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """0 lost, 0 duplicated, order kept, both ways, with a cut every 40-60 frames."""
    rng = random.Random(1234)
    app_received: list[int] = []
    app_done = trio.Event()
    cuts: list[FaultyChannel] = []

    async def app(session: statesession.Session) -> None:
        async def produce() -> None:
            for i in range(COUNT):
                await session.send(i)

        session.start_soon(produce)
        async for message in session:
            app_received.append(message.data)
            if len(app_received) == COUNT:
                app_done.set()

    async with trio.open_nursery() as nursery, statesession.open_manager(app) as manager:

        async def connect() -> Channel:
            server, client = memory_channel_pair()
            nursery.start_soon(manager.serve_channel, server)
            faulty = FaultyChannel(client, cut_after=rng.randint(40, 60))
            cuts.append(faulty)
            return faulty

        client_received: list[int] = []
        async with statesession.open_client(connect) as client:

            async def produce() -> None:
                for i in range(COUNT):
                    await client.send(i)

            async with trio.open_nursery() as inner:
                inner.start_soon(produce)
                while len(client_received) < COUNT:
                    client_received.append(await client.receive())
                with trio.fail_after(60):
                    await app_done.wait()
            session = manager.sessions[client.session_id or ""]
            assert session.statistics().received_messages == COUNT

    assert client_received == list(range(COUNT))
    assert app_received == list(range(COUNT))
    assert sum(c.is_cut for c in cuts) >= 200, "the channel was not cut often enough"
