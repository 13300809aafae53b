"""The ``statesession`` command: ``serve`` a session server, list the ``sessions`` a
store keeps, ``replay`` one, draw the ``diagram``.

Theory of operation
-------------------
Each command's parser reports what it does not understand itself, with its own usage.
``serve`` does everything that can fail for a reason the user can fix before it writes
anything: it loads the app and the transport, then listens, and only then opens the store
and the manager; a connection accepted meanwhile waits for the manager (a
:class:`_Listener`) instead of being refused. The commands that write to standard
output stop quietly when its reader goes away (``statesession sessions | head``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import time
import typing
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from .._core.channel import Channel
from .._core.config import SessionConfig
from .._core.exceptions import ConfigError, StoreError, TransportError
from .._core.util import collapse_single_exception_group
from .._lifecycle.diagram import lifecycle_diagram, lifecycle_image
from .._runtime.transport import Transport, pick_transport

if typing.TYPE_CHECKING:
    from .._runtime.manager import SessionManager

__all__ = ["main"]

log = logging.getLogger("statesession")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STORE = "statesession.db"
DEFAULT_PORTS = {"websocket": 8765, "websockets": 8765, "tcp": 8766}
SCHEMES = {"websocket": "ws", "websockets": "ws"}
#: The exit status when standard output's reader went away: what a shell reports for a
#: program that a closed pipe stopped (128 + SIGPIPE, 13), as ``seq 100000 | head -1``
#: gives its first command under ``set -o pipefail``. Not 0: the output did not all
#: arrive.
EXIT_BROKEN_PIPE = 141


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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


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
        metavar="PATH",
        help=(
            f"SQLite file passivated sessions and the event log go to (default: "
            f"./{DEFAULT_STORE}); 'memory' for none: sessions live in memory only and end "
            "when the server stops"
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
        "--store", default=DEFAULT_STORE, metavar="PATH", help=f"default: ./{DEFAULT_STORE}"
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
        "--store", default=DEFAULT_STORE, metavar="PATH", help=f"default: ./{DEFAULT_STORE}"
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


class _UsageError(Exception):
    """A bad command line: reported in one line, exit status 2."""


def _load_app(spec: str | None) -> Any:
    if spec is None:
        from .demo import demo

        return demo
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise _UsageError(f"APP must look like module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _UsageError(f"cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attr, None)
    if app is None:
        raise _UsageError(f"{module_name!r} has no {attr!r}")
    if not callable(app):
        raise _UsageError(f"{spec!r} is not callable")
    return app


def _url(args: argparse.Namespace) -> str:
    port = args.port if args.port is not None else DEFAULT_PORTS.get(args.transport, 8765)
    scheme = SCHEMES.get(args.transport, args.transport)
    host = f"[{args.host}]" if ":" in args.host else args.host
    return f"{scheme}://{host}:{port}/"


@asynccontextmanager
async def _maybe_store(location: str, log_messages: bool) -> AsyncIterator[Any]:
    if location == "memory":
        yield None
        return
    from .._stores.factory import open_store

    async with open_store(location, log_messages=log_messages) as store:
        yield store


class _CannotListen(Exception):
    """The transport could not listen (the port is taken, the host is not this machine's)."""


@attrs.define(eq=False)
class _Listener:
    """Accepts connections before the manager exists: each waits until :meth:`admit`
    hands it the manager, or is closed if the server stops first."""

    transport: Transport
    url: str
    config: SessionConfig
    _manager: SessionManager | None = None
    _admitted: trio.Event = attrs.Factory(trio.Event)
    _stop: trio.CancelScope = attrs.Factory(trio.CancelScope)
    _stopped: trio.Event = attrs.Factory(trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._stop:
                await self.transport.serve(
                    self.serve_channel, self.url, config=self.config, task_status=task_status
                )
        except OSError as exc:
            raise _CannotListen(f"cannot listen on {self.url}: {exc}") from exc
        finally:
            self._stopped.set()

    def admit(self, manager: SessionManager) -> None:
        self._manager = manager
        self._admitted.set()

    async def serve_channel(self, channel: Channel) -> None:
        try:
            await self._admitted.wait()
        except BaseException:  # the server stopped before it could serve this one
            with trio.CancelScope() as scope:
                scope.cancel()
                await channel.aclose("server_shutdown")
            raise
        assert self._manager is not None
        await self._manager.serve_channel(channel)

    async def aclose(self) -> None:
        """Stop listening; return once every connection has ended."""
        self._stop.cancel()
        await self._stopped.wait()


async def _serve(
    app: Any,
    listener: _Listener,
    store_location: str,
    log_messages: bool,
) -> None:
    from .._runtime.manager import open_manager

    with (
        collapse_single_exception_group(),
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
    ):
        async with trio.open_nursery() as nursery:
            # Listen first: nothing is written before connections can be accepted.
            bound = await nursery.start(listener.run)
            async with _maybe_store(store_location, log_messages) as store:
                log.info("store: %s", store_location if store is not None else "none (memory)")
                async with open_manager(app, config=listener.config, store=store) as manager:
                    listener.admit(manager)
                    log.info("serving %s", bound)
                    async for signum in signals:
                        log.info(
                            "%s: %s %s and stopping",
                            signal.Signals(signum).name,
                            "saving" if store is not None else "terminating",
                            _plural(len(manager), "session"),
                        )
                        break
                    # Shutting down is bounded; later signals must not cut it short.
                    nursery.start_soon(_ignore_more, signals)
                # Every session has run its cleanup and told its clients; stop listening
                # and let every connection end before the store commits and closes.
                await listener.aclose()
            nursery.cancel_scope.cancel()
    log.info("stopped")


async def _ignore_more(signals: Any) -> None:
    async for signum in signals:
        log.info("%s: already shutting down", signal.Signals(signum).name)


def _run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    overrides = {
        name[len("config_") :]: value
        for name, value in vars(args).items()
        if name.startswith("config_") and value is not None
    }
    url = _url(args)
    try:
        config = SessionConfig(**overrides)
        app = _load_app(args.app)
        listener = _Listener(pick_transport(url, args.transport), url, config)
        trio.run(_serve, app, listener, args.store, args.log_messages)
    except (ConfigError, _UsageError, TransportError, StoreError) as exc:
        print(f"statesession: {exc}", file=sys.stderr)
        return 2
    except _CannotListen as exc:
        print(f"statesession: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_diagram(args: argparse.Namespace) -> int:
    data: str | bytes
    if args.format in ("mermaid", "dot"):
        data = lifecycle_diagram(args.format)
    elif args.format == "png" and args.output is None and sys.stdout.isatty():
        print("statesession: png is binary; write it with -o FILE", file=sys.stderr)
        return 2
    else:
        try:
            data = lifecycle_image(args.format)
        except OSError as exc:
            print(f"statesession: cannot render {args.format}: {exc}", file=sys.stderr)
            return 1
        if args.format == "svg":
            data = data.decode()
    if args.output is None:
        if isinstance(data, str):
            sys.stdout.write(data)
        else:
            sys.stdout.buffer.write(data)
        return 0
    try:
        if isinstance(data, str):
            args.output.write_text(data)
        else:
            args.output.write_bytes(data)
    except OSError as exc:
        print(f"statesession: cannot write {args.output}: {exc}", file=sys.stderr)
        return 1
    return 0


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0):.0f}s"


async def _list_sessions(location: str) -> list[Any]:
    from .._stores.factory import open_store

    async with open_store(location) as store:
        return await store.sessions()


def _existing_store(location: str) -> bool:
    if location != "memory" and not Path(location).exists():
        print(f"statesession: no store at {location}", file=sys.stderr)
        return False
    return True


def _run_sessions(args: argparse.Namespace) -> int:
    if not _existing_store(args.store):
        return 2
    try:
        records = trio.run(_list_sessions, args.store)
    except StoreError as exc:
        print(f"statesession: {exc}", file=sys.stderr)
        return 1
    now = time.time()
    print(f"{'SESSION':<18} {'STATE':<13} {'AGE':>7} {'IDLE':>7}  SAVED  REASON")
    for r in records:
        saved = "yes" if r.snapshot else "-"
        print(
            f"{r.id:<18} {r.state:<13} {_ago(now - r.created):>7} "
            f"{_ago(now - r.last_activity):>7}  {saved:<5}  {r.reason or ''}".rstrip()
        )
    print(_plural(len(records), "session"))
    return 0


async def _history(location: str, session_id: str) -> tuple[Any, list[Any]]:
    from .._stores.factory import open_store

    async with open_store(location) as store:
        return await store.record(session_id), await store.history(session_id)


def _run_replay(args: argparse.Namespace) -> int:
    from .._lifecycle.replay import check_history

    if not _existing_store(args.store):
        return 2
    try:
        record, entries = trio.run(_history, args.store, args.session)
    except StoreError as exc:
        print(f"statesession: {exc}", file=sys.stderr)
        return 1
    if record is None and not entries:
        print(f"statesession: no session {args.session!r} in {args.store}", file=sys.stderr)
        return 2
    for entry in entries:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.time))
        stamp += f".{int(entry.time * 1000) % 1000:03d}"
        if entry.kind == "transition":
            print(f"{stamp}  {entry.source} -> {entry.target}  ({entry.event})")
        else:
            print(f"{stamp}    {entry.event:>3} {entry.detail}")
    result = check_history(entries)
    if result.legal:
        print(f"{result.transitions} transitions: a legal path of SessionChart")
        return 0
    print(f"NOT a legal path of SessionChart: {result.problem}")
    return 1


def _discard_stdout() -> None:
    """Point standard output at the null device: its reader is gone, and the interpreter's
    last flush of what is still buffered must not fail (and print a traceback) again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _run_serve(args)
    run = {"sessions": _run_sessions, "replay": _run_replay, "diagram": _run_diagram}
    try:
        status = run[args.command](args)
        sys.stdout.flush()
    except BrokenPipeError:  # statesession sessions | head
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    return status
