"""After a resume, a client sends again only what the server did not receive, and a
resend the server did receive never stops the server from reading the connection: the
acks behind it are read, so an app waiting on them goes on. Over real TCP on 127.0.0.1
(and memory channels for the frame-exact case)."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

import statesession
from statesession import SessionConfig
from statesession_tcp import TcpChannel

from ..helpers import serving

BIG = 450_000  # two of these fit in the default inbox_bytes (1 MiB) together
REPLIES = 60


def replying_app(done: trio.Event) -> Any:
    """Takes one message, then sends replies that need the client's acks (a small replay
    buffer), and only then takes the rest of its inbox."""

    async def app(session: statesession.Session) -> None:
        await session.receive()
        for i in range(REPLIES):
            await session.send(i)
        done.set()
        async for _ in session:
            pass

    return app


class Recording(TcpChannel):
    """A TCP channel that keeps the ``msg`` seqs its client sent."""

    sent: list[int]

    async def send(self, text: str | bytes) -> None:
        if text.startswith('{"type":"msg"' if isinstance(text, str) else b'{"type":"msg"'):
            self.sent.append(json.loads(text)["seq"])
        await super().send(text)


async def test_client_resends_only_what_the_server_did_not_receive() -> None:
    """Cut after the server received three messages the app had not taken: the resumed
    client sends none of them again, and the app's replies all get through."""
    config = SessionConfig(buffer_messages=4, heartbeat_interval=1, heartbeat_timeout=3)
    done = trio.Event()
    async with (
        statesession.open_manager(replying_app(done), config=config) as manager,
        trio.open_nursery() as nursery,
    ):
        url = await nursery.start(statesession.serve, manager, "tcp://127.0.0.1:0")
        host, port = url.removeprefix("tcp://").split(":")
        channels: list[Recording] = []

        async def connect() -> statesession.Channel:
            stream = await trio.open_tcp_stream(host, int(port))
            channel = Recording(stream, max_frame=config.max_frame)
            channel.sent = []
            channels.append(channel)
            return channel

        async with statesession.open_client(connect) as client:
            got: list[Any] = []

            async def read() -> None:
                async for data in client:
                    got.append(data)

            nursery.start_soon(read)
            for data in ("first", "x" * BIG, "y" * BIG):
                await client.send(data)
            (session,) = manager.sessions.values()
            (cursor,) = session._delivery.clients.values()
            with trio.fail_after(10):
                while cursor.received < 3:  # noqa: ASYNC110 - polls the server
                    await trio.sleep(0.01)
            await channels[-1].abort()  # the network drops the connection
            with trio.fail_after(30):
                await done.wait()
                while len(got) < REPLIES:  # noqa: ASYNC110 - polls the reader
                    await trio.sleep(0.01)
            assert got == list(range(REPLIES))
            assert len(channels) >= 2
            assert [seq for channel in channels[1:] for seq in channel.sent] == []
        nursery.cancel_scope.cancel()


async def test_server_reads_on_past_a_large_resend_when_the_inbox_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client whose share of the inbox is full resends a large message the server has
    received: it is dropped and acknowledged again, and the acks behind it are read, so
    the app's replies waiting on them get through."""
    config = SessionConfig(buffer_messages=4, heartbeat_interval=10, heartbeat_timeout=30)
    done = trio.Event()
    async with serving(replying_app(done), config=config) as served:
        peer, welcome = await served.new_session()
        for seq, data in ((1, "first"), (2, "x" * BIG), (3, "y" * BIG)):
            await peer.send({"type": "msg", "seq": seq, "data": data})
        await trio.testing.wait_all_tasks_blocked()
        again = await served.peer()
        resumed = await again.hello(
            session=welcome["session"],
            token=welcome["token"],
            client=welcome["client"],
            resume=True,
            ack=0,
        )
        assert resumed["received"] == 3
        await again.send({"type": "msg", "seq": 3, "data": "y" * BIG})  # a resend
        seen = 0
        while seen < REPLIES:
            frame = await again.receive()
            if frame["type"] == "msg":
                seen = frame["seq"]
                await again.send({"type": "ack", "seq": seen})
        with trio.fail_after(5):
            await done.wait()
