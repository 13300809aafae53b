"""What the store checks share: their types, their wrapper and the data they store."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import attrs
import trio

from .._core.codec import encode_data, msg_text
from .._core.snapshot import ClientState, InboxMessage, LogEntry, SessionRecord, Snapshot
from .._core.util import collapse_single_exception_group
from .._stores.port import SessionStore

__all__ = [
    "Corrupt",
    "NewStore",
    "StoreCheck",
    "StoreOpener",
    "entry",
    "expect",
    "message",
    "record",
    "same",
    "snapshot",
    "store_check",
]

#: Opens the store at one location, with open_store's keyword options.
StoreOpener = Callable[..., AbstractAsyncContextManager[SessionStore]]
#: Makes a new, empty location and returns its opener.
NewStore = Callable[[], StoreOpener]
#: Makes the stored snapshot of a session unreadable, the store open.
Corrupt = Callable[[SessionStore, str], Awaitable[None]]

#: Seconds a whole check may take before it fails.
CHECK_BOUND = 60.0
#: The wall-clock time the snapshots of the checks are made at (recent: a store may prune
#: what is older than its retention).
_EPOCH = float(int(time.time()))


class StoreCheck(Protocol):
    async def __call__(
        self, new_store: NewStore, *, persistent: bool = True, corrupt: Corrupt | None = None
    ) -> None: ...


_Body = Callable[[NewStore, bool, Corrupt | None], Awaitable[None]]


def store_check(body: _Body) -> StoreCheck:
    """Bound the check in time, let a failure raise its AssertionError itself (not inside
    exception groups), and report what the store raised unexpectedly as a failure."""

    @functools.wraps(body)
    async def run(
        new_store: NewStore, *, persistent: bool = True, corrupt: Corrupt | None = None
    ) -> None:
        with collapse_single_exception_group(), trio.move_on_after(CHECK_BOUND) as bound:
            try:
                await body(new_store, persistent, corrupt)
            except AssertionError:
                raise
            except Exception as exc:
                raise AssertionError(f"the store raised {type(exc).__name__}: {exc}") from exc
        if bound.cancelled_caught:
            raise AssertionError(f"the check did not finish within {CHECK_BOUND:g} s")

    return run


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def same(got: object, want: object, what: str) -> None:
    if got == want:
        return
    if type(got) is type(want) and isinstance(got, Snapshot | SessionRecord | LogEntry):
        differ = [
            f"{field.name} is {getattr(got, field.name)!r:.120}, expected "
            f"{getattr(want, field.name)!r:.120}"
            for field in attrs.fields(type(got))
            if getattr(got, field.name) != getattr(want, field.name)
        ]
        raise AssertionError(f"{what}: {'; '.join(differ)}")
    raise AssertionError(f"{what}: got {got!r:.300}, expected {want!r:.300}")


def snapshot(session_id: str, *, marker: int = 0, principal: str | None = "alice") -> Snapshot:
    """A snapshot with every field set (``marker`` tells versions apart)."""
    return Snapshot(
        id=session_id,
        token_hash=bytes(range(marker % 200, marker % 200 + 32)),
        principal=principal,
        created=_EPOCH - 60.25,
        passivated=_EPOCH + marker / 8,
        reason="window_expired",
        data={"marker": marker, "text": "é\u2603\x00", "nested": {"list": [1, 2.5, None, True]}},
        first_seq=7,
        frames=(
            msg_text(7, encode_data("a")),
            msg_text(8, encode_data({"é": [1, 2]})),
        ),
        clients=(
            ClientState(id="c1", acked=7, processed=3, received=5),
            ClientState(id="c2", acked=6, processed=2),
        ),
        inbox=(
            InboxMessage(client="c1", seq=4, data={"x": 1}),
            InboxMessage(client="c1", seq=5, data="y"),
        ),
    )


def record(session_id: str, *, state: str = "active", at: float, **changes: Any) -> SessionRecord:
    fields: dict[str, Any] = {"principal": "alice", "created": at - 10.0, "reason": None}
    return SessionRecord(id=session_id, state=state, last_activity=at, **{**fields, **changes})


def entry(session_id: str, n: int, at: float | None = None) -> LogEntry:
    return LogEntry(
        session=session_id,
        time=time.time() if at is None else at,
        kind="transition",
        event=f"event{n}",
        source="active",
        target="reconnecting",
    )


def message(session_id: str, n: int) -> LogEntry:
    return LogEntry(
        session=session_id, time=time.time(), kind="message", event="in", detail=f'{{"n":{n}}}'
    )
