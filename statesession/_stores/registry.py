"""Stores found by URL scheme: the ``statesession.stores`` entry-point group.

Theory of operation
-------------------
A store is registered in the entry-point group ``statesession.stores`` under the URL
scheme it handles, naming its *opener*: a function that takes the whole URL and
``open_store``'s options (``log_messages``, ``retention_events``, ``retention_age``) as
keywords and returns an async context manager yielding the open store (leaving it writes
everything still pending). ``memory://`` and ``sqlite://`` are statesession's own,
registered in its pyproject.toml; the same two are known here too, so a checkout whose
installed metadata predates them (not reinstalled) still finds them. An installed entry
point wins over that fallback. An entry point may name the extra that brings its
dependencies (``"statesession_redis:open_store [redis]"``), so a missing dependency is
reported as the command that installs it.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol

from .._core.exceptions import StoreError
from .port import SessionStore

__all__ = ["ENTRY_POINT_GROUP", "StoreOpener", "load_store_opener", "url_scheme"]

ENTRY_POINT_GROUP = "statesession.stores"

#: The built-in stores, as pyproject.toml registers them.
BUILTIN_STORES = {
    "memory": "statesession._stores.memory:open_memory_url",
    "sqlite": "statesession._stores.sqlite:open_sqlite_url",
}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


class StoreOpener(Protocol):
    """What a ``statesession.stores`` entry point names."""

    def __call__(
        self, url: str, *, log_messages: bool, retention_events: int, retention_age: float
    ) -> AbstractAsyncContextManager[SessionStore]: ...


def url_scheme(location: str) -> str | None:
    """The scheme of a store URL (``"sqlite"`` for ``"sqlite:///x.db"``), lowercased, or
    ``None`` for a location that is not a URL (a plain path)."""
    found = _SCHEME.match(location)
    return found.group(1).lower() if found else None


def _installed() -> dict[str, EntryPoint]:
    return {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _entry_points() -> dict[str, EntryPoint]:
    builtin = {
        name: EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)
        for name, value in BUILTIN_STORES.items()
    }
    return {**builtin, **_installed()}


def load_store_opener(scheme: str) -> StoreOpener:
    """The opener registered for a URL scheme. Raises StoreError when there is none (naming
    the schemes there are), or when its dependencies are not installed."""
    registered = _entry_points()
    entry_point = registered.get(scheme.lower())
    if entry_point is None:
        known = ", ".join(f"{name}://" for name in sorted(registered))
        raise StoreError(
            f"no store is registered for {scheme}:// (installed: {known}); a store registers "
            f"its URL scheme in the {ENTRY_POINT_GROUP!r} entry-point group of its "
            "distribution (see docs/persistence.md, 'Writing a store')"
        )
    try:
        opener = entry_point.load()
    except ImportError as exc:
        raise StoreError(
            f"the {entry_point.name}:// store cannot be loaded ({exc}); "
            f"{_install_hint(entry_point)}"
        ) from exc
    if not callable(opener):
        raise StoreError(
            f"entry point {entry_point.name!r} = {entry_point.value!r} is not a store opener"
        )
    opener_: StoreOpener = opener
    return opener_


def _install_hint(entry_point: EntryPoint) -> str:
    """What to install for an entry point whose module cannot be imported."""
    extras = ",".join(entry_point.extras)
    dist = entry_point.dist.name if entry_point.dist is not None else None
    if dist is None or dist == "statesession":
        if extras:
            return f"install statesession's {extras!r} extra: pip install '.[{extras}]'"
        return "reinstall statesession: pip install -e . in the root of its checkout"
    return f"pip install '{dist}[{extras}]'" if extras else f"pip install '{dist}'"
