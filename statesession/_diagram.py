"""The lifecycle diagram, generated from SessionChart (sans-IO)."""

from __future__ import annotations

from statemachine.contrib.diagram.formatter import formatter

from ._chart import SessionChart

__all__ = ["lifecycle_diagram"]


def lifecycle_diagram(fmt: str = "mermaid") -> str:
    """The lifecycle chart as text in ``fmt`` (``"mermaid"``, ``"dot"``, ...)."""
    return formatter.render(SessionChart, fmt).rstrip("\n") + "\n"
