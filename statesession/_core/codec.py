"""Wire protocol v1: frames, their JSON encoding, and validation (sans-IO).

Theory of operation
-------------------
A frame is one JSON object with a string field ``type``; a transport carries one frame per
message. :func:`decode_client_frame` and :func:`decode_server_frame` turn text into frame
values or raise :class:`~statesession.ProtocolError` with the code the peer must be told
(``bad_frame``, ``bad_version``, ``frame_too_large``). Unknown fields are ignored, so a
later minor revision can add fields without breaking v1 peers.

The message path is kept lean: a server message is encoded once, by :func:`encode_msg`,
and that text is what the replay buffer holds and every connection sends. Encoding uses
ASCII-only JSON, so a frame's length in characters is its length in bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias, TypeVar

import attrs

from .exceptions import MessageTooLargeError, ProtocolError

__all__ = [
    "ERROR_CODES",
    "PROTOCOL_VERSION",
    "AckFrame",
    "ByeFrame",
    "ClientFrame",
    "ClosedFrame",
    "ErrorFrame",
    "HelloFrame",
    "MsgFrame",
    "PingFrame",
    "PongFrame",
    "ServerFrame",
    "StateFrame",
    "WelcomeFrame",
    "decode_client_frame",
    "decode_server_frame",
    "encode_frame",
    "encode_msg",
]

PROTOCOL_VERSION: Final = 1

#: Every error code of protocol v1.
ERROR_CODES: Final = frozenset(
    {
        "bad_frame",
        "bad_version",
        "handshake_timeout",
        "unknown_session",
        "bad_token",
        "resume_gap",
        "session_limit",
        "frame_too_large",
        "terminated",
        "server_shutdown",
        "unavailable",
    }
)
#: The fatal errors after which the same hello can succeed later: the server is stopping
#: (and the next one may resume the session), or cannot attach the session right now
#: (it is being saved, its store is failing, the server is full). A client reconnects
#: after these, with backoff; after any other fatal error it gives up and says why.
RETRYABLE_CODES: Final = frozenset({"server_shutdown", "unavailable", "handshake_timeout"})

#: Longest identifier (session id, client id) and token accepted, in characters.
MAX_ID_LENGTH: Final = 128
#: Longest free-text field (reasons, error messages) accepted, in characters.
MAX_TEXT_LENGTH: Final = 1024
#: Largest sequence number: seqs are 63-bit so that every peer can hold them.
MAX_SEQ: Final = 2**63 - 1
#: Deepest a frame may nest arrays and objects (the frame itself is one level).
MAX_DEPTH: Final = 64
#: Most JSON values one frame may hold (every array element, object key and object
#: value counts): decoded, a value costs 30 to 70 bytes however few bytes it took on the
#: wire, so 1 MiB of ``[[],[],...]`` would be 21 MiB of objects.
MAX_VALUES: Final = 65_536
#: What decoding costs per JSON value, beyond the text, for :func:`decoded_cost`.
VALUE_COST: Final = 56


# -- frames ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class HelloFrame:
    """Client's first frame: create a session, join one as a new client, or resume one
    as the client it was (``resume``)."""

    v: int = PROTOCOL_VERSION
    session: str | None = None
    token: str | None = None
    client: str | None = None
    #: Resuming: the highest server seq the client has processed. Joining: 0 for every
    #: message the server still holds, omitted for those sent from now on.
    ack: int | None = None
    #: Credentials for the server's ``authenticate`` hook, any JSON value.
    auth: Any = None
    #: This is ``client``, welcomed into ``session`` before, continuing its streams; the
    #: server refuses (``resume_gap``) if it no longer remembers it.
    resume: bool = False


@attrs.frozen(kw_only=True)
class WelcomeFrame:
    """Server's answer to ``hello``: the session is attached."""

    v: int = PROTOCOL_VERSION
    session: str
    token: str
    client: str
    resumed: bool
    state: str
    #: Highest client seq the server has processed for this client.
    ack: int
    #: Seconds between server pings on an idle connection.
    heartbeat: float
    #: Seconds the session waits for the client after a disconnect.
    window: float
    #: What the session's inbox holds for its application, in messages and in bytes
    #: (counted as :func:`decoded_cost` counts): a client keeps its unacknowledged
    #: messages within both, so the server never stops reading it. (Absent: no bound.)
    inbox_messages: int | None = None
    inbox_bytes: int | None = None
    #: The highest of this client's seqs the server has received (the application took
    #: them, or will): a client resuming from a new process, without the messages it
    #: sent before, numbers on from here. (Absent: ``ack``.)
    received: int | None = None


