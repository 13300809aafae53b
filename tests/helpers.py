"""Shared test helpers: a raw protocol peer, a served manager, the trio task tree, a
server subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import statesession
from statesession import Channel, SessionConfig
from statesession.testing import memory_channel_pair

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE: "ci" (the default, what the suite and
# CI run) and "thorough" (ten times the examples everywhere, for a long run before a
# release or after touching the delivery or lifecycle rules).
PROFILE_SCALE = {"ci": 1.0, "thorough": 10.0}


def hypothesis_profile() -> str:
    """The hypothesis profile this run uses (``HYPOTHESIS_PROFILE``, default ``ci``)."""
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    if name not in PROFILE_SCALE:
        raise ValueError(
            f"HYPOTHESIS_PROFILE={name!r} is not a profile; use one of {sorted(PROFILE_SCALE)}"
        )
    return name


def live_tasks() -> list[trio.lowlevel.Task]:
    """Every task alive in this trio run, found by walking the task tree from the root."""
    found: list[trio.lowlevel.Task] = []

    def walk(task: trio.lowlevel.Task) -> None:
        found.append(task)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return found


def examples(n: int) -> int:
    """``n`` hypothesis examples under the suite's profile, scaled by the profile in
    ``HYPOTHESIS_PROFILE`` (see ``tests/conftest.py``)."""
    return max(1, round(n * PROFILE_SCALE[hypothesis_profile()]))


def session_tasks(session_id: str) -> list[str]:
    """Names of the live tasks that belong to a session (they are named ``<id>:...``)."""
    return [t.name for t in live_tasks() if t.name.startswith(f"{session_id}:")]


class RawPeer:
    """A client that speaks the wire protocol frame by frame, for exact tests."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def send(self, frame: Any) -> None:
        await self.channel.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            return json.loads(await self.channel.receive())  # type: ignore[no-any-return]

    async def receive_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """Receive frames until one of type ``kind`` (answering pings on the way)."""
        while True:
            frame = await self.receive(timeout)
            if frame["type"] == kind:
                return frame
            if frame["type"] == "ping":
                await self.send({"type": "pong"})

    async def hello(self, **fields: Any) -> dict[str, Any]:
        await self.send({"type": "hello", "v": 1, **fields})
        return await self.receive()

    async def expect_closed(self, timeout: float = 5.0) -> None:
        """The server closes the channel (after whatever frames it still sends)."""
        with trio.fail_after(timeout):
            while True:
                try:
                    await self.channel.receive()
                except statesession.ChannelError:
                    return

    async def aclose(self) -> None:
        await self.channel.aclose()


class Served:
    """A manager with a way to open connections to it over memory channels."""

    def __init__(self, manager: statesession.SessionManager, nursery: trio.Nursery) -> None:
        self.manager = manager
        self.nursery = nursery
        self.server_channels: list[Channel] = []

    async def open_channel(self, **options: Any) -> Channel:
        server, client = memory_channel_pair(**options)
        self.server_channels.append(server)
        self.nursery.start_soon(self.manager.serve_channel, server)
        await trio.lowlevel.checkpoint()
        return client

    async def peer(self, **options: Any) -> RawPeer:
        return RawPeer(await self.open_channel(**options))

    async def new_session(self) -> tuple[RawPeer, dict[str, Any]]:
        peer = await self.peer()
        welcome = await peer.hello()
        assert welcome["type"] == "welcome", welcome
        return peer, welcome

    async def resume(
        self, welcome: dict[str, Any], ack: int = 0, **fields: Any
    ) -> tuple[RawPeer, dict[str, Any]]:
        """A new connection saying hello as the client ``welcome`` was for, coming back
        (``fields`` override the hello's: a wrong token, another client, no resume)."""
        peer = await self.peer()
        hello = {
            "session": welcome["session"],
            "token": welcome["token"],
            "client": welcome["client"],
            "resume": True,
            "ack": ack,
            **fields,
        }
        return peer, await peer.hello(**hello)


async def echo_app(session: statesession.Session) -> None:
    async for message in session:
        await session.send(message.data)


@asynccontextmanager
async def serving(
    app: Callable[[statesession.Session], Awaitable[object]] = echo_app,
    *,
    config: SessionConfig | None = None,
    **options: Any,
) -> AsyncIterator[Served]:
    async with (
        trio.open_nursery() as nursery,
        statesession.open_manager(app, config=config, **options) as manager,
    ):
        yield Served(manager, nursery)


async def start_server(*args: str, cwd: Path | None = None) -> tuple[trio.Process, str, list[str]]:
    """Run ``python -m statesession serve ...``; return it, its URL, and its log lines."""
    env = dict(os.environ)
    if cwd is not None:
        env["PYTHONPATH"] = str(cwd)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "statesession", "serve", "--port", "0", *args],
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
    )
    assert process.stderr is not None
    buffer = b""
    with trio.fail_after(20):
        while not (found := re.search(rb"serving (\S+)", buffer)):
            chunk = await process.stderr.receive_some()
            assert chunk, "server exited before serving: " + buffer.decode()
            buffer += chunk
    return process, found[1].decode(), buffer.decode().splitlines()


async def read_rest(process: trio.Process, lines: list[str]) -> list[str]:
    assert process.stderr is not None
    rest = b""
    while chunk := await process.stderr.receive_some():
        rest += chunk
    return lines + rest.decode().splitlines()
