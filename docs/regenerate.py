"""Rewrite the generated parts of the docs: ``python docs/regenerate.py``.

Each generated block sits between ``<!-- generated:NAME -->`` and ``<!-- /generated -->``
markers; tests/e2e/test_docs.py fails when a block is out of date.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def _lifecycle() -> str:
    from statesession._lifecycle.diagram import lifecycle_diagram

    return "```mermaid\n" + lifecycle_diagram("mermaid") + "```\n"


def _config_table() -> str:
    import attrs

    from statesession import SessionConfig

    rows = ["| flag | default | what it sets |", "|---|---|---|"]
    for field in attrs.fields(SessionConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata["help"].replace("``", "`").replace("|", "\\|")
        rows.append(f"| `{flag}` | `{field.default!r}` | {help_text} |")
    return "\n".join(rows) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "lifecycle-diagram": _lifecycle,
    "config-table": _config_table,
}
BLOCK = re.compile(
    r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S
)


def render(text: str) -> str:
    """``text`` with every generated block brought up to date."""
    return BLOCK.sub(lambda m: m[1] + GENERATORS[m["name"]]() + m[4], text)


def main() -> int:
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        fresh = render(text)
        if fresh != text:
            page.write_text(fresh)
            print(f"updated {page.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
