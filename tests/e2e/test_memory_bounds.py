"""A real server's memory stays within its documented bounds when clients send the frames
that amplify most when decoded (docs/operating.md, "What a client can make the server
hold"): measured as the server process's resident set, over real TCP."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import trio

from statesession._core.shape import MAX_VALUES
from statesession_tcp import FrameDecoder, encode_frame

from ..helpers import start_server
from ..network import RawWebSocket

MiB = 1024 * 1024
#: Documented: a session whose app takes nothing holds about inbox_bytes (1 MiB) plus
#: one largest message decoded; a connection's transport also holds up to one frame it
#: is reading. The test allows that per connection, plus a little for the allocator.
PER_CONNECTION = 8 * MiB
CONNECTIONS = 8

APP = """
import trio

async def main(session):
    await trio.sleep_forever()  # takes no message: everything sent piles up
"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def connect(url: str) -> trio.SocketStream:
    host, port = url.split("//")[1].rstrip("/").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(encode_frame('{"type":"hello","v":1}'))
    decoder = FrameDecoder(MiB)
    while (frame := decoder.next_frame()) is None:
        decoder.feed(await stream.receive_some(65536))
    assert json.loads(frame)["type"] == "welcome"
    return stream


async def flood(stream: trio.SocketStream, frames: list[bytes]) -> None:
    """Send as much as the server reads; stop when it stops reading (or closes)."""
    for frame in frames:
        with trio.move_on_after(3):
            try:
                await stream.send_all(frame)
            except trio.BrokenResourceError:
                return
            continue
        return  # the server stopped reading: its inbox is full


def msg(seq: int, data: str) -> bytes:
    return encode_frame(f'{{"type":"msg","seq":{seq},"data":{data}}}')


async def measure(tmp_path: Path, frames: list[bytes]) -> int:
    (tmp_path / "takes_nothing.py").write_text(APP)
    process, url, _ = await start_server(
        "takes_nothing:main", "--transport", "tcp", "--store", "memory", cwd=tmp_path
    )
    try:
        streams = [await connect(url) for _ in range(CONNECTIONS)]
        await trio.sleep(0.5)
        before = rss(process.pid)
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(flood, stream, frames)
        await trio.sleep(1)
        grown = rss(process.pid) - before
        for stream in streams:
            await stream.aclose()
        return grown
    finally:
        process.terminate()
        await process.wait()


async def test_memory_frames_over_the_value_limit_are_refused_not_held(tmp_path: Path) -> None:
    """1 MiB frames of [[],[],...] (21 MiB each decoded) cost the server almost nothing:
    each is refused as a bad frame, and a flood of them closes the connection."""
    big = "[" + ",".join(["[]"] * (MiB // 3 - 1)) + "]"
    grown = await measure(tmp_path, [msg(seq, big) for seq in range(1, 31)])
    assert grown < CONNECTIONS * PER_CONNECTION, f"grew {grown / MiB:.0f} MiB"


async def test_memory_frames_just_under_the_limits_stay_bounded(tmp_path: Path) -> None:
    """Frames as amplifying as the limits allow ([{},...] with MAX_VALUES - 8 values,
    24 times their size decoded) pile up no further than the inbox's bound."""
    dense = "[" + ",".join(["{}"] * (MAX_VALUES - 8)) + "]"
    grown = await measure(tmp_path, [msg(seq, dense) for seq in range(1, 31)])
    assert grown < CONNECTIONS * PER_CONNECTION, f"grew {grown / MiB:.0f} MiB"


#: A fragmented text message as small as its parts can be: one 4-byte character each,
#: 250,000 of them (just under max_frame, 1 MiB), all but the last sent.
FRAGMENTS = 250_000
EMOJI = "\N{GRINNING FACE}".encode()


def fragments(count: int) -> bytes:
    """``count`` masked frames of a text message that never ends: TEXT, then CONTs."""
    mask = os.urandom(4)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(EMOJI))
    frame = struct.pack("!BB", 0x00, 0x80 | len(EMOJI)) + mask + payload  # CONT, fin=0
    first = struct.pack("!BB", 0x01, 0x80 | len(EMOJI)) + mask + payload  # TEXT, fin=0
    return first + frame * (count - 1)


@pytest.mark.parametrize("transport", ["websocket", "websockets"])
async def test_memory_a_message_in_tiny_fragments_holds_its_bytes_only(
    transport: str, tmp_path: Path
) -> None:
    """A text message sent in 250,000 one-character fragments, before any hello, makes
    the server hold about its bytes (1 MiB), not a Python object per fragment (some
    100 bytes each: 24 MiB)."""
    (tmp_path / "takes_nothing.py").write_text(APP)
    process, url, _ = await start_server(
        "takes_nothing:main",
        "--transport",
        transport,
        "--store",
        "memory",
        "--handshake-timeout",
        "120",
        cwd=tmp_path,
    )
    connections = 2
    try:
        sockets = [await RawWebSocket.connect(url) for _ in range(connections)]
        await trio.sleep(0.5)
        before = rss(process.pid)
        blob = fragments(FRAGMENTS)
        async with trio.open_nursery() as nursery:
            for raw in sockets:
                nursery.start_soon(raw.stream.send_all, blob)
        # The server has read what the sockets hold once its CPU time stops growing.
        await _until_idle(process.pid)
        grown = rss(process.pid) - before
        for raw in sockets:
            await raw.stream.aclose()
    finally:
        process.terminate()
        await process.wait()
    assert grown < connections * 4 * MiB, f"grew {grown / MiB:.1f} MiB"


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def _until_idle(pid: int) -> None:
    """Wait until the process has used no CPU for a quarter of a second."""
    with trio.fail_after(120):
        last = _cpu_ticks(pid)
        while True:
            await trio.sleep(0.25)
            now = _cpu_ticks(pid)
            if now == last:
                return
            last = now
