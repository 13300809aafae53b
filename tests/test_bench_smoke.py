"""Each benchmark runs once at a tiny size, so that none of them rots (no timing asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

SMOKE = {"idle_memory.py": ["--sessions", "30", "--runs", "1"]}


def test_bench_every_script_has_a_smoke_run() -> None:
    assert {p.name for p in BENCH.glob("*.py")} == set(SMOKE)


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_bench_smoke(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *SMOKE[script]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "kernel share" in result.stdout
