"""The ``statesession`` command line: one parser per command, and the ``serve`` options
for the session limits and timeouts, generated from the fields of SessionConfig (flag,
type, choices and help all come from the field).

Each command's parser reports what it does not understand itself, with its own usage
and name (a :class:`_CommandParser`), instead of leaving it to the top-level parser.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .._core.config import SessionConfig

__all__ = ["DEFAULT_HOST", "DEFAULT_STORE", "_parser"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STORE = "statesession.db"


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: it reports unknown arguments itself, with its own usage and
    name, instead of leaving them to the top-level parser."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "session limits and timeouts (each is a SessionConfig field; seconds, bytes, counts)"
    )
    hints = typing.get_type_hints(SessionConfig)
    for field in attrs.fields(SessionConfig):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
        kind: Any = str if choices else type(field.default)
        group.add_argument(
            flag,
            dest=f"config_{field.name}",
            type=kind,
            choices=choices,
            default=None,
            metavar=None if choices else kind.__name__.upper(),
            help=f"{field.metadata['help'].replace('``', '')} (default: {field.default})",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statesession",
        description=(
            "Robust client sessions: serve them, inspect the ones a store keeps, or draw "
            "their lifecycle."
        ),
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )

    serve = commands.add_parser(
        "serve",
        help="run a session server",
        description=(
            "Serve sessions of APP (default: the built-in demo) until Ctrl-C or SIGTERM, "
            "which save every session to the store for the next server to bring back "
            "(with --store memory: terminate it) and tell each client why."
        ),
    )
    serve.add_argument(
        "app",
        nargs="?",
        default=None,
        metavar="APP",
        help="the app to run, as module:function (default: the built-in demo)",
    )
    serve.add_argument(
        "--transport",
        default="websocket",
        help="transport name: websocket (default), websockets, tcp, or any registered one",
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"default: {DEFAULT_HOST}")
    serve.add_argument(
        "--port",
        type=int,
        default=None,
        help="default: 8765 for websocket, 8766 for tcp; 0 picks a free port",
    )
    serve.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="PATH|URL",
        help=(
            f"SQLite file passivated sessions and the event log go to (default: "
            f"./{DEFAULT_STORE}), or a store URL: sqlite:///path/to/file.db, memory:// "
            "(passivated sessions kept in this process), or any registered scheme; "
            "'memory' for none: sessions live in memory only and end when the server stops"
        ),
    )
    serve.add_argument(
        "--log-messages",
        action="store_true",
        help="log every message in the event log too, not only lifecycle transitions",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    _config_arguments(serve)

    sessions = commands.add_parser(
        "sessions",
        help="list the sessions a store knows",
        description=(
            "List the sessions recorded in a store, most recently active first: id, last "
            "recorded state, age, time since the last activity, whether a snapshot is held "
            "(it can be resumed), and why it ended or was saved."
        ),
    )
    sessions.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="PATH|URL",
        help=f"SQLite file or store URL (default: ./{DEFAULT_STORE})",
    )

    replay = commands.add_parser(
        "replay",
        help="print a session's history and check it against the lifecycle chart",
        description=(
            "Print the transitions (and logged messages) of a session, then drive a fresh "
            "SessionChart through them to check that the history is a legal path of the "
            "chart. Exit status: 0 legal, 1 illegal or corrupt, 2 unknown session."
        ),
    )
    replay.add_argument(
        "session",
        metavar="SESSION_ID",
        help="the session's id (ids this server makes never begin with '-'; one that does "
        "goes after '--': statesession replay -- -abc)",
    )
    replay.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="PATH|URL",
        help=f"SQLite file or store URL (default: ./{DEFAULT_STORE})",
    )

    diagram = commands.add_parser(
        "diagram",
        help="write the session lifecycle diagram",
        description="Write the lifecycle chart, generated from SessionChart.",
    )
    diagram.add_argument(
        "--format",
        default="mermaid",
        choices=["mermaid", "dot", "svg", "png"],
        help="mermaid and dot are text, and need nothing more; svg and png are drawn by "
        "Graphviz's dot program, which must be installed",
    )
    diagram.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    return parser
