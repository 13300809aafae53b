"""A client resumed from a new process numbers on from what the server received, so its
messages are never dropped as duplicates of the old process's."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import statesession
from statesession import SessionConfig

from ..client.test_client import connector
from ..helpers import serving


async def test_new_process_messages_are_not_dropped_as_duplicates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every message the new process sends reaches the application, after the old
    process's messages the server already held."""
    taken: list[Any] = []
    take = trio.Semaphore(0)

    async def app(session: statesession.Session) -> None:
        while True:
            await take.acquire()
            taken.append((await session.receive()).data)

    async with serving(app, config=SessionConfig(reconnect_window=60)) as served:
        old, welcome = await served.new_session()
        for seq in (1, 2, 3):
            await old.send({"type": "msg", "seq": seq, "data": f"old {seq}"})
        take.release()  # the app takes "old 1" only
        await trio.testing.wait_all_tasks_blocked()
        await old.aclose()  # the old process dies; "old 2" and "old 3" wait in the inbox
        await trio.testing.wait_all_tasks_blocked()

        connect, _ = connector(served)
        async with statesession.open_client(
            connect,
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
        ) as client:
            await client.send("new")
            for _ in range(3):
                take.release()
            with trio.move_on_after(10):
                while len(taken) < 4:  # noqa: ASYNC110 - polls what the app took
                    await trio.sleep(0.1)
            pending = client.statistics().pending
    assert taken == ["old 1", "old 2", "old 3", "new"], (taken, pending)
