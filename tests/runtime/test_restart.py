"""Restart safety with a real server process on a real SQLite file: SIGTERM saves every
session and the next server brings it back; SIGKILL loses live sessions, and says so."""

from __future__ import annotations

import signal
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import trio

import statesession

from ..helpers import read_rest, start_server

TOTAL = 400

STREAM_APP = f"""
import trio

async def main(session):
    # The app's place in the stream is its own data: saved with the session.
    n = session.data.get("next", 0)
    while n < {TOTAL}:
        await session.send(n)
        n += 1
        session.data["next"] = n
        await trio.sleep(0.002)
    async for _ in session:
        pass
"""


def free_port() -> int:
    """A port to restart the server on (listeners reuse the address)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_sigterm_mid_stream_then_restart_delivers_everything_exactly_once(
    tmp_path: Path,
) -> None:
    """SIGTERM mid-stream saves the session; after a restart on the same store the client gets
    the rest, every item once, in order."""
    (tmp_path / "streamapp.py").write_text(STREAM_APP)
    db = tmp_path / "sessions.db"
    args = ("streamapp:main", "--store", str(db), "--port", str(free_port()))
    first, url, lines = await start_server(*args, cwd=tmp_path)
    second = None
    try:
        received: list[int] = []
        async with statesession.open_client(url, give_up_after=60) as client:
            with trio.fail_after(30):
                while len(received) < TOTAL // 4:
                    received.append(await client.receive())
                first.send_signal(signal.SIGTERM)
                assert await first.wait() == 0
            log = "\n".join(await read_rest(first, lines))
            assert "SIGTERM: saving 1 session and stopping" in log
            assert "-> passivated (passivate)" in log
            assert "stopped" in log

            second, _, _ = await start_server(*args, cwd=tmp_path)
            with trio.fail_after(30):
                while len(received) < TOTAL:
                    received.append(await client.receive())
            assert client.state == "active"
        # Nothing lost, nothing twice, in order: the stream went on where it stopped.
        assert received == list(range(TOTAL))
        second.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await second.wait() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()


async def test_sigkill_loses_the_live_session_and_the_client_is_told_why(
    tmp_path: Path,
) -> None:
    """After SIGKILL and a restart the live session is gone, and its client is told terminated
    because the server crashed."""
    (tmp_path / "streamapp.py").write_text(STREAM_APP)
    db = tmp_path / "sessions.db"
    args = ("streamapp:main", "--store", str(db), "--port", str(free_port()))
    first, url, _ = await start_server(*args, cwd=tmp_path)
    second = None
    try:
        async with statesession.open_client(url, give_up_after=60) as client:
            with trio.fail_after(30):
                await client.receive()
                # The store knows the session is live once its write-behind committed.
                while not _recorded_state(db, client.session_id):  # noqa: ASYNC110 (another process's file)
                    await trio.sleep(0.05)
            first.kill()
            await first.wait()
            second, _, _ = await start_server(*args, cwd=tmp_path)
            with pytest.raises(statesession.RemoteError) as caught, trio.fail_after(30):
                await _receive_forever(client)
        assert caught.value.code == "terminated"
        assert "stopped without saving it (a crash)" in caught.value.message
        second.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await second.wait() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()


async def _receive_forever(client: statesession.Client) -> None:
    while True:
        await client.receive()


def _recorded_state(db: Path, session_id: str | None) -> str | None:
    with closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT state FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return row[0] if row else None
