"""The rules of a Transport itself, beside the Channel checks of ``_conformance``: what it
declares (name, URL schemes, default port, roles) and how it serves and connects.

:func:`check_declarations` reads the declarations; :func:`check_transport` checks them
and then runs the transport over 127.0.0.1. Both raise ``AssertionError`` saying what
went wrong.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import trio

from .._core.channel import Channel
from .._core.config import SessionConfig
from .._core.exceptions import ChannelBrokenError, TransportError
from .._core.util import collapse_single_exception_group
from .._runtime.transport import Transport
from . import _conformance
from ._conformance import _expect, _text

__all__ = ["check_declarations", "check_transport"]

#: What RFC 3986 allows as a URL scheme, lower case (``urlsplit`` lowers what it reads).
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


def check_declarations(transport: Transport) -> None:
    """Check what ``transport`` declares: a name; one URL scheme or more, each a valid
    lower-case scheme and none twice; a default port that is a port (1-65535) or
    ``None``; and at least one role (``can_serve``, ``can_connect``)."""
    label = f"transport {transport.name!r}"
    _expect(
        isinstance(transport.name, str) and bool(transport.name),
        f"transport {transport!r} declares no name",
    )
    schemes = transport.schemes
    _expect(
        isinstance(schemes, tuple) and bool(schemes),
        f"{label} declares no URL schemes (schemes = {schemes!r}; e.g. ('ws', 'wss'))",
    )
    for scheme in schemes:
        _expect(
            isinstance(scheme, str) and _SCHEME.fullmatch(scheme) is not None,
            f"{label} declares {scheme!r}, which is not a lower-case URL scheme",
        )
    _expect(len(set(schemes)) == len(schemes), f"{label} declares a scheme twice: {schemes}")
    port = transport.default_port
    _expect(
        port is None or (type(port) is int and 0 < port < 65536),
        f"{label} declares default_port = {port!r}: a port is 1-65535 (or None: no port)",
    )
    _expect(
        transport.can_serve or transport.can_connect,
        f"{label} neither serves nor connects (it overrides neither serve nor connect)",
    )


def _check_url(transport: Transport, url: str, what: str, *, bound: bool = True) -> None:
    """``url`` is of a scheme ``transport`` declares, and when ``bound`` (a URL ``serve``
    reported) names the port bound, if the transport's URLs have ports."""
    parts = urlsplit(url)
    _expect(
        parts.scheme in transport.schemes,
        f"{what} {url!r} has a scheme transport {transport.name!r} does not declare "
        f"({', '.join(transport.schemes)})",
    )
    if bound and transport.default_port is not None:
        try:
            port = parts.port
        except ValueError as exc:
            raise AssertionError(f"{what} {url!r} has a bad port: {exc}") from exc
        _expect(bool(port), f"{what} {url!r} names no port (the port actually bound)")


async def _check_missing_role(transport: Transport, url: str) -> None:
    """The role ``transport`` does not have raises TransportError, at once."""
    role = "connect" if transport.can_serve else "serve"
    config = SessionConfig()
    with trio.move_on_after(_conformance.STEP) as waited:
        try:
            async with trio.open_nursery() as nursery:
                if role == "connect":
                    await transport.connect(url, nursery=nursery, max_frame=config.max_frame)
                else:
                    await nursery.start(
                        lambda task_status: transport.serve(
                            _refuse, url, config=config, task_status=task_status
                        )
                    )
        except Exception as exc:
            error = _alone(exc)
            if isinstance(error, TransportError):
                return
            raise AssertionError(
                f"{role} of transport {transport.name!r}, which cannot {role}, raised "
                f"{type(error).__name__}: {error}; expected TransportError"
            ) from exc
    why = "did not return" if waited.cancelled_caught else "returned"
    raise AssertionError(
        f"{role} of transport {transport.name!r}, which cannot {role}, {why}; "
        "expected TransportError"
    )


