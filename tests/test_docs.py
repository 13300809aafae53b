"""The docs are executed: generated blocks are current, examples run, transcripts decode."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from statesession.protocol import decode_client_frame, decode_server_frame

ROOT = Path(__file__).resolve().parent.parent
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
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_docs_readme_code_is_valid_python() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks
    for block in blocks:
        ast.parse(block)


def test_docs_relative_links_resolve() -> None:
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
