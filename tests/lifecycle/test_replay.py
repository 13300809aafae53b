"""Replaying a recorded history through a fresh chart, and the sessions/replay commands."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
import trio.testing

import statesession
from statesession import LogEntry
from statesession._lifecycle.replay import check_history

from ..helpers import serving


def steps(*path: tuple[str, str, str]) -> list[LogEntry]:
    return [
        LogEntry(
            session="s",
            time=float(i),
            kind="transition",
            event=event,
            source=source,
            target=target,
        )
        for i, (event, source, target) in enumerate(path)
    ]


LIFE = [
    ("activate", "initializing", "active"),
    ("attach", "active", "active"),
    ("detach", "active", "reconnecting"),
    ("attach", "reconnecting", "active"),
    ("detach", "active", "reconnecting"),
    ("expire", "reconnecting", "passivated"),
    ("rehydrate", "passivated", "initializing"),
    ("activate", "initializing", "active"),
    ("passivate", "active", "passivated"),
    ("terminate", "passivated", "terminating"),
    ("finish", "terminating", "error"),
    ("terminate", "error", "terminating"),
    ("finish", "terminating", "terminated"),
]


def test_replay_accepts_a_legal_history() -> None:
    """A whole legal life replays as legal, counting every transition."""
    result = check_history(steps(*LIFE))
    assert result.legal
    assert result.transitions == len(LIFE)


def test_replay_reproduces_errors_raised_by_actions() -> None:
    """error.execution after a step is the chart's answer to that step's failing action."""
    result = check_history(
        steps(
            ("activate", "initializing", "active"),
            ("detach", "active", "reconnecting"),
            ("error.execution", "reconnecting", "error"),
            ("terminate", "error", "terminating"),
            ("finish", "terminating", "terminated"),
        )
    )
    assert result.legal, result.problem


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ([("activate", "initializing", "terminated")], "no 'activate' from initializing"),
        (
            [("activate", "initializing", "active"), ("expire", "active", "passivated")],
            "no 'expire' from active",
        ),
        (
            [("activate", "initializing", "active"), ("finish", "reconnecting", "terminated")],
            "starts from reconnecting but the session was in active",
        ),
        ([("activate", "initializing", "limbo")], "unknown state 'limbo'"),
        ([("error.execution", "initializing", "error")], "follows no step"),
        (
            [("activate", "initializing", "active"), ("rehydrate", "active", "initializing")],
            "no 'rehydrate' from active",
        ),
    ],
)
def test_replay_reports_the_first_illegal_step(
    path: list[tuple[str, str, str]], fragment: str
) -> None:
    """A history with an illegal step replays as illegal, the problem naming that first step."""
    result = check_history(steps(*path))
    assert not result.legal
    assert fragment in (result.problem or "")


def test_replay_skips_messages() -> None:
    """Message entries in a history do not count against its legality."""
    entries = steps(("activate", "initializing", "active"))
    entries.insert(1, LogEntry(session="s", time=1.0, kind="message", event="in", detail="{}"))
    assert check_history(entries).legal


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statesession", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


async def test_cli_sessions_and_replay_read_a_store(
    thread_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """sessions lists a store's session with its state and count, and replay prints its
    transitions as a legal path of SessionChart."""
    path = tmp_path / "sessions.db"
    async with statesession.open_store(path) as store, serving(store=store) as served:
        peer, welcome = await served.new_session()
        await peer.send({"type": "bye"})
        await peer.receive_type("closed")
        await served.manager.sessions[welcome["session"]].wait_terminated()
        await store.flush()
    listing = await trio.to_thread.run_sync(
        lambda: run("sessions", "--store", str(path), cwd=tmp_path)
    )
    assert listing.returncode == 0
    assert welcome["session"] in listing.stdout
    assert "terminated" in listing.stdout
    assert listing.stdout.rstrip().endswith("1 session")
    replay = await trio.to_thread.run_sync(
        lambda: run("replay", welcome["session"], "--store", str(path), cwd=tmp_path)
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "initializing -> active  (activate)" in replay.stdout
    assert "3 transitions: a legal path of SessionChart" in replay.stdout


def test_session_ids_never_begin_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id beginning with '-' would be taken for an option on a command line
    (``statesession replay ID``): such a draw is thrown away."""
    from statesession._core import util as _util

    draws = iter(["-looks-like-a-flag", "fine-id"])
    monkeypatch.setattr(_util.secrets, "token_urlsafe", lambda nbytes: next(draws))
    assert _util.new_id(12) == "fine-id"


def test_cli_replay_takes_a_dash_led_id_after_a_double_dash(tmp_path: Path) -> None:
    """replay takes an id starting with a dash after --, answering for that id rather than with
    a usage error."""
    path = tmp_path / "sessions.db"
    trio.run(_empty_store, path)
    result = run("replay", "--store", str(path), "--", "-abc", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "-abc" in result.stdout + result.stderr
    assert "usage:" not in result.stderr


async def _empty_store(path: Path) -> None:
    async with statesession.open_store(path):
        pass


def test_cli_replay_reports_a_forged_history_and_a_corrupt_log(tmp_path: Path) -> None:
    """replay exits 1 for a forged history and for a corrupt log (no traceback), and 2 for an
    unknown session or a missing store."""
    path = tmp_path / "sessions.db"

    async def write() -> None:
        async with statesession.open_store(path) as store:
            store.note(
                statesession.SessionRecord(
                    id="forged",
                    state="terminated",
                    principal=None,
                    created=time.time(),
                    last_activity=time.time(),
                )
            )
            for entry in steps(
                ("activate", "initializing", "active"), ("finish", "active", "terminated")
            ):
                store.log(
                    LogEntry(
                        session="forged",
                        time=time.time(),
                        kind=entry.kind,
                        event=entry.event,
                        source=entry.source,
                        target=entry.target,
                    )
                )

    trio.run(write)
    forged = run("replay", "forged", "--store", str(path), cwd=tmp_path)
    assert forged.returncode == 1
    assert "NOT a legal path" in forged.stdout
    assert "no 'finish' from active" in forged.stdout
    with sqlite3.connect(path) as raw:
        raw.execute(
            "INSERT INTO events (session, time, kind, event) VALUES "
            "('forged', 0, 'gibberish', 'x')"
        )
    corrupt = run("replay", "forged", "--store", str(path), cwd=tmp_path)
    assert corrupt.returncode == 1
    assert "corrupt at entry 2" in corrupt.stderr
    assert "Traceback" not in corrupt.stderr
    unknown = run("replay", "nobody", "--store", str(path), cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no session 'nobody'" in unknown.stderr
    missing = run("sessions", "--store", str(tmp_path / "missing.db"), cwd=tmp_path)
    assert missing.returncode == 2
    assert "no store at" in missing.stderr
