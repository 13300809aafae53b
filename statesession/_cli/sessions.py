"""``statesession sessions``: list the sessions a store records, most recently active
first, one line each."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import trio

from .._core.exceptions import StoreError
from .._core.util import plural

__all__ = ["_existing_store", "_run_sessions"]


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0):.0f}s"


async def _list_sessions(location: str) -> list[Any]:
    from .._stores.factory import open_store

    async with open_store(location) as store:
        return await store.sessions()


def _existing_store(location: str) -> bool:
    from .._stores.factory import store_file

    try:
        path = store_file(location)
    except StoreError as exc:
        print(f"statesession: {exc}", file=sys.stderr)
        return False
    if path is not None and not path.exists():
        print(f"statesession: no store at {location}", file=sys.stderr)
        return False
    return True


def _run_sessions(args: argparse.Namespace) -> int:
    if not _existing_store(args.store):
        return 2
    try:
        records = trio.run(_list_sessions, args.store)
    except StoreError as exc:
        print(f"statesession: {exc}", file=sys.stderr)
        return 1
    now = time.time()
    print(f"{'SESSION':<18} {'STATE':<13} {'AGE':>7} {'IDLE':>7}  SAVED  REASON")
    for r in records:
        saved = "yes" if r.snapshot else "-"
        print(
            f"{r.id:<18} {r.state:<13} {_ago(now - r.created):>7} "
            f"{_ago(now - r.last_activity):>7}  {saved:<5}  {r.reason or ''}".rstrip()
        )
    print(plural(len(records), "session"))
    return 0
