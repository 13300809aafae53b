"""Opening a store: the backend is chosen by its location.

A URL (``scheme://...``) opens the store registered for its scheme (registry.py):
``memory://`` a :class:`~statesession._stores.memory.MemoryStore`, ``sqlite:///path.db``
the SQLite file at that path, any other scheme the store a distribution registers for it.
The older spellings stay: ``"memory"`` is a MemoryStore, and anything else (a ``Path``, or
a string that does not begin with ``scheme://``) is the path of an SQLite file. The SQLite
backend is imported only when one is opened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from .._core.exceptions import StoreError
from .memory import MemoryStore
from .port import RETENTION_AGE, RETENTION_EVENTS, SessionStore
from .registry import load_store_opener, url_scheme

__all__ = ["open_store", "store_file"]


@asynccontextmanager
async def open_store(
    location: str | Path = "statesession.db",
    *,
    log_messages: bool = False,
    retention_events: int = RETENTION_EVENTS,
    retention_age: float = RETENTION_AGE,
) -> AsyncIterator[SessionStore]:
    """Open a session store: a URL (``memory://``, ``sqlite:///path/to/file.db``,
    ``sqlite://relative.db``, or the scheme of any store registered in the
    ``statesession.stores`` entry-point group); ``"memory"`` for :class:`MemoryStore`;
    otherwise the path of an SQLite database file (created if missing, migrated to the
    current schema if older).

    The event log keeps at most ``retention_events`` entries per session and nothing older
    than ``retention_age`` seconds. Leaving the block writes everything still pending.
    Raises StoreError for a URL scheme no store is registered for.
    """
    scheme = url_scheme(location) if isinstance(location, str) else None
    if scheme is not None:
        assert isinstance(location, str)
        opener = load_store_opener(scheme)
        async with opener(
            location,
            log_messages=log_messages,
            retention_events=retention_events,
            retention_age=retention_age,
        ) as store:
            if not isinstance(store, SessionStore):
                raise StoreError(
                    f"the {scheme}:// store opened {type(store).__name__}, not a SessionStore"
                )
            yield store
        return
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


def store_file(location: str) -> Path | None:
    """The SQLite file a location names (a plain path or a ``sqlite://`` URL), or ``None``
    for one that names no local file (``memory``, ``memory://``, another scheme)."""
    scheme = url_scheme(location)
    if location == "memory" or scheme not in (None, "sqlite"):
        return None
    if scheme is None:
        return Path(location)
    from .sqlite import sqlite_url_path

    return sqlite_url_path(location)
