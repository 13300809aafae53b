"""The statesession command: serve (a real subprocess), diagram, flags and errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

import statesession
from statesession._cli.main import main
from statesession._cli.parser import _parser
from statesession._lifecycle.diagram import lifecycle_diagram

from ..helpers import read_rest, start_server


async def test_cli_serve_runs_the_demo_and_stops_cleanly_on_sigterm() -> None:
    """The main job: a client talks to the demo over WebSocket; SIGTERM ends the server
    with exit code 0 after every client was told server_shutdown."""
    process, url, lines = await start_server("--reconnect-window", "5", "--store", "memory")
    try:
        assert url.startswith("ws://127.0.0.1:")
        async with statesession.open_client(url) as client:
            greeting = await client.receive()
            assert greeting["hint"] == "send me anything"
            await client.send("hello there")
            words = [(await client.receive())["word"] for _ in range(2)]
            assert words == ["you", "said:"]
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                async for _ in client:
                    pass
            assert client.closed_reason == "server_shutdown"
        with trio.fail_after(10):
            assert await process.wait() == 0
        log = await read_rest(process, lines)
    finally:
        process.kill()
    text = "\n".join(log)
    assert "initializing -> active (activate)" in text
    assert "SIGTERM: terminating 1 session and stopping" in text
    assert "active -> terminating (terminate)" in text
    assert re.search(r"terminating -> terminated \(finish\)", text)
    assert "stopped" in text


async def test_cli_serve_tcp_and_a_user_app(tmp_path: Path) -> None:
    """``statesession serve mypkg.app:main`` serves the user's app, here over TCP."""
    (tmp_path / "myapp.py").write_text(
        "async def main(session):\n"
        "    async for message in session:\n"
        "        await session.send({'upper': message.data.upper()})\n"
    )
    process, url, _ = await start_server(
        "myapp:main", "--transport", "tcp", "--store", "memory", cwd=tmp_path
    )
    try:
        assert url.startswith("tcp://127.0.0.1:")
        async with statesession.open_client(url) as client:
            await client.send("shout")
            assert await client.receive() == {"upper": "SHOUT"}
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await process.wait() == 0
    finally:
        process.kill()


def cli(*args: str, without: Sequence[str] = ()) -> list[str]:
    """The command line of ``python -m statesession ARGS``; with ``without``, those modules
    cannot be imported (as when the package that provides them is not installed)."""
    if not without:
        return [sys.executable, "-m", "statesession", *args]
    code = (
        "import runpy, sys\n"
        f"for name in {list(without)!r}:\n"
        "    sys.modules[name] = None\n"
        "runpy.run_module('statesession', run_name='__main__', alter_sys=True)\n"
    )
    return [sys.executable, "-c", code, *args]


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    without: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(*args, without=without),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )


def test_cli_config_flags_are_named_after_the_config_fields() -> None:
    """Every SessionConfig field has a serve flag named after it, parsed to the field's type."""
    args = _parser().parse_args(
        [
            "serve",
            "--reconnect-window",
            "12.5",
            "--buffer-messages",
            "7",
            "--overflow",
            "drop_oldest",
            "--max-frame",
            "2048",
            "--buffer-bytes",
            "4096",
        ]
    )
    assert args.config_reconnect_window == 12.5
    assert args.config_buffer_messages == 7
    assert args.config_overflow == "drop_oldest"
    for field in statesession.SessionConfig.__attrs_attrs__:  # type: ignore[attr-defined]
        assert hasattr(args, f"config_{field.name}")


def test_cli_bad_config_value_is_a_clear_error() -> None:
    """A bad config value exits 2 naming the SessionConfig field and its rule."""
    result = run_cli("serve", "--heartbeat-interval", "-1")
    assert result.returncode == 2
    assert "SessionConfig.heartbeat_interval must be a positive number" in result.stderr


