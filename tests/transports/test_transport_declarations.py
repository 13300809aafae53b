"""Transports declare their URL schemes, default port and roles, and the command line,
the client and the conformance suite read them there."""

from __future__ import annotations

import argparse
from importlib.metadata import EntryPoint
from typing import Any

import pytest
import trio

import statesession
from statesession import Channel, SessionConfig, Transport, TransportError, load_transport
from statesession._cli.parser import _parser
from statesession._cli.serve import _run_serve, _url
from statesession._runtime import transport as registry
from statesession.testing import check_declarations, check_transport

BUILT_IN = ["websocket", "websockets", "tcp"]


async def close(channel: Channel) -> None:
    await channel.aclose()


class ServeOnly(Transport):
    """A transport that only serves (a bridge inside another server): it accepts nothing
    here, but reports where it would."""

    name = "bridge"
    schemes = ("bridge",)
    default_port = 9000

    async def serve(  # type: ignore[override]
        self, handler, url, *, config, task_status=trio.TASK_STATUS_IGNORED
    ):
        task_status.started("bridge://127.0.0.1:9000")
        await trio.sleep_forever()


class ConnectOnly(Transport):
    """A transport that only connects (a client in a browser)."""

    name = "browser"
    schemes = ("browser",)

    async def connect(self, url: str, *, nursery: trio.Nursery, max_frame: int) -> Channel:
        raise OSError(f"nothing listens at {url}")


@pytest.mark.parametrize("name", BUILT_IN)
def test_transport_declarations_of_the_built_in_transports_hold(name: str) -> None:
    """Each built-in transport declares a name, valid schemes, a port and both roles."""
    transport = load_transport(name)
    check_declarations(transport)
    assert transport.can_serve
    assert transport.can_connect


def test_transport_declarations_agree_with_the_registered_entry_points() -> None:
    """Every entry point names its transport or one of the URL schemes it declares, and
    each transport is registered under its own name."""
    for entry_name, entry_point in registry._entry_points().items():
        transport = load_transport(entry_name)
        assert entry_name in (transport.name, *transport.schemes), entry_point
        assert load_transport(transport.name) is transport


@pytest.mark.parametrize(
    ("transport", "url"),
    [
        ("websocket", "ws://127.0.0.1:8765/"),
        ("websockets", "ws://127.0.0.1:8765/"),
        ("ws", "ws://127.0.0.1:8765/"),
        ("wss", "wss://127.0.0.1:8765/"),
        ("tcp", "tcp://127.0.0.1:8766/"),
    ],
)
def test_transport_declarations_give_the_cli_its_default_url(transport: str, url: str) -> None:
    """statesession serve's default URL comes from the transport's first scheme (or the
    scheme --transport names) and its default port."""
    args = argparse.Namespace(transport=transport, host="127.0.0.1", port=None)
    assert _url(args, load_transport(transport)) == url
    args = argparse.Namespace(transport=transport, host="::1", port=0)
    assert _url(args, load_transport(transport)) == url.replace("127.0.0.1", "[::1]").replace(
        url.rsplit(":", 1)[1].rstrip("/"), "0"
    )


def test_transport_declarations_absent_keep_the_cli_defaults() -> None:
    """A transport that declares neither schemes nor a port is served at its name's
    scheme and port 8765, as before transports declared them."""

    class Undeclared(ServeOnly):
        name = "pigeon"
        schemes = ()
        default_port = None

    args = argparse.Namespace(transport="pigeon", host="127.0.0.1", port=None)
    assert _url(args, Undeclared()) == "pigeon://127.0.0.1:8765/"


