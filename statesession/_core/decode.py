"""Wire protocol v1: parsing and validating frames (sans-IO).

Theory of operation
-------------------
:func:`decode_client_frame` and :func:`decode_server_frame` turn text into frame values
or raise :class:`~statesession.ProtocolError` with the code the peer must be told
(``bad_frame``, ``bad_version``, ``frame_too_large``). A frame is checked in order: its
size against ``max_frame``, UTF-8, JSON (no ``NaN``, no number a float cannot hold), its
shape (:func:`~.shape.check_shape`), an object with a string ``type``; then the decoder
of that type checks each field's type and bounds. Unknown fields are ignored, so a
later minor revision can add fields without breaking v1 peers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from .exceptions import ProtocolError
from .frames import (
    MAX_ID_LENGTH,
    MAX_SEQ,
    MAX_TEXT_LENGTH,
    PROTOCOL_VERSION,
    AckFrame,
    ByeFrame,
    ClientFrame,
    ClosedFrame,
    ErrorFrame,
    HelloFrame,
    MsgFrame,
    PingFrame,
    PongFrame,
    ServerFrame,
    StateFrame,
    WelcomeFrame,
)
from .shape import MAX_DEPTH, check_shape

__all__ = ["decode_client_frame", "decode_server_frame"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_INF = float("inf")


def _finite_float(text: str) -> float:
    """A JSON number as a float; one too large for a float (``1e400``) would become
    infinity, which JSON cannot encode again (to log it, or to echo it), so it is refused
    here, where the peer can be told."""
    value = float(text)
    if value == _INF or value == -_INF:
        raise ValueError(f"number {text[:40]} is out of range for a 64-bit float")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _bad(message: str) -> ProtocolError:
    return ProtocolError("bad_frame", message)


def _parse(text: str | bytes, max_frame: int) -> tuple[str, dict[str, Any]]:
    if isinstance(text, bytes | bytearray | memoryview):
        size = len(text)
        if size > max_frame:
            raise ProtocolError(
                "frame_too_large",
                f"frame of {size} bytes is over the limit of {max_frame} bytes",
                fatal=True,
            )
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(f"frame is not UTF-8 text: {exc}") from None
    elif not isinstance(text, str):
        raise _bad(f"frame must be text, got {type(text).__name__}")
    elif len(text) * 4 > max_frame and len(text.encode("utf-8", "surrogatepass")) > max_frame:
        raise ProtocolError(
            "frame_too_large",
            f"frame of {len(text.encode('utf-8', 'surrogatepass'))} bytes is over the limit "
            f"of {max_frame} bytes",
            fatal=True,
        )
    try:
        obj = _decoder.decode(text)
    except ValueError as exc:
        raise _bad(f"frame is not valid JSON: {exc}") from None
    except RecursionError:
        raise _bad(
            f"frame nests JSON arrays or objects too deeply; the limit is {MAX_DEPTH}"
        ) from None
    try:
        check_shape(text, obj)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    if type(obj) is not dict:
        raise _bad(f"frame must be a JSON object, got {_json_type(obj)}")
    kind = obj.get("type")
    if type(kind) is not str:
        raise _bad('frame must have a string field "type"')
    return kind, obj


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _int(obj: Mapping[str, Any], kind: str, name: str, *, minimum: int) -> int:
    value = obj.get(name)
    if type(value) is not int:
        if name not in obj:
            raise _bad(f'{kind} frame needs an integer field "{name}"')
        raise _bad(f"{kind}.{name} must be an integer, got {_json_type(value)}")
    if not minimum <= value <= MAX_SEQ:
        raise _bad(f"{kind}.{name} must be between {minimum} and {MAX_SEQ}, got {value}")
    return value


def _opt_int(obj: Mapping[str, Any], kind: str, name: str, *, minimum: int) -> int | None:
    if obj.get(name) is None:
        return None
    return _int(obj, kind, name, minimum=minimum)


def _opt_str(
    obj: Mapping[str, Any], kind: str, name: str, *, limit: int, empty: bool = False
) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if type(value) is not str:
        raise _bad(f"{kind}.{name} must be a string, got {_json_type(value)}")
    if len(value) > limit:
        raise _bad(f"{kind}.{name} is {len(value)} characters long; the limit is {limit}")
    if not value and not empty:
        raise _bad(f"{kind}.{name} must not be empty")
    return value


def _str(obj: Mapping[str, Any], kind: str, name: str, *, limit: int) -> str:
    value = _opt_str(obj, kind, name, limit=limit, empty=True)
    if value is None:
        raise _bad(f'{kind} frame needs a string field "{name}"')
    return value


def _opt_bool(obj: Mapping[str, Any], kind: str, name: str) -> bool:
    if obj.get(name) is None:
        return False
    return _bool(obj, kind, name)


def _bool(obj: Mapping[str, Any], kind: str, name: str) -> bool:
    value = obj.get(name)
    if type(value) is not bool:
        raise _bad(f"{kind}.{name} must be a boolean, got {_json_type(value)}")
    return value


def _number(obj: Mapping[str, Any], kind: str, name: str) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{kind}.{name} must be a number, got {_json_type(value)}")
    try:
        return float(value)
    except OverflowError:
        raise _bad(f"{kind}.{name} is too large for a 64-bit float") from None


def _hello(obj: Mapping[str, Any]) -> HelloFrame:
    v = obj.get("v")
    if type(v) is not int:
        raise ProtocolError(
            "bad_version",
            f'hello needs an integer field "v"; this server speaks v{PROTOCOL_VERSION}',
            fatal=True,
        )
    if v != PROTOCOL_VERSION:
        raise ProtocolError(
            "bad_version",
            f"protocol version {v} is not supported; this server speaks v{PROTOCOL_VERSION}",
            fatal=True,
        )
    session = _opt_str(obj, "hello", "session", limit=MAX_ID_LENGTH)
    token = _opt_str(obj, "hello", "token", limit=MAX_ID_LENGTH)
    if (session is None) != (token is None):
        raise _bad("hello.session and hello.token go together: give both to resume, or neither")
    client = _opt_str(obj, "hello", "client", limit=MAX_ID_LENGTH)
    ack = _opt_int(obj, "hello", "ack", minimum=0)
    resume = _opt_bool(obj, "hello", "resume")
    if session is None:
        if ack is not None:
            raise _bad("hello.ack needs hello.session: a new session has no history")
        if resume:
            raise _bad("hello.resume needs hello.session: there is nothing to resume")
    elif resume:
        if client is None:
            raise _bad("hello.resume needs hello.client: the client to resume")
    elif ack:
        raise _bad(
            f"hello.ack is {ack} on a join, but a joining client has received nothing; "
            "to continue a client, send hello.resume: true with its hello.client"
        )
    return HelloFrame(
        v=v,
        session=session,
        token=token,
        client=client,
        ack=ack,
        auth=obj.get("auth"),
        resume=resume,
    )


def _msg(obj: Mapping[str, Any]) -> MsgFrame:
    if "data" not in obj:
        raise _bad('msg frame needs a field "data"')
    return MsgFrame(seq=_int(obj, "msg", "seq", minimum=1), data=obj["data"])


def _ack(obj: Mapping[str, Any]) -> AckFrame:
    return AckFrame(seq=_int(obj, "ack", "seq", minimum=0))


def _ping(obj: Mapping[str, Any]) -> PingFrame:
    return _PING


def _pong(obj: Mapping[str, Any]) -> PongFrame:
    return _PONG


def _bye(obj: Mapping[str, Any]) -> ByeFrame:
    return ByeFrame(reason=_opt_str(obj, "bye", "reason", limit=MAX_TEXT_LENGTH, empty=True))


def _welcome(obj: Mapping[str, Any]) -> WelcomeFrame:
    v = obj.get("v")
    if v != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", f"server speaks protocol version {v!r}", fatal=True)
    return WelcomeFrame(
        session=_str(obj, "welcome", "session", limit=MAX_ID_LENGTH),
        token=_str(obj, "welcome", "token", limit=MAX_ID_LENGTH),
        client=_str(obj, "welcome", "client", limit=MAX_ID_LENGTH),
        resumed=_bool(obj, "welcome", "resumed"),
        state=_str(obj, "welcome", "state", limit=MAX_ID_LENGTH),
        ack=_int(obj, "welcome", "ack", minimum=0),
        heartbeat=_number(obj, "welcome", "heartbeat"),
        window=_number(obj, "welcome", "window"),
        inbox_messages=_opt_int(obj, "welcome", "inbox_messages", minimum=1),
        inbox_bytes=_opt_int(obj, "welcome", "inbox_bytes", minimum=1),
        received=_opt_int(obj, "welcome", "received", minimum=0),
    )


def _state(obj: Mapping[str, Any]) -> StateFrame:
    return StateFrame(state=_str(obj, "state", "state", limit=MAX_ID_LENGTH))


def _error(obj: Mapping[str, Any]) -> ErrorFrame:
    return ErrorFrame(
        code=_str(obj, "error", "code", limit=MAX_ID_LENGTH),
        message=_str(obj, "error", "message", limit=MAX_TEXT_LENGTH),
        fatal=_bool(obj, "error", "fatal"),
    )


def _closed(obj: Mapping[str, Any]) -> ClosedFrame:
    return ClosedFrame(reason=_str(obj, "closed", "reason", limit=MAX_TEXT_LENGTH))


_PING = PingFrame()
_PONG = PongFrame()

_CLIENT_DECODERS: Final[dict[str, Callable[[Mapping[str, Any]], ClientFrame]]] = {
    "msg": _msg,
    "ack": _ack,
    "ping": _ping,
    "pong": _pong,
    "hello": _hello,
    "bye": _bye,
}
_SERVER_DECODERS: Final[dict[str, Callable[[Mapping[str, Any]], ServerFrame]]] = {
    "msg": _msg,
    "ack": _ack,
    "ping": _ping,
    "pong": _pong,
    "welcome": _welcome,
    "state": _state,
    "error": _error,
    "closed": _closed,
}


F = TypeVar("F")


def _decode(
    text: str | bytes,
    max_frame: int,
    decoders: Mapping[str, Callable[[Mapping[str, Any]], F]],
    side: str,
) -> F:
    kind, obj = _parse(text, max_frame)
    decoder = decoders.get(kind)
    if decoder is None:
        raise _bad(
            f"unknown frame type {kind[:MAX_ID_LENGTH]!r}; a {side} sends one of "
            f"{', '.join(decoders)}"
        )
    return decoder(obj)


def decode_client_frame(text: str | bytes, *, max_frame: int) -> ClientFrame:
    """Decode a frame a client sent, or raise :class:`ProtocolError`."""
    return _decode(text, max_frame, _CLIENT_DECODERS, "client")


def decode_server_frame(text: str | bytes, *, max_frame: int) -> ServerFrame:
    """Decode a frame a server sent, or raise :class:`ProtocolError`."""
    return _decode(text, max_frame, _SERVER_DECODERS, "server")
