"""Stores are found by URL scheme through the ``statesession.stores`` entry points; the
older spellings (``"memory"``, a plain path) open what they always did."""

from __future__ import annotations

import functools
import signal
import tomllib
from pathlib import Path

import pytest
import trio

from statesession import MemoryStore, StoreError, open_store
from statesession._stores import registry
from statesession._stores.sqlite import SQLiteStore
from statesession.testing import check_store

from ..e2e.test_cli import _store_with, run_cli
from ..helpers import start_server

ROOT = Path(__file__).resolve().parents[2]


def distribution(root: Path, entry_points: str, module: str | None = None) -> None:
    """Install, on ``root``, a distribution ``statesession-pigeon`` registering
    ``entry_points`` in the stores group, with module ``pigeon_store`` holding ``module``."""
    info = root / "statesession_pigeon-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: statesession-pigeon\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(f"[statesession.stores]\n{entry_points}\n")
    if module is not None:
        (root / "pigeon_store.py").write_text(module)


PIGEON_STORE = """
from contextlib import asynccontextmanager

from statesession import MemoryStore


class PigeonStore(MemoryStore):
    pass


@asynccontextmanager
async def open_pigeon(url, *, log_messages, retention_events, retention_age):
    store = PigeonStore(
        log_messages=log_messages,
        retention_events=retention_events,
        retention_age=retention_age,
    )
    store.url = url
    yield store


@asynccontextmanager
async def open_nothing(url, **options):
    yield object()
"""


async def test_store_registry_opens_the_builtins_by_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """memory:// is a MemoryStore; sqlite:///abs.db and sqlite://rel.db are SQLite files."""
    monkeypatch.chdir(tmp_path)
    async with open_store("memory://", retention_events=3) as store:
        assert type(store) is MemoryStore
    async with open_store(f"sqlite://{tmp_path}/abs.db") as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == tmp_path / "abs.db"
    async with open_store("SQLite://rel.db") as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == Path("rel.db")
    for name in ("abs.db", "rel.db"):
        assert await trio.Path(tmp_path / name).exists()


async def test_store_registry_keeps_the_older_spellings(tmp_path: Path) -> None:
    """ "memory" is a MemoryStore, and a plain path (str or Path) an SQLite file."""
    async with open_store("memory") as store:
        assert type(store) is MemoryStore
    for path in (str(tmp_path / "a.db"), tmp_path / "b.db", Path("memory")):
        async with open_store(path) as store:
            assert isinstance(store, MemoryStore if path == Path("memory") else SQLiteStore)


async def test_store_registry_url_and_path_name_one_file(tmp_path: Path) -> None:
    """A session noted through a sqlite:/// URL is read back through the plain path."""
    await _store_with(tmp_path / "one.db", 2)
    async with open_store(f"sqlite://{tmp_path}/one.db") as store:
        assert [r.id for r in await store.sessions()] == ["session00000", "session00001"]


async def test_store_registry_unknown_scheme_names_the_installed_ones() -> None:
    """An unknown scheme raises StoreError naming the installed schemes and the group."""
    with pytest.raises(StoreError) as info:
        async with open_store("redis://localhost/0"):
            pass
    message = str(info.value)
    assert "no store is registered for redis://" in message
    assert "installed: memory://, sqlite://" in message
    assert "'statesession.stores' entry-point group" in message


@pytest.mark.parametrize(
    ("url", "message"),
    [("sqlite://", "names no file"), ("memory://here", "a memory store takes no path")],
)
async def test_store_registry_refuses_a_url_the_store_cannot_open(url: str, message: str) -> None:
    """A built-in store's URL that names nothing it can open is a StoreError saying why."""
    with pytest.raises(StoreError, match=message):
        async with open_store(url):
            pass


async def test_store_registry_finds_the_builtins_without_installed_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout whose installed metadata registers no store still opens the built-ins."""
    monkeypatch.setattr(registry, "_installed", dict)
    async with open_store("memory://") as store:
        assert type(store) is MemoryStore
    async with open_store(f"sqlite://{tmp_path}/x.db") as store:
        assert isinstance(store, SQLiteStore)


def test_store_registry_pyproject_registers_the_builtins() -> None:
    """pyproject.toml registers exactly the built-in stores the fallback knows."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"][registry.ENTRY_POINT_GROUP] == registry.BUILTIN_STORES


async def test_store_registry_opens_a_third_party_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution registering a scheme is opened by its URL, with open_store's options,
    and its store passes the conformance suite through open_store."""
    distribution(tmp_path, "pigeon = pigeon_store:open_pigeon", PIGEON_STORE)
    monkeypatch.syspath_prepend(str(tmp_path))
    async with open_store("pigeon://coop/1", log_messages=True) as store:
        assert type(store).__name__ == "PigeonStore"
        assert getattr(store, "url", None) == "pigeon://coop/1"
        assert store.log_messages
    await check_store(lambda: functools.partial(open_store, "pigeon://coop"), persistent=False)


async def test_store_registry_refuses_an_opener_that_yields_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry point whose opener yields something that is not a SessionStore fails."""
    distribution(tmp_path, "pigeon = pigeon_store:open_nothing", PIGEON_STORE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(StoreError, match="opened object, not a SessionStore"):
        async with open_store("pigeon://coop"):
            pass


async def test_store_registry_missing_dependency_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A third-party store whose module cannot be imported says what to pip install."""
    distribution(tmp_path, "pigeon = statesession_pigeon_store:open [pigeon]")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(StoreError) as info:
        async with open_store("pigeon://coop"):
            pass
    assert "the pigeon:// store cannot be loaded" in str(info.value)
    assert "pip install 'statesession-pigeon[pigeon]'" in str(info.value)


def test_store_registry_cli_sessions_by_url(tmp_path: Path) -> None:
    """``sessions --store sqlite:///...`` lists the file's sessions, and says there is no
    store for a URL naming a file that does not exist."""
    trio.run(_store_with, tmp_path / "s.db", 2)
    result = run_cli("sessions", "--store", f"sqlite://{tmp_path}/s.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "2 sessions"
    missing = f"sqlite://{tmp_path}/missing.db"
    result = run_cli("replay", "x", "--store", missing, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (2, f"statesession: no store at {missing}\n")
    assert not (tmp_path / "missing.db").exists()


async def test_store_registry_cli_serve_by_url(tmp_path: Path) -> None:
    """``serve --store sqlite:///...`` opens that file and saves the sessions to it."""
    url = f"sqlite://{tmp_path}/served.db"
    process, _, lines = await start_server("--store", url)
    try:
        assert f"INFO statesession: store: {url}" in "\n".join(lines)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await process.wait() == 0
    finally:
        process.kill()
    assert (await trio.Path(tmp_path / "served.db").stat()).st_size > 0
