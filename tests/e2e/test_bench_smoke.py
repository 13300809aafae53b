"""Each benchmark runs once at a tiny size, so that none of them rots (no timing asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

#: script -> (tiny arguments, a line its table must contain)
SMOKE = {
    "idle_memory.py": (["--sessions", "30", "--runs", "1", "--idle", "0.1"], "kernel share"),
    "passivation.py": (["--sessions", "30", "--runs", "1"], "rehydrate (resume to welcome)"),
    "message_path.py": (
        ["--runs", "1", "--messages", "20", "--clients", "1,2"],
        "message path: server CPU per echoed 100-byte message",
    ),
    "ws_memory.py": (["--sessions", "20", "--runs", "1"], "raw-trio-websocket (baseline)"),
    "lifecycle.py": (
        [
            "--sessions",
            "30",
            "--runs",
            "1",
            "--tasks",
            "20",
            "--resources",
            "3",
            "--terminate-runs",
            "1",
        ],
        "terminate -> terminated",
    ),
    "resume.py": (["--messages", "20", "--runs", "1"], "reconnect + replay"),
}


def test_bench_every_script_has_a_smoke_run() -> None:
    """Every script in bench/ (helpers named ``_*`` aside) has a smoke run here."""
    # Modules named ``_*`` (such as ``_common.py``) are helpers the scripts import, not scripts.
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(SMOKE)


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_bench_smoke(script: str) -> None:
    """Each bench script, run with its smoke arguments, exits 0 and prints its report line."""
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *SMOKE[script][0]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert SMOKE[script][1] in result.stdout