def test_transport_declarations_match_the_cli_help() -> None:
    """The --port help names each built-in transport's declared default port."""
    (serve,) = (
        action.choices["serve"]
        for action in _parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    (port,) = (action for action in serve._actions if "--port" in action.option_strings)
    assert port.help is not None
    for name in ("websocket", "tcp"):
        assert f"{load_transport(name).default_port} for {name}" in port.help


async def test_transport_roles_missing_ones_are_refused_clearly() -> None:
    """Asking a transport for a role it lacks raises TransportError saying what it can
    do, before anything is tried: serving with a client-only transport, opening a client
    with a server-only one."""
    assert (ServeOnly().can_serve, ServeOnly().can_connect) == (True, False)
    assert (ConnectOnly().can_serve, ConnectOnly().can_connect) == (False, True)
    async with statesession.open_manager(lambda session: None) as manager:  # type: ignore[arg-type,return-value]
        with pytest.raises(TransportError, match="'browser' transport cannot serve: it only"):
            await statesession.serve(manager, "browser://x", transport=ConnectOnly())
    with pytest.raises(TransportError, match="'bridge' transport cannot connect: it only serves"):
        async with statesession.open_client("bridge://x", transport=ServeOnly()):
            pass
    async with trio.open_nursery() as nursery:
        with pytest.raises(TransportError, match="cannot connect"):
            await ServeOnly().connect("bridge://x", nursery=nursery, max_frame=1024)
        with pytest.raises(TransportError, match="cannot serve"):
            await ConnectOnly().serve(close, "browser://x", config=SessionConfig())


def test_transport_roles_the_cli_refuses_a_client_only_transport(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """statesession serve --transport with one that cannot serve fails in one line,
    status 2."""
    entry = EntryPoint(
        name="browser",
        value="tests.transports.test_transport_declarations:BROWSER",
        group=registry.ENTRY_POINT_GROUP,
    )
    monkeypatch.setattr(registry, "_entry_points", lambda: {"browser": entry})
    args = _parser().parse_args(["serve", "--transport", "browser", "--store", "memory"])
    assert _run_serve(args) == 2
    assert capsys.readouterr().err == (
        "statesession: the 'browser' transport cannot serve: it only connects\n"
    )


BROWSER = ConnectOnly()


async def test_transport_check_takes_one_role_transports() -> None:
    """check_transport checks a transport with one role: its declarations, its missing
    role refused, and what it can do."""
    await check_transport(ServeOnly(), "bridge://127.0.0.1:0")
    await check_transport(ConnectOnly(), "browser://127.0.0.1:0")


async def test_transport_check_catches_a_missing_role_that_is_not_refused() -> None:
    """check_transport fails a server-only transport whose connect does not raise
    TransportError."""

    class Quiet(ServeOnly):
        @property
        def can_connect(self) -> bool:
            return False

        async def connect(self, url: str, *, nursery: trio.Nursery, max_frame: int) -> Any:
            return None

    with pytest.raises(AssertionError, match="which cannot connect, returned"):
        await check_transport(Quiet(), "bridge://127.0.0.1:0")


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"schemes": ()}, "declares no URL schemes"),
        ({"schemes": ("WS",)}, "not a lower-case URL scheme"),
        ({"schemes": ("ws", "ws")}, "declares a scheme twice"),
        ({"default_port": 0}, "a port is 1-65535"),
        ({"default_port": "8765"}, "a port is 1-65535"),
        ({"name": ""}, "declares no name"),
    ],
)
def test_transport_check_catches_inconsistent_declarations(
    declared: dict[str, Any], message: str
) -> None:
    """check_declarations fails a transport whose schemes, port or name are wrong."""
    transport = ServeOnly()
    for attribute, value in declared.items():
        setattr(transport, attribute, value)
    with pytest.raises(AssertionError, match=message):
        check_declarations(transport)


def test_transport_check_catches_a_transport_with_no_role() -> None:
    """check_declarations fails a transport that overrides neither serve nor connect."""

    class Idle(Transport):
        name = "idle"
        schemes = ("idle",)

    with pytest.raises(AssertionError, match="neither serves nor connects"):
        check_declarations(Idle())


async def test_transport_check_catches_a_served_url_of_an_undeclared_scheme() -> None:
    """check_transport fails a transport whose serve reports a URL of a scheme it does not
    declare."""

    class Elsewhere(ServeOnly):
        schemes = ("bridge", "bridges")

        async def serve(  # type: ignore[override]
            self, handler, url, *, config, task_status=trio.TASK_STATUS_IGNORED
        ):
            task_status.started("http://127.0.0.1:9000")
            await trio.sleep_forever()

    with pytest.raises(AssertionError, match="does not declare"):
        await check_transport(Elsewhere(), "bridge://127.0.0.1:0")
