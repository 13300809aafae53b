"""Opening a store: the backend is chosen by its location.

``"memory"`` is a :class:`~statesession._stores.memory.MemoryStore`; anything else is the
path of an SQLite file. The SQLite backend is imported only when one is opened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from .memory import MemoryStore
from .port import RETENTION_AGE, RETENTION_EVENTS, SessionStore

__all__ = ["open_store"]


@asynccontextmanager
async def open_store(
    location: str | Path = "statesession.db",
    *,
    log_messages: bool = False,
    retention_events: int = RETENTION_EVENTS,
    retention_age: float = RETENTION_AGE,
) -> AsyncIterator[SessionStore]:
    """Open a session store: ``"memory"`` for :class:`MemoryStore`, otherwise the path of
    an SQLite database file (created if missing, migrated to the current schema if older).

    The event log keeps at most ``retention_events`` entries per session and nothing older
    than ``retention_age`` seconds. Leaving the block writes everything still pending.
    """
    if str(location) == "memory":
        yield MemoryStore(
            log_messages=log_messages,
            retention_events=retention_events,
            retention_age=retention_age,
        )
        return
    from .sqlite import open_sqlite_store

    async with open_sqlite_store(
        Path(location),
        log_messages=log_messages,
        retention_events=retention_events,
        retention_age=retention_age,
    ) as store:
        yield store