def _alone(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one error each."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _refuse(channel: Channel) -> None:
    await channel.aclose()


async def check_transport(transport: Transport, url: str) -> None:
    """Check the rules of a Transport itself (``url``, of one of its schemes, asks for port
    0 on 127.0.0.1): its declarations (:func:`check_declarations`); a role it does not
    have raises ``TransportError``; ``serve`` reports a URL of a declared scheme (naming
    the port bound, when its URLs have ports) that ``connect`` reaches; one connection's
    failure -- its handler raising -- does not stop the others; connecting where nothing
    listens raises ``OSError`` or ``ChannelBrokenError``."""
    check_declarations(transport)
    _check_url(transport, url, "the URL to check at,", bound=False)
    if not (transport.can_serve and transport.can_connect):
        await _check_missing_role(transport, url)
        if transport.can_serve:
            await _check_serve_only(transport, url)
        else:
            await _check_connect_fails(transport, url)
        return
    with collapse_single_exception_group():
        reported = await _check_serving(transport, url)
    await _check_connect_fails(transport, reported)


async def _check_serve_only(transport: Transport, url: str) -> None:
    """A transport that only serves reports a URL of a declared scheme."""
    config = SessionConfig(send_timeout=2.0, handshake_timeout=2.0)
    with collapse_single_exception_group():
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(_conformance.STEP) as starting:
                reported: str = await nursery.start(
                    lambda task_status: transport.serve(
                        _refuse, url, config=config, task_status=task_status
                    )
                )
            _expect(not starting.cancelled_caught, "serve never reported its URL")
            _check_url(transport, reported, "the URL serve reported,")
            nursery.cancel_scope.cancel()


async def _check_serving(transport: Transport, url: str) -> str:
    """Serve and connect twice, the first handler raising; return the URL served at."""
    step = _conformance.STEP
    config = SessionConfig(send_timeout=2.0, handshake_timeout=2.0)
    async with trio.open_nursery() as nursery:
        served = 0

        async def handler(channel: Channel) -> None:
            nonlocal served
            served += 1
            if served == 1:
                raise RuntimeError("a handler failing must end only its own connection")
            await channel.send(_text(await channel.receive()))

        crashed: list[BaseException] = []

        async def run_serve(task_status: trio.TaskStatus[str]) -> None:
            try:
                await transport.serve(handler, url, config=config, task_status=task_status)
            except Exception as exc:
                crashed.append(exc)

        with trio.move_on_after(step) as starting:
            reported: str = await nursery.start(run_serve)
        _expect(not starting.cancelled_caught, "serve never reported its URL")
        _check_url(transport, reported, "the URL serve reported,")
        for attempt in range(2):
            with trio.move_on_after(step) as talking:
                try:
                    channel = await transport.connect(
                        reported, nursery=nursery, max_frame=config.max_frame
                    )
                except (OSError, ChannelBrokenError) as exc:
                    _expect(
                        not crashed,
                        f"serve ended when one connection's handler raised: {crashed[:1]!r}",
                    )
                    raise AssertionError(
                        f"connection {attempt + 1} to {reported} failed: {exc}"
                    ) from exc
                try:
                    await channel.send('{"echo":1}')
                    answer = _text(await channel.receive())
                except ChannelBrokenError:
                    answer = None
                finally:
                    await channel.aclose()
            _expect(not talking.cancelled_caught, f"connection {attempt + 1} hung")
            _expect(
                not crashed,
                f"serve ended when one connection's handler raised: {crashed[:1]!r}",
            )
            if attempt == 1:
                _expect(
                    answer == '{"echo":1}',
                    "the server stopped serving after one connection's handler raised",
                )
        nursery.cancel_scope.cancel()
    return reported


async def _check_connect_fails(transport: Transport, url: str) -> None:
    """Connecting to ``url``, where nothing listens, raises OSError or ChannelBrokenError."""
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(_conformance.STEP):
                stray = await transport.connect(
                    url, nursery=nursery, max_frame=SessionConfig().max_frame
                )
        except (OSError, ChannelBrokenError):
            return
        except Exception as exc:
            raise AssertionError(
                f"connecting where nothing listens raised {type(exc).__name__}: {exc}; "
                "expected OSError or ChannelBrokenError"
            ) from exc
        await stray.aclose()
        raise AssertionError(f"connected to {url} after the server stopped")