def test_cli_bad_app_is_a_clear_error() -> None:
    """An app that cannot be imported, is not module:function, is missing or is not callable
    exits 2 with a message and no traceback."""
    result = run_cli("serve", "no_such_module:main")
    assert result.returncode == 2
    assert "cannot import 'no_such_module'" in result.stderr
    for spec, message in [
        ("json", "APP must look like module:function"),
        ("json:nope", "'json' has no 'nope'"),
        ("json:__doc__", "is not callable"),
    ]:
        result = run_cli("serve", spec)
        assert result.returncode == 2
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_cli_diagram_to_an_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    """diagram -o into a missing directory exits 1 with "cannot write" and no traceback."""
    result = run_cli("diagram", "-o", str(tmp_path / "missing" / "chart.mmd"))
    assert result.returncode == 1
    assert "cannot write" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_port_in_use_is_a_clear_error() -> None:
    """serve on a port already taken exits 1 naming the URL it cannot listen on."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--store", "memory")
    assert result.returncode == 1
    assert f"cannot listen on ws://127.0.0.1:{port}/" in result.stderr


def test_cli_diagram_writes_mermaid_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """diagram prints exactly the chart's Mermaid text to stdout."""
    assert main(["diagram"]) == 0
    assert capsys.readouterr().out == lifecycle_diagram("mermaid")


