"""Transports are found by name or URL scheme through entry points."""

from __future__ import annotations

import types
from importlib.metadata import EntryPoint

import pytest

import statesession
from statesession import TransportError, load_transport
from statesession._runtime import transport as registry


def test_registry_finds_transports_by_name_and_scheme() -> None:
    """load_transport finds the same Transport by name and by URL scheme (ws and wss are
    websocket)."""
    websocket = load_transport("websocket")
    assert load_transport("ws://127.0.0.1:8765/") is websocket
    assert load_transport("wss://example.org/") is websocket
    tcp = load_transport("tcp")
    assert load_transport("tcp://127.0.0.1:9") is tcp
    assert isinstance(tcp, statesession.Transport)
    assert (websocket.name, tcp.name) == ("websocket", "tcp")


def test_registry_unknown_transport_names_what_is_registered() -> None:
    """An unknown scheme is a TransportError naming it and the registered transports."""
    with pytest.raises(TransportError, match=r"no transport is registered for 'quic'.*tcp"):
        load_transport("quic://127.0.0.1:1")


def fake_registry(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    entry = EntryPoint(name="pigeon", value=value, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: {"pigeon": entry})


def test_registry_missing_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transport whose module is missing raises TransportError with the pip install command
    for its extra and the import error."""
    fake_registry(monkeypatch, "statesession_pigeon:transport [pigeon]")
    with pytest.raises(TransportError) as info:
        load_transport("pigeon://coop")
    assert "pip install '.[pigeon]'" in str(info.value)
    assert "No module named 'statesession_pigeon'" in str(info.value)


def test_registry_missing_extra_of_a_third_party_names_its_distribution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A third-party transport's missing extra is that distribution's, installed from the
    package index by its own name."""
    entry = EntryPoint(
        name="pigeon", value="statesession_pigeon:transport [pigeon]", group="g"
    )._for(types.SimpleNamespace(name="statesession-pigeon"))  # type: ignore[arg-type]
    monkeypatch.setattr(registry, "_entry_points", lambda: {"pigeon": entry})
    with pytest.raises(TransportError) as info:
        load_transport("pigeon://coop")
    assert "pip install 'statesession-pigeon[pigeon]'" in str(info.value)


def test_registry_refuses_an_entry_point_that_is_not_a_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An entry point that is not a Transport is refused with TransportError."""
    fake_registry(monkeypatch, "json:dumps")
    with pytest.raises(TransportError, match="is not a Transport"):
        load_transport("pigeon")


async def test_open_client_with_an_unknown_scheme_fails_at_once() -> None:
    """open_client with an unregistered scheme raises TransportError naming it."""
    with pytest.raises(TransportError, match="quic"):
        async with statesession.open_client("quic://127.0.0.1:1"):
            pass