@attrs.frozen(kw_only=True)
class MsgFrame:
    """An application message; ``seq`` starts at 1 per direction and never repeats."""

    seq: int
    data: Any


@attrs.frozen(kw_only=True)
class AckFrame:
    """Cumulative acknowledgement: every message up to ``seq`` was processed."""

    seq: int


@attrs.frozen(kw_only=True)
class PingFrame:
    """Liveness probe; the peer answers ``pong``."""


@attrs.frozen(kw_only=True)
class PongFrame:
    """Answer to ``ping``."""


@attrs.frozen(kw_only=True)
class ByeFrame:
    """Client ends the session on purpose."""

    reason: str | None = None


@attrs.frozen(kw_only=True)
class StateFrame:
    """The session's lifecycle state changed."""

    state: str


@attrs.frozen(kw_only=True)
class ErrorFrame:
    """Something the peer sent was refused; ``fatal`` means the connection closes next."""

    code: str
    message: str
    fatal: bool


@attrs.frozen(kw_only=True)
class ClosedFrame:
    """The session has ended; the connection closes next."""

    reason: str


ClientFrame: TypeAlias = HelloFrame | MsgFrame | AckFrame | PingFrame | PongFrame | ByeFrame
ServerFrame: TypeAlias = (
    WelcomeFrame
    | MsgFrame
    | AckFrame
    | PingFrame
    | PongFrame
    | StateFrame
    | ErrorFrame
    | ClosedFrame
)
Frame: TypeAlias = ClientFrame | ServerFrame

PING_TEXT: Final = '{"type":"ping"}'
PONG_TEXT: Final = '{"type":"pong"}'


# -- encoding -------------------------------------------------------------------------

_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_data(data: Any) -> str:
    """Encode an application value as ASCII-only JSON, or raise ``TypeError``."""
    try:
        return _encoder.encode(data)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"message data must be JSON-serializable: {exc}") from None


#: What a ``msg`` frame's envelope adds around its data: one level, and six values.
_ENVELOPE_LEVELS, _ENVELOPE_VALUES = 1, 6


def check_shape(text: str, value: Any, *, data: bool = False) -> None:
    """Raise ``ValueError`` if ``value`` (decoded from, or encoded as, ``text``) nests
    deeper than :data:`MAX_DEPTH` or holds more than :data:`MAX_VALUES` values -- as a
    whole frame, or (``data``) as the data of a ``msg`` frame, inside its envelope.

    Counting the separators in ``text`` (C speed) bounds both from above; only a frame
    over one of those bounds is walked to count exactly, so separators inside strings
    never refuse a frame."""
    levels, values = (_ENVELOPE_LEVELS, _ENVELOPE_VALUES) if data else (0, 0)
    length = len(text)
    if length + 2 * levels <= 2 * MAX_DEPTH:
        return  # too short to nest that deep or hold that many
    opens = text.count("[") + text.count("{")
    if opens + levels <= MAX_DEPTH and (
        length <= MAX_VALUES
        or 1 + values + opens + text.count(",") + text.count(":") <= MAX_VALUES
    ):
        return
    depth = 0
    stack: list[tuple[Any, int]] = [(value, 1 + levels)]
    while stack:
        item, level = stack.pop()
        values += 1
        # (What JSON encodes as an array or an object: tuples and subclasses too.)
        mapping = isinstance(item, dict)
        if mapping or isinstance(item, list | tuple):
            if level > depth:
                depth = level
                if depth > MAX_DEPTH:
                    raise ValueError(
                        f"frame nests JSON arrays or objects too deeply (over {MAX_DEPTH} "
                        f"levels); the limit is {MAX_DEPTH}"
                    )
            children = item.values() if mapping else item
            if mapping:
                values += len(item)  # its keys
            stack.extend((child, level + 1) for child in children)
        if values > MAX_VALUES:
            raise ValueError(
                f"frame holds more than {MAX_VALUES} JSON values; the limit is {MAX_VALUES} "
                "(send fewer, larger values: a list of numbers as one string, say)"
            )