def test_cli_diagram_dot_to_a_file(tmp_path: Path) -> None:
    """diagram --format dot -o writes the chart to the file as a Graphviz digraph."""
    target = tmp_path / "chart.dot"
    assert main(["diagram", "--format", "dot", "-o", str(target)]) == 0
    assert target.read_text().startswith('digraph "SessionChart" {')


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot program")
def test_cli_diagram_svg_and_png(tmp_path: Path) -> None:
    """diagram --format svg prints an SVG of the chart, and --format png -o writes a PNG file."""
    svg = run_cli("diagram", "--format", "svg")
    assert svg.returncode == 0, svg.stderr
    assert "<svg" in svg.stdout
    assert "terminating" in svg.stdout
    png = tmp_path / "chart.png"
    assert main(["diagram", "--format", "png", "-o", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


async def test_cli_a_second_signal_does_not_cut_shutdown_short(tmp_path: Path) -> None:
    """Shutdown is bounded; a second Ctrl-C or SIGTERM while it runs is logged and
    ignored, and the exit status stays 0."""
    (tmp_path / "slowapp.py").write_text(
        "import trio\n"
        "async def main(session):\n"
        "    session.add_resource('slow', lambda: trio.sleep(1.5))\n"
        "    async for message in session:\n"
        "        await session.send(message.data)\n"
    )
    process, url, _ = await start_server("slowapp:main", "--store", "memory", cwd=tmp_path)
    try:
        async with statesession.open_client(url) as client:
            await client.send("ping")
            assert await client.receive() == "ping"
            process.send_signal(signal.SIGTERM)
            await trio.sleep(0.5)
            process.send_signal(signal.SIGINT)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                async for _ in client:
                    pass
        with trio.fail_after(10):
            assert await process.wait() == 0
        log = "\n".join(await read_rest(process, []))
    finally:
        process.kill()
    assert "already shutting down" in log
    assert "stopped" in log


# -- diagrams need nothing beyond the base install; svg and png say what to install ------


def chart_edges() -> list[tuple[str, str, str, list[str]]]:
    """Every transition SessionChart declares between two states: (source, target, event
    name, guards)."""
    from statesession import SessionChart

    edges = []
    for state in SessionChart.states:
        for transition in state.transitions:
            if transition.internal:
                continue
            (name,) = {event.name for event in transition.events}
            guards = [str(condition) for condition in transition.cond]
            edges.extend((state.id, target.id, name, guards) for target in transition.targets)
    return edges


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot program")
def test_cli_diagram_dot_and_mermaid_need_only_the_base_install() -> None:
    """Without pydot (or any extra), ``diagram`` writes mermaid and ``--format dot`` writes
    a graph Graphviz's dot reads, with every state, the initial and final ones marked, and
    every transition with its event and guards."""
    from statesession import SessionChart

    mermaid = run_cli("diagram", without=["pydot"])
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout == lifecycle_diagram("mermaid")
    dot = run_cli("diagram", "--format", "dot", without=["pydot"])
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout == lifecycle_diagram("dot")
    parsed = subprocess.run(
        ["dot", "-Tjson"], input=dot.stdout, capture_output=True, text=True, check=False
    )
    assert parsed.returncode == 0, parsed.stderr
    assert parsed.stderr == ""
    graph = json.loads(parsed.stdout)
    objects = graph["objects"]
    nodes = {node["name"]: node for node in objects}
    assert {state.id for state in SessionChart.states} <= set(nodes)
    finals = {name for name, node in nodes.items() if node.get("peripheries") == "2"}
    assert finals == {state.id for state in SessionChart.states if state.final}
    drawn = [
        (objects[edge["tail"]]["name"], objects[edge["head"]]["name"], edge.get("label", ""))
        for edge in graph["edges"]
    ]
    # The initial state: the one arrow from a point, as in UML.
    marked = [head for tail, head, _ in drawn if nodes[tail].get("shape") == "point"]
    assert marked == [state.id for state in SessionChart.states if state.initial]
    for source, target, event, guards in chart_edges():
        assert any(
            tail == source
            and head == target
            and event in label
            and all(guard in label for guard in guards)
            for tail, head, label in drawn
        ), (source, target, event, guards)
    for event in SessionChart.events:
        assert any(event.name in label for *_, label in drawn), event.id


def test_cli_diagram_svg_and_png_without_graphviz_say_what_to_install(tmp_path: Path) -> None:
    """With no Graphviz dot program on PATH, svg and png fail in one line that names what
    to install, and write no file."""
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    for fmt in ("svg", "png"):
        target = tmp_path / f"chart.{fmt}"
        result = run_cli("diagram", "--format", fmt, "-o", str(target), env=env)
        assert result.returncode == 1
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert f"cannot render {fmt}" in result.stderr
        assert "Graphviz's dot program" in result.stderr
        assert "apt-get install graphviz" in result.stderr
        assert not target.exists()


# -- a reader that goes away (statesession sessions | head) ------------------------------


async def _store_with(path: Path, sessions: int, messages: int = 0) -> None:
    async with statesession.open_store(path, log_messages=True) as store:
        now = time.time()
        for index in range(sessions):
            store.note(
                statesession.SessionRecord(
                    id=f"session{index:05d}",
                    state="passivated",
                    principal=None,
                    created=now - 60,
                    last_activity=now - index,
                    reason="idle",
                )
            )
        for index in range(messages):
            store.log(
                statesession.LogEntry(
                    session="session00000",
                    time=now,
                    kind="message",
                    event="out",
                    detail=json.dumps({"type": "msg", "seq": index + 1, "data": "x" * 200}),
                )
            )


def read_a_line_and_hang_up(*args: str, cwd: Path) -> tuple[bytes, int, bytes]:
    """Run the command with its output into a pipe, read one line and close the pipe, as
    ``| head -1`` does; return the line, the exit status and what it wrote on stderr."""
    with subprocess.Popen(
        cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        line = process.stdout.readline()
        process.stdout.close()
        status = process.wait(timeout=60)
        return line, status, process.stderr.read()


def test_cli_sessions_and_replay_into_a_pipe_closed_early_stop_quietly(tmp_path: Path) -> None:
    """``statesession sessions | head -1`` (and ``replay``), with far more output than a
    pipe holds: the command stops without a traceback, with status 141 (what a shell
    reports for a program stopped by a closed pipe)."""
    path = tmp_path / "many.db"
    trio.run(_store_with, path, 5000, 900)
    line, status, stderr = read_a_line_and_hang_up("sessions", "--store", str(path), cwd=tmp_path)
    assert line.startswith(b"SESSION")
    assert (status, stderr) == (141, b"")
    line, status, stderr = read_a_line_and_hang_up(
        "replay", "session00000", "--store", str(path), cwd=tmp_path
    )
    assert b'"seq": 1,' in line
    assert (status, stderr) == (141, b"")


def test_cli_diagram_into_a_closed_pipe_stops_quietly() -> None:
    """``statesession diagram | true``: the reader is gone before anything is written; no
    traceback, status 141."""
    for fmt in ("mermaid", "dot"):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            result = subprocess.run(
                cli("diagram", "--format", fmt),
                stdout=write_end,
                stderr=subprocess.PIPE,
                timeout=60,
                check=False,
            )
        finally:
            os.close(write_end)
        assert (result.returncode, result.stderr) == (141, b""), fmt


# -- a serve that cannot serve writes nothing ---------------------------------------------


def pigeon_distribution(root: Path) -> None:
    """A distribution (installed on ``root``) that registers a ``pigeon`` transport whose
    module is missing, as a transport whose extra is not installed is."""
    info = root / "statesession_pigeon-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: statesession-pigeon\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[statesession.transports]\npigeon = statesession_pigeon:transport [pigeon]\n"
    )


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("port in use", 1, "cannot listen on ws://127.0.0.1:{port}/: "),
        ("host not here", 1, "cannot listen on ws://192.0.2.1:0/: "),
        ("unknown transport", 2, "no transport is registered for 'quic'"),
        ("missing extra", 2, "the 'pigeon' transport cannot be loaded"),
        ("unknown store", 2, "no store is registered for pigeon://"),
        ("store URL without a file", 2, "store URL 'sqlite://' names no file"),
    ],
)
def test_cli_serve_that_cannot_serve_writes_no_store(
    tmp_path: Path, case: str, status: int, message: str
) -> None:
    """A serve that fails before it can accept a connection leaves no statesession.db
    behind and says why in one line, with the status docs/operating.md gives."""
    import socket

    env = dict(os.environ)
    pigeon_distribution(tmp_path / "site")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")])
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = {
            "port in use": ["--port", str(port)],
            "host not here": ["--host", "192.0.2.1", "--port", "0"],
            "unknown transport": ["--transport", "quic"],
            "missing extra": ["--transport", "pigeon"],
            "unknown store": ["--store", "pigeon://coop"],
            "store URL without a file": ["--store", "sqlite://"],
        }[case]
        result = run_cli("serve", *args, cwd=tmp_path, env=env)
    assert result.returncode == status, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("statesession: " + message.format(port=port))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


