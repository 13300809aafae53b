"""Every transport passes the public conformance suite, over real 127.0.0.1 sockets."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from statesession import Channel, SessionConfig, Transport, load_transport
from statesession.testing import (
    CONFORMANCE_CHECKS,
    FaultyChannel,
    MemoryChannel,
    OpenPair,
    _conformance,
    check_channel_pair,
    check_transport,
)
from statesession_tcp import TcpChannel

from ..network import MAX_FRAME, pair_opener, scheme_of

TRANSPORTS = ["memory", "websocket", "websockets", "tcp"]


@pytest.mark.parametrize("check", sorted(CONFORMANCE_CHECKS))
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_transport_conformance(transport: str, check: str) -> None:
    """Each transport passes every check of the conformance suite."""
    await CONFORMANCE_CHECKS[check](pair_opener(transport), MAX_FRAME)


async def test_transport_conformance_suite_runs_whole() -> None:
    """check_channel_pair runs every check (on the in-memory twin, quickly)."""
    await check_channel_pair(pair_opener("memory"), max_frame=MAX_FRAME)


async def test_transport_conformance_catches_a_lossy_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The suite fails a channel that loses a frame: it is not a suite that cannot fail."""
    monkeypatch.setattr(_conformance, "STEP", 0.5)
    opener = pair_opener("memory")
    seen = iter(range(10**9))

    @asynccontextmanager
    async def lossy() -> AsyncIterator[tuple[Channel, Channel]]:
        async with opener() as (a, b):
            yield a, FaultyChannel(b, drop=lambda frame: next(seen) == 5)

    with pytest.raises(AssertionError, match="'ordering' failed: no frame arrived"):
        await check_channel_pair(lossy, max_frame=MAX_FRAME)


async def test_transport_conformance_peer_reset_catches_an_abort_that_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """peer_reset fails the memory twin when its abort() leaves the channel open: the
    check runs the twin's abort, it does not pass for want of one."""
    monkeypatch.setattr(_conformance, "STEP", 0.5)

    async def does_nothing(self: MemoryChannel) -> None:
        await trio.lowlevel.checkpoint()

    monkeypatch.setattr(MemoryChannel, "abort", does_nothing)
    with pytest.raises(AssertionError, match="receive on the first side after its abort"):
        await CONFORMANCE_CHECKS["peer_reset"](pair_opener("memory"), MAX_FRAME)


async def test_transport_conformance_peer_reset_catches_an_abort_that_closes_politely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """peer_reset fails a twin whose abort() only closes its own side's reading and
    writing, leaving the peer's receive waiting: the peer must see the connection end."""
    monkeypatch.setattr(_conformance, "STEP", 0.5)

    async def half(self: MemoryChannel) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()

    monkeypatch.setattr(MemoryChannel, "abort", half)
    with pytest.raises(AssertionError, match="the peer's receive after the first side's abort"):
        await CONFORMANCE_CHECKS["peer_reset"](pair_opener("memory"), MAX_FRAME)


def _unix_pair_opener(tmp_path: Path) -> OpenPair:
    """Channel pairs over the Unix-socket transport of docs/examples/unix_transport.py."""
    spec = importlib.util.spec_from_file_location(
        "unix_transport", Path(__file__).resolve().parents[2] / "docs/examples/unix_transport.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    transport = module.transport
    counter = iter(range(10**6))

    @asynccontextmanager
    async def open_pair() -> AsyncIterator[tuple[Channel, Channel]]:
        url = f"unix://{tmp_path}/{next(counter)}.sock"
        handed, taken = trio.open_memory_channel[Channel](1)
        done = trio.Event()

        async def handler(channel: Channel) -> None:
            await handed.send(channel)
            await done.wait()

        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: transport.serve(
                    handler,
                    url,
                    config=SessionConfig(max_frame=MAX_FRAME),
                    task_status=task_status,
                )
            )
            client = await transport.connect(url, nursery=nursery, max_frame=MAX_FRAME)
            server = await taken.receive()
            try:
                yield server, client
            finally:
                done.set()
                with trio.move_on_after(20):
                    await client.aclose()
                    await server.aclose()
                nursery.cancel_scope.cancel()

    return open_pair


@pytest.mark.parametrize("check", sorted(CONFORMANCE_CHECKS))
async def test_transport_conformance_of_the_documented_example_transport(
    tmp_path: Path, check: str
) -> None:
    """The Unix-socket transport written in docs/writing-a-transport.md passes each check
    of the suite."""
    await CONFORMANCE_CHECKS[check](_unix_pair_opener(tmp_path), MAX_FRAME)


@pytest.mark.parametrize("transport", ["websocket", "websockets", "tcp"])
async def test_transport_rules(transport: str) -> None:
    """serve reports a reachable URL, one failing connection does not stop the server,
    and connecting where nothing listens fails with the documented errors."""
    scheme = scheme_of(transport)
    await check_transport(load_transport(transport), f"{scheme}://127.0.0.1:0/")


async def test_transport_rules_catch_a_server_without_an_error_boundary() -> None:
    """check_transport fails a transport whose server dies with one handler's error."""

    class Fragile(Transport):
        name = "fragile"
        schemes = ("tcp",)
        default_port = 8766

        async def serve(  # type: ignore[override]
            self, handler, url, *, config, task_status=trio.TASK_STATUS_IGNORED
        ):
            async def on_connection(stream: trio.SocketStream) -> None:
                await handler(TcpChannel(stream, max_frame=config.max_frame))  # no boundary

            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, on_connection, listeners)
                task_status.started(f"tcp://127.0.0.1:{port}")

        async def connect(self, url, *, nursery, max_frame):  # type: ignore[no-untyped-def]
            return await load_transport("tcp").connect(url, nursery=nursery, max_frame=max_frame)

    with pytest.raises(AssertionError, match="serve ended when one connection's handler"):
        await check_transport(Fragile(), "tcp://127.0.0.1:0")