def decoded_cost(text: str | bytes) -> int:
    """About what the decoded frame ``text`` costs in memory, in bytes, erring high: its
    length plus :data:`VALUE_COST` per separator (each value but the first follows a
    ``[``, ``{``, ``,`` or ``:``). What a session's inbox counts, so that it is bounded
    in memory, not just in bytes received.

    A string holding one character beyond Latin-1 is stored at 2 or 4 bytes per
    character, all of them: so a frame that is not plain ASCII, or that has ``\\u``
    escapes, counts its length four times."""
    if isinstance(text, str):
        separators = text.count(",") + text.count(":") + text.count("[") + text.count("{")
        plain = text.isascii() and "\\u" not in text
    else:
        data = bytes(text)
        separators = data.count(b",") + data.count(b":") + data.count(b"[") + data.count(b"{")
        plain = data.isascii() and b"\\u" not in data
    return len(text) * (1 if plain else 4) + VALUE_COST * separators


def encode_message_data(data: Any) -> str:
    """Encode the data of a ``msg`` frame, or raise ``TypeError`` (not JSON) or
    :class:`MessageTooLargeError` (over :data:`MAX_DEPTH` or :data:`MAX_VALUES`: the peer
    would refuse it)."""
    body = encode_data(data)
    try:
        check_shape(body, data, data=True)
    except ValueError as exc:
        raise MessageTooLargeError(f"message data is refused by every peer: {exc}") from None
    return body


def encode_msg(seq: int, data: Any, *, max_frame: int) -> str:
    """Encode a ``msg`` frame once, checking it against ``max_frame``."""
    text = f'{{"type":"msg","seq":{seq},"data":{encode_data(data)}}}'
    if len(text) > max_frame:
        raise MessageTooLargeError(
            f"message frame of {len(text)} bytes is over max_frame ({max_frame} bytes); "
            "split the message or raise max_frame"
        )
    return text


_MSG_SEQ = re.compile(rb'\s*\{\s*"type"\s*:\s*"msg"\s*,\s*"seq"\s*:\s*(\d{1,16})\s*[,}]')


def peek_msg_seq(text: str | bytes) -> int | None:
    """The ``seq`` of a ``msg`` frame read from its first bytes, without decoding it, when
    it starts the usual way (``{"type":"msg","seq":N``, as every client written against
    this protocol sends it); ``None`` otherwise. A hint, not a decode: the frame's real
    seq is what :func:`decode_client_frame` says."""
    head = text[:64]
    found = _MSG_SEQ.match(head.encode() if isinstance(head, str) else head)
    return int(found.group(1)) if found is not None else None


def error_text(error: ProtocolError) -> str:
    """The ``error`` frame that reports ``error`` to the peer."""
    return encode_frame(ErrorFrame(code=error.code, message=error.message, fatal=error.fatal))


def encode_frame(frame: Frame) -> str:
    """Encode any frame as one line of ASCII-only JSON."""
    if isinstance(frame, PingFrame):
        return PING_TEXT
    if isinstance(frame, PongFrame):
        return PONG_TEXT
    if isinstance(frame, AckFrame):
        return f'{{"type":"ack","seq":{frame.seq}}}'
    if isinstance(frame, MsgFrame):
        return f'{{"type":"msg","seq":{frame.seq},"data":{encode_data(frame.data)}}}'
    fields: dict[str, Any] = {"type": _TYPE_OF[type(frame)]}
    for name, value in attrs.asdict(frame, recurse=False).items():
        # (A hello that does not resume says nothing of it.)
        if value is not None and not (name == "resume" and value is False):
            fields[name] = value
    return encode_data(fields)


# -- decoding -------------------------------------------------------------------------


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
_TYPE_OF: Final[dict[type[Any], str]] = {
    HelloFrame: "hello",
    WelcomeFrame: "welcome",
    MsgFrame: "msg",
    AckFrame: "ack",
    PingFrame: "ping",
    PongFrame: "pong",
    ByeFrame: "bye",
    StateFrame: "state",
    ErrorFrame: "error",
    ClosedFrame: "closed",
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
