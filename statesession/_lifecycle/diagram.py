"""The lifecycle diagram, generated from SessionChart.

Theory of operation
-------------------
python-statemachine reads SessionChart's declaration into a plain description of the
chart (states with their entry/exit actions, which one is initial and which are final,
transitions with their event and guards). Mermaid text is python-statemachine's own
rendering of it; DOT text is rendered here from the same description, so the two show the
same facts and neither needs anything beyond the base install (python-statemachine's DOT
rendering would need pydot). SVG and PNG are Graphviz's ``dot`` program run on the DOT
text: the one thing a picture needs that pip cannot install.
"""

from __future__ import annotations

import subprocess
from typing import Literal

from statemachine.contrib.diagram import formatter
from statemachine.contrib.diagram.extract import extract
from statemachine.contrib.diagram.model import ActionType, StateType

from .chart import SessionChart

__all__ = ["GRAPHVIZ_INSTALL", "lifecycle_diagram", "lifecycle_image"]

#: How to get Graphviz's ``dot`` program, for messages.
GRAPHVIZ_INSTALL = (
    "install Graphviz (Debian, Ubuntu: apt-get install graphviz; macOS: brew install graphviz)"
)

#: The node that points at the initial state.
_INITIAL = "__initial__"


def lifecycle_diagram(fmt: Literal["mermaid", "dot"] = "mermaid") -> str:
    """The lifecycle chart as text: Mermaid's ``stateDiagram-v2`` or Graphviz's DOT."""
    if fmt == "dot":
        return _dot()
    return formatter.render(SessionChart, "mermaid").rstrip("\n") + "\n"


def lifecycle_image(fmt: Literal["svg", "png"]) -> bytes:
    """The lifecycle chart drawn by Graphviz's ``dot`` program. Raises :class:`OSError`
    with a message that says what to install when ``dot`` is not on ``PATH``, and what it
    said when it fails."""
    try:
        done = subprocess.run(
            ["dot", f"-T{fmt}"], input=_dot().encode(), capture_output=True, check=False
        )
    except FileNotFoundError:
        raise OSError(
            f"it needs Graphviz's dot program, which is not on PATH; {GRAPHVIZ_INSTALL}"
        ) from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().replace("\n", "; ")
        raise OSError(f"Graphviz's dot program failed (exit status {done.returncode}): {said}")
    return done.stdout


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _quoted(text: str) -> str:
    return f'"{_escaped(text)}"'


def _dot() -> str:
    graph = extract(SessionChart)
    lines = [
        f"digraph {_quoted(graph.name)} {{",
        "    rankdir=LR;",
        "    node [shape=box, style=rounded, fontname=Helvetica, fontsize=10];",
        "    edge [fontname=Helvetica, fontsize=9];",
        f'    {_quoted(_INITIAL)} [shape=point, width=0.15, label=""];',
    ]
    # SessionChart is flat: no compound or parallel states, no history. In a label,
    # Graphviz's \n ends a centred line and \l a left-aligned one.
    for state in graph.states:
        actions = [
            # "entry / on_enter_active"; an internal transition's body names its event.
            action.body
            if action.type is ActionType.INTERNAL
            else f"{action.type.value} / {action.body}"
            for action in state.actions
        ]
        label = _escaped(state.name) + "\\n" + "".join(_escaped(a) + "\\l" for a in actions)
        final = ", peripheries=2" if state.type is StateType.FINAL else ""
        lines.append(f'    {_quoted(state.id)} [label="{label}"{final}];')
        if state.is_initial:
            lines.append(f"    {_quoted(_INITIAL)} -> {_quoted(state.id)};")
    for transition in graph.transitions:
        if transition.is_internal:  # shown inside its state, as an action, if it has one
            continue
        parts = [transition.event]
        if transition.guards:
            parts.append("[" + ", ".join(transition.guards) + "]")
        label = "\\n".join(_escaped(part) for part in parts)
        for target in transition.targets:
            lines.append(
                f'    {_quoted(transition.source)} -> {_quoted(target)} [label="{label}"];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"
