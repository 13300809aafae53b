"""The suite's own conventions: every test says what must hold, and is named for it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent

#: ``test_<subject>_<behaviour>``: at least two words after ``test_``.
NAME = re.compile(r"test(_[a-z0-9]+){2,}")


def _test_functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test"
            ):
                found.append((f"{path.relative_to(TESTS)}:{node.lineno} {node.name}", node))
    return found


def test_test_suite_every_test_has_a_docstring_and_a_two_word_name() -> None:
    """Every test function under tests/ has a docstring, and its name is
    test_<subject>_<behaviour>: two or more lowercase words after test_."""
    tests = _test_functions()
    assert len(tests) > 100
    assert not [where for where, node in tests if not ast.get_docstring(node)]
    assert not [where for where, node in tests if not NAME.fullmatch(node.name)]
