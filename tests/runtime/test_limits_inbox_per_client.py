"""The inbox's bounds hold per client: clients that each keep within the announced window
never stop one another's reading, and an ack is read even when a client's share is full."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import statesession
from statesession import SessionConfig

from ..client.test_client import connector
from ..helpers import serving

CONFIG = SessionConfig(
    inbox_messages=1,
    buffer_messages=1,
    heartbeat_interval=10,
    heartbeat_timeout=30,
    reconnect_window=60,
)


async def test_two_clients_within_the_bounds_do_not_stall_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two clients that each keep within the announced inbox bounds both get the app's
    second message promptly, and neither is dropped and reconnected."""
    go = trio.Event()

    async def app(session: statesession.Session) -> None:
        await go.wait()
        await session.send("x")  # fills the replay buffer (buffer_messages=1)
        await session.send("y")  # waits for both clients' acks of "x"
        async for _ in session:
            pass

    async with serving(app, config=CONFIG) as served:
        connect, _ = connector(served)
        async with statesession.open_client(connect) as a:
            assert a.session_id is not None
            assert a.token is not None
            async with statesession.open_client(connect, session=a.session_id, token=a.token) as b:
                await a.send("from a")  # one unacknowledged message each: within bounds
                await b.send("from b")
                await trio.testing.wait_all_tasks_blocked()
                go.set()
                got: dict[str, list[Any]] = {"a": [], "b": []}
                with trio.move_on_after(5):
                    async with trio.open_nursery() as nursery:

                        async def take(name: str, client: statesession.Client) -> None:
                            for _ in range(2):
                                got[name].append(await client.receive())

                        nursery.start_soon(take, "a", a)
                        nursery.start_soon(take, "b", b)
                connects = (a.statistics().connects, b.statistics().connects)
    assert got == {"a": ["x", "y"], "b": ["x", "y"]}, got
    assert connects == (1, 1)


async def test_one_client_filling_its_window_can_still_ack(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A single open_client that fills exactly its announced window (inbox_messages
    unacknowledged messages, which send() allows) can still deliver its acks: the server
    reads an ack frame even when the inbox is at its bound, so an app whose send waits for
    that ack is not stalled (here the reader stops before decoding any frame once the inbox
    holds inbox_messages, acks and pongs included, until the heartbeat drops the client)."""
    go = trio.Event()

    async def app(session: statesession.Session) -> None:
        await go.wait()
        await session.send("x")
        await session.send("y")  # waits for the client's ack of "x"
        async for _ in session:
            pass

    config = SessionConfig(
        inbox_messages=2, buffer_messages=1, heartbeat_interval=10, heartbeat_timeout=30
    )
    async with serving(app, config=config) as served:
        connect, _ = connector(served)
        async with statesession.open_client(connect) as client:
            await client.send(1)
            await client.send(2)  # two unacknowledged: exactly the window announced
            await trio.testing.wait_all_tasks_blocked()
            go.set()
            got: list[Any] = []
            with trio.move_on_after(5):
                for _ in range(2):
                    got.append(await client.receive())
            connects = client.statistics().connects
    assert got == ["x", "y"], got
    assert connects == 1
