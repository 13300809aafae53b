"""Wire protocol v1: encoding frames as text (sans-IO).

Theory of operation
-------------------
Every frame's text is written here, by the server, by the client and by the benchmarks'
clients alike: :func:`encode_frame` for any frame value, the fixed :data:`PING_TEXT` and
:data:`PONG_TEXT`, :func:`error_text`, and for the message path :func:`msg_text` and
:func:`ack_text`. The message path encodes each message once: its data by
:func:`encode_message_data` (which refuses data no peer would accept, see :mod:`.shape`),
then :func:`msg_text` puts it in its ``msg`` envelope (:data:`MSG_ENVELOPE` characters
besides the seq's digits, for checking ``max_frame`` before the seq is known). That
text is what the replay buffer holds and every connection sends. :func:`encode_frame`
writes ``msg`` and ``ack`` frames with the same two functions, so there is one form of
each. Encoding uses ASCII-only JSON, so a frame's length in characters is its length in
bytes.

:func:`peek_msg_seq` reads back the start this module writes, as a hint only; decoding
and validating is :mod:`.decode`'s.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import attrs

from .exceptions import MessageTooLargeError, ProtocolError
from .frames import (
    AckFrame,
    ByeFrame,
    ClosedFrame,
    ErrorFrame,
    Frame,
    HelloFrame,
    MsgFrame,
    PingFrame,
    PongFrame,
    StateFrame,
    WelcomeFrame,
)
from .shape import check_shape

__all__ = [
    "MSG_ENVELOPE",
    "PING_TEXT",
    "PONG_TEXT",
    "ack_text",
    "encode_data",
    "encode_frame",
    "encode_message_data",
    "error_text",
    "msg_text",
    "peek_msg_seq",
]

PING_TEXT: Final = '{"type":"ping"}'
PONG_TEXT: Final = '{"type":"pong"}'

_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_data(data: Any) -> str:
    """Encode an application value as ASCII-only JSON, or raise ``TypeError``."""
    try:
        return _encoder.encode(data)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"message data must be JSON-serializable: {exc}") from None


def encode_message_data(data: Any) -> str:
    """Encode the data of a ``msg`` frame, or raise ``TypeError`` (not JSON) or
    :class:`MessageTooLargeError` (over :data:`~.shape.MAX_DEPTH` or
    :data:`~.shape.MAX_VALUES`: the peer would refuse it)."""
    body = encode_data(data)
    try:
        check_shape(body, data, data=True)
    except ValueError as exc:
        raise MessageTooLargeError(f"message data is refused by every peer: {exc}") from None
    return body


def msg_text(seq: int, body: str) -> str:
    """The ``msg`` frame ``seq`` around ``body``, its data already encoded
    (:func:`encode_message_data`)."""
    return f'{{"type":"msg","seq":{seq},"data":{body}}}'


def ack_text(seq: int) -> str:
    """The ``ack`` frame acknowledging every message up to ``seq``."""
    return f'{{"type":"ack","seq":{seq}}}'


#: What the ``msg`` envelope adds to the encoded data, besides the seq's digits.
MSG_ENVELOPE: Final = len(msg_text(0, "")) - 1


_MSG_SEQ = re.compile(rb'\s*\{\s*"type"\s*:\s*"msg"\s*,\s*"seq"\s*:\s*(\d{1,16})\s*[,}]')


def peek_msg_seq(text: str | bytes) -> int | None:
    """The ``seq`` of a ``msg`` frame read from its first bytes, without decoding it, when
    it starts the usual way (``{"type":"msg","seq":N``, as every client written against
    this protocol sends it); ``None`` otherwise. A hint, not a decode: the frame's real
    seq is what :func:`~.decode.decode_client_frame` says."""
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
        return ack_text(frame.seq)
    if isinstance(frame, MsgFrame):
        return msg_text(frame.seq, encode_data(frame.data))
    fields: dict[str, Any] = {"type": _TYPE_OF[type(frame)]}
    for name, value in attrs.asdict(frame, recurse=False).items():
        # (A hello that does not resume says nothing of it.)
        if value is not None and not (name == "resume" and value is False):
            fields[name] = value
    return encode_data(fields)


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
