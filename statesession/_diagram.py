"""The lifecycle diagram, generated from SessionChart (sans-IO)."""

from __future__ import annotations

from statemachine.contrib.diagram import DotGraphMachine
from statemachine.contrib.diagram.formatter import formatter

from ._chart import SessionChart

__all__ = ["lifecycle_diagram", "lifecycle_png"]


def lifecycle_diagram(fmt: str = "mermaid") -> str:
    """The lifecycle chart as text: ``"mermaid"``, ``"dot"``, or ``"svg"`` (svg needs
    pydot and Graphviz's ``dot`` program)."""
    return formatter.render(SessionChart, fmt).rstrip("\n") + "\n"


def lifecycle_png() -> bytes:
    """The lifecycle chart as a PNG image (needs pydot and Graphviz's ``dot`` program)."""
    graph = DotGraphMachine(SessionChart).get_graph()  # type: ignore[no-untyped-call]
    data: bytes = graph.create_png()
    return data
