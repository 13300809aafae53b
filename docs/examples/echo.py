"""An agent-like app served over in-memory channels, with a client that loses its
connection halfway and resumes without losing or repeating a word.

Run it: ``python docs/examples/echo.py``.
"""

import trio

import statesession
from statesession.testing import FaultyChannel, memory_channel_pair


async def agent(session: statesession.Session) -> None:
    """Answer every prompt with a few streamed tokens."""
    async for message in session:
        for word in f"you said {message.data}".split():
            await session.send({"token": word})


async def main() -> None:
    async with trio.open_nursery() as nursery, statesession.open_manager(agent) as manager:
        channels: list[FaultyChannel] = []

        async def connect() -> statesession.Channel:
            server_side, client_side = memory_channel_pair()
            nursery.start_soon(manager.serve_channel, server_side)
            channels.append(FaultyChannel(client_side))
            return channels[-1]

        async with statesession.open_client(connect) as client:
            await client.send("hello")
            print(await client.receive())  # {'token': 'you'}
            channels[-1].cut()  # the network fails mid-stream
            print(await client.receive())  # {'token': 'said'}: resumed, nothing lost
            print(await client.receive())  # {'token': 'hello'}
            print("reconnected", client.statistics().connects - 1, "time(s)")


if __name__ == "__main__":
    trio.run(main)
