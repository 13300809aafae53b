"""``statesession serve``: run a session server until SIGINT or SIGTERM.

Theory of operation
-------------------
``serve`` does everything that can fail for a reason the user can fix before it writes
anything: it loads the app, the transport and (for a store URL) the store's backend, then
listens, and only then opens the store and the manager; a connection accepted meanwhile
waits for the manager (a :class:`_Listener`) instead of being refused. The first signal
saves (or, with ``--store memory``, terminates) every session and stops; later ones are
only logged, so they cannot cut the bounded shutdown short.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from .._core.channel import Channel
from .._core.config import SessionConfig
from .._core.exceptions import ConfigError, StoreError, TransportError
from .._core.util import collapse_single_exception_group, plural
from .._runtime.transport import Transport, for_role, load_transport

if typing.TYPE_CHECKING:
    from .._runtime.manager import SessionManager

__all__ = ["_Listener", "_run_serve"]

log = logging.getLogger("statesession")


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


#: The port served at for a transport that declares no default port.
_FALLBACK_PORT = 8765


def _url(args: argparse.Namespace, transport: Transport) -> str:
    """The URL to serve at: ``--host`` and ``--port``, else the transport's default port,
    with the scheme ``--transport`` named (an entry point registered under a scheme), else
    the transport's first (a transport that declares none: its name)."""
    port = args.port
    if port is None:
        port = _FALLBACK_PORT if transport.default_port is None else transport.default_port
    scheme = args.transport
    if scheme not in transport.schemes and transport.schemes:
        scheme = transport.schemes[0]
    host = f"[{args.host}]" if ":" in args.host else args.host
    return f"{scheme}://{host}:{port}/"


def _check_store(location: str) -> None:
    """Fail before listening for a store URL of a scheme no store is registered for, or
    one that names no file."""
    from .._stores.factory import store_file
    from .._stores.registry import load_store_opener, url_scheme

    scheme = url_scheme(location)
    if scheme is not None:
        load_store_opener(scheme)
        store_file(location)


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
                            plural(len(manager), "session"),
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
    try:
        config = SessionConfig(**overrides)
        app = _load_app(args.app)
        transport = for_role(load_transport(args.transport), "serve")
        url = _url(args, transport)
        listener = _Listener(transport, url, config)
        _check_store(args.store)
        trio.run(_serve, app, listener, args.store, args.log_messages)
    except (ConfigError, _UsageError, TransportError, StoreError) as exc:
        print(f"statesession: {exc}", file=sys.stderr)
        return 2
    except _CannotListen as exc:
        print(f"statesession: {exc}", file=sys.stderr)
        return 1
    return 0