async def test_cli_serve_holds_connections_that_arrive_before_the_manager(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """serve listens before it opens the store: a connection accepted meanwhile is neither
    refused nor lost but served once the manager exists, and one still waiting when the
    server stops is closed."""
    from statesession._cli.serve import _Listener
    from statesession.testing import memory_channel_pair

    from ..helpers import RawPeer, echo_app

    listener = _Listener(
        statesession.load_transport("tcp"), "tcp://127.0.0.1:0", statesession.SessionConfig()
    )
    server, client = memory_channel_pair()
    peer = RawPeer(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.serve_channel, server)
        await peer.send({"type": "hello", "v": 1})
        await peer.send({"type": "msg", "seq": 1, "data": "early"})
        with trio.move_on_after(60) as waited:
            await peer.receive(timeout=120)
        assert waited.cancelled_caught
        async with statesession.open_manager(echo_app) as manager:
            listener.admit(manager)
            assert (await peer.receive())["type"] == "welcome"
            assert (await peer.receive_type("msg"))["data"] == "early"
            await peer.send({"type": "bye"})
            await peer.receive_type("closed")
    late_server, late_client = memory_channel_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            _Listener(listener.transport, listener.url, listener.config).serve_channel, late_server
        )
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    await RawPeer(late_client).expect_closed()


# -- unknown options are reported by the command they were given to ---------------------


@pytest.mark.parametrize("command", [["serve"], ["sessions"], ["replay", "abc"], ["diagram"]])
def test_cli_unknown_option_is_reported_by_its_command(command: list[str]) -> None:
    """``statesession serve --bogus`` is answered with serve's usage and name (status 2);
    an unknown option before the command stays the top level's."""
    result = run_cli(*command, "--bogus")
    assert result.returncode == 2
    name = f"statesession {command[0]}"
    assert result.stderr.startswith(f"usage: {name} "), result.stderr
    assert f"\n{name}: error: unrecognized arguments: --bogus\n" in result.stderr
    top = run_cli("--bogus", *command)
    assert top.returncode == 2
    assert top.stderr.startswith("usage: statesession [-h] COMMAND"), top.stderr
    assert "\nstatesession: error: unrecognized arguments: --bogus\n" in top.stderr


# -- counts -------------------------------------------------------------------------------


def test_cli_sessions_counts_in_words(tmp_path: Path) -> None:
    """The summary line of ``statesession sessions`` says "1 session", "2 sessions"."""
    for count, summary in [(1, "1 session"), (2, "2 sessions"), (0, "0 sessions")]:
        path = tmp_path / f"{count}.db"
        trio.run(_store_with, path, count)
        result = run_cli("sessions", "--store", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == summary
