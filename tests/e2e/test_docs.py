"""The docs are executed: generated blocks are current, examples run, transcripts decode."""

from __future__ import annotations

import ast
import builtins
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

import statesession
from statesession.protocol import decode_client_frame, decode_server_frame
from statesession.testing import memory_channel_pair

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
import regenerate  # noqa: E402


def test_docs_generated_blocks_are_current() -> None:
    """The lifecycle diagram in the docs is what SessionChart generates today."""
    for page in DOCS.glob("*.md"):
        text = page.read_text()
        assert regenerate.render(text) == text, (
            f"{page.name} is stale: run python docs/regenerate.py"
        )
    lifecycle = (DOCS / "lifecycle.md").read_text()
    assert "initializing --> active : Activate [ready]" in lifecycle


def test_docs_protocol_transcript_decodes() -> None:
    """Every frame of the sample conversation is valid protocol v1."""
    text = (DOCS / "protocol.md").read_text()
    lines = re.findall(r"^([CS]): (\{.*\})$", text, re.M)
    assert len(lines) >= 10
    for side, frame in lines:
        decode = decode_client_frame if side == "C" else decode_server_frame
        decode(frame, max_frame=1 << 20)


@pytest.mark.parametrize("example", sorted((DOCS / "examples").glob("*.py")), ids=str)
def test_docs_examples_run(example: Path) -> None:
    """Every program in docs/examples exits 0."""
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def _readme_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    return blocks


def _free_names(tree: ast.Module) -> set[str]:
    """Names a snippet reads without binding them (builtins aside)."""
    bound: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
    return loaded - bound - set(dir(builtins))


def _statesession_names(tree: ast.Module) -> set[str]:
    """Every name a snippet takes from statesession (``statesession.X``, ``from
    statesession import X``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "statesession"
        ):
            names.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module == "statesession":
            names.update(alias.name for alias in node.names)
    return names


def test_docs_readme_code_uses_only_the_public_api() -> None:
    """Every name a README snippet takes from statesession is in __all__ and resolves."""
    used: set[str] = set()
    for block in _readme_blocks():
        used |= _statesession_names(ast.parse(block))
    assert {"open_client", "open_manager"} <= used
    for name in used:
        assert name in statesession.__all__, f"the README uses statesession.{name}"
        getattr(statesession, name)


async def test_docs_readme_sketch_runs() -> None:
    """The README's opening sketch runs as written, its manager and client side by side
    over a memory channel: the client gets the agent's first token and leaving the client
    closes the session's sandbox (the quick start's program is run by test_demo_restart)."""
    (sketch,) = [b for b in _readme_blocks() if "trio.run(" not in b]
    tree = ast.parse(sketch)
    assert _free_names(tree) == {"close_sandbox", "run_agent", "channel", "connect"}
    server, client = memory_channel_pair()
    printed: list[object] = []
    closed: list[str] = []

    async def run_agent(prompt: object) -> AsyncIterator[str]:
        for token in ("echo", str(prompt)):
            yield token

    async def connect() -> statesession.Channel:
        assert not closed, "the sketch's client reconnected"
        return client

    namespace: dict[str, Any] = {
        "close_sandbox": lambda: closed.append("sandbox"),
        "run_agent": run_agent,
        "channel": server,
        "connect": connect,
        "print": printed.append,
    }
    steps = [n for n in tree.body if isinstance(n, ast.AsyncWith)]
    assert len(steps) == 2
    rest = ast.Module(body=[n for n in tree.body if n not in steps], type_ignores=[])
    exec(compile(rest, "README.md", "exec"), namespace)
    for i, step in enumerate(steps):
        source = f"async def _step_{i}():\n" + textwrap.indent(ast.unparse(step), "    ")
        exec(compile(source, "README.md", "exec"), namespace)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(len(steps)):
                nursery.start_soon(namespace[f"_step_{i}"])
    assert printed == [{"token": "echo"}]
    assert closed == ["sandbox"]


def test_docs_relative_links_resolve() -> None:
    """Every relative link in the README and the docs pages points at a file that exists."""
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_docs_install_commands_install_from_a_checkout() -> None:
    """statesession is not on the package index: every ``pip install`` the README and the
    operating guide show installs from the repository's root (``.``), with extras
    pyproject.toml declares, and no page names a ``statesession[...]`` requirement."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["optional-dependencies"])
    for page in [ROOT / "README.md", DOCS / "operating.md"]:
        text = page.read_text()
        assert "statesession[" not in text, f"{page.name} names a requirement not on the index"
        commands = re.findall(r"pip install ([^`\n]*)", text)
        assert commands or page.name != "README.md"
        for command in commands:
            for word in shlex.split(command, comments=True):
                if word.startswith("-"):
                    continue
                path, _, extras = word.partition("[")
                assert path == ".", f"{page.name}: pip install {word} is not the checkout"
                unknown = set(filter(None, extras.rstrip("]").split(","))) - declared
                assert not unknown, f"{page.name}: pip install {word}: no extra {unknown}"
