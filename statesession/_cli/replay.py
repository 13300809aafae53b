"""``statesession replay``: print a session's recorded history, then check it is a legal
path of the lifecycle chart (exit status 0 legal, 1 illegal or corrupt, 2 unknown)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import trio

from .._core.exceptions import StoreError
from .sessions import _existing_store

__all__ = ["_run_replay"]


async def _history(location: str, session_id: str) -> tuple[Any, list[Any]]:
    from .._stores.factory import open_store

    async with open_store(location) as store:
        return await store.record(session_id), await store.history(session_id)


def _run_replay(args: argparse.Namespace) -> int:
    from .._lifecycle.replay import check_history

    if not _existing_store(args.store):
        return 2
    try:
        record, entries = trio.run(_history, args.store, args.session)
    except StoreError as exc:
        print(f"statesession: {exc}", file=sys.stderr)
        return 1
    if record is None and not entries:
        print(f"statesession: no session {args.session!r} in {args.store}", file=sys.stderr)
        return 2
    for entry in entries:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.time))
        stamp += f".{int(entry.time * 1000) % 1000:03d}"
        if entry.kind == "transition":
            print(f"{stamp}  {entry.source} -> {entry.target}  ({entry.event})")
        else:
            print(f"{stamp}    {entry.event:>3} {entry.detail}")
    result = check_history(entries)
    if result.legal:
        print(f"{result.transitions} transitions: a legal path of SessionChart")
        return 0
    print(f"NOT a legal path of SessionChart: {result.problem}")
    return 1
