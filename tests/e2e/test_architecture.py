"""The house keeps its shape: no module of the package over 450 lines, no import cycle
among its modules (counting imports made only for type checking, and imports inside
functions), and the sans-IO parts import no trio."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "statesession"
MAX_LINES = 450
#: Packages and modules that must import without trio (they hold rules, not I/O).
SANS_IO = ["statesession._core", "statesession._lifecycle", "statesession._client.state"]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every statesession module ``name`` imports, however (top level, under
    TYPE_CHECKING, or inside a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate in known and candidate != name:
                found.add(candidate)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_architecture_no_module_is_over_450_lines() -> None:
    """Every module of the package is at most 450 lines: a longer one holds more than
    one concern and is split."""
    long = {
        str(path.relative_to(ROOT)): n
        for path in modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_architecture_has_no_import_cycle() -> None:
    """No two modules of the package import each other, directly or around a loop, not
    even for type checking or from inside a function: each layer sits on the ones below."""
    found = modules()
    known = set(found)
    # A package's __init__ re-exporting from its modules is not a layer of its own.
    graph = {
        name: {t for t in imports_of(name, path, known) if not name.startswith(t + ".")}
        for name, path in found.items()
    }
    graph = {name: {t for t in targets if t != "statesession"} for name, targets in graph.items()}
    assert cycles(graph) == []


def test_architecture_sans_io_parts_import_no_trio() -> None:
    """Every module of the core and the lifecycle, and the client's protocol state,
    imports without trio (checked in a fresh interpreter)."""
    names = [n for n in modules() if any(n == s or n.startswith(s + ".") for s in SANS_IO)]
    assert len(names) > 10
    code = (
        "import sys, importlib\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'trio' or m.startswith('trio.'))\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
