"""Wire protocol v1 codec: every frame round-trips, every bad input gets its code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statesession import ProtocolError
from statesession._core.codec import encode_message_data, msg_text
from statesession._core.errors import ERROR_TABLE, FINAL_CODES
from statesession._core.frames import MAX_SEQ
from statesession.protocol import (
    CLOSE_CODES,
    ERROR_CODES,
    RETRYABLE_CODES,
    AckFrame,
    ByeFrame,
    ClosedFrame,
    ErrorFrame,
    HelloFrame,
    MsgFrame,
    PingFrame,
    PongFrame,
    StateFrame,
    WelcomeFrame,
    decode_client_frame,
    decode_server_frame,
    encode_frame,
)

LIMIT = 1 << 20

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)

CLIENT_FRAMES = [
    HelloFrame(),
    HelloFrame(session="s", token="t", client="c", ack=3, auth={"user": "ann"}, resume=True),
    MsgFrame(seq=1, data={"x": [1, "é", None]}),
    AckFrame(seq=0),
    PingFrame(),
    PongFrame(),
    ByeFrame(),
    ByeFrame(reason="done"),
]
SERVER_FRAMES = [
    WelcomeFrame(
        session="s",
        token="t",
        client="c",
        resumed=True,
        state="active",
        ack=2,
        heartbeat=10.0,
        window=30.0,
    ),
    MsgFrame(seq=7, data="hi"),
    AckFrame(seq=4),
    PingFrame(),
    PongFrame(),
    StateFrame(state="terminating"),
    ErrorFrame(code="bad_frame", message="nope", fatal=False),
    ClosedFrame(reason="bye"),
]


@pytest.mark.parametrize("frame", CLIENT_FRAMES, ids=repr)
def test_protocol_client_frames_round_trip(frame: Any) -> None:
    """A client frame decodes to what was encoded."""
    assert decode_client_frame(encode_frame(frame), max_frame=LIMIT) == frame


@pytest.mark.parametrize("frame", SERVER_FRAMES, ids=repr)
def test_protocol_server_frames_round_trip(frame: Any) -> None:
    """A server frame decodes to what was encoded."""
    assert decode_server_frame(encode_frame(frame), max_frame=LIMIT) == frame


def test_protocol_frames_are_json_objects_with_a_type() -> None:
    """Every encoded frame is one JSON object whose first field is its type."""
    for frame in CLIENT_FRAMES + SERVER_FRAMES:
        text = encode_frame(frame)
        obj = json.loads(text)
        assert isinstance(obj, dict)
        assert next(iter(obj)) == "type"
        assert text.isascii()


@given(seq=st.integers(1, MAX_SEQ), data=json_values)
def test_protocol_msg_round_trips_any_json(seq: int, data: Any) -> None:
    """A msg frame as the hot path writes it round-trips any JSON value, ASCII only."""
    text = msg_text(seq, encode_message_data(data))
    assert text.isascii()
    assert decode_server_frame(text, max_frame=LIMIT * 16) == MsgFrame(seq=seq, data=data)


@given(st.text() | st.binary())
def test_protocol_decode_raises_only_protocol_errors(text: Any) -> None:
    """No input makes the decoder raise anything but ProtocolError."""
    for decode in (decode_client_frame, decode_server_frame):
        try:
            decode(text, max_frame=LIMIT)
        except ProtocolError as exc:
            assert exc.code in ERROR_CODES


@given(
    st.dictionaries(
        st.sampled_from(
            ["type", "seq", "data", "v", "session", "token", "client", "ack", "auth", "reason"]
        ),
        json_values,
    )
    | st.dictionaries(st.text(), json_values)
)
def test_protocol_decode_any_object_raises_only_protocol_errors(obj: dict[str, Any]) -> None:
    """Arbitrary JSON objects are either valid frames or ProtocolError."""
    try:
        decode_client_frame(json.dumps(obj), max_frame=LIMIT)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("{not json", "bad_frame", "not valid JSON"),
        ('{"type":"msg","seq":1,"data":NaN}', "bad_frame", "not valid JSON"),
        ("[1,2]", "bad_frame", "must be a JSON object, got array"),
        ('"hello"', "bad_frame", "must be a JSON object, got string"),
        ('{"seq":1}', "bad_frame", 'string field "type"'),
        ('{"type":5}', "bad_frame", 'string field "type"'),
        ('{"type":"welcome"}', "bad_frame", "unknown frame type 'welcome'"),
        ('{"type":"nope"}', "bad_frame", "unknown frame type 'nope'"),
        ('{"type":"msg","data":1}', "bad_frame", 'needs an integer field "seq"'),
        ('{"type":"msg","seq":"1","data":1}', "bad_frame", "msg.seq must be an integer"),
        ('{"type":"msg","seq":true,"data":1}', "bad_frame", "msg.seq must be an integer"),
        ('{"type":"msg","seq":1.0,"data":1}', "bad_frame", "msg.seq must be an integer"),
        ('{"type":"msg","seq":0,"data":1}', "bad_frame", "between 1 and"),
        ('{"type":"msg","seq":1}', "bad_frame", 'needs a field "data"'),
        ('{"type":"ack","seq":-1}', "bad_frame", "between 0 and"),
        ('{"type":"ack","seq":99999999999999999999}', "bad_frame", "between 0 and"),
        ('{"type":"hello"}', "bad_version", 'integer field "v"'),
        ('{"type":"hello","v":2}', "bad_version", "version 2 is not supported"),
        ('{"type":"hello","v":"1"}', "bad_version", 'integer field "v"'),
        ('{"type":"hello","v":1,"session":"s"}', "bad_frame", "go together"),
        ('{"type":"hello","v":1,"session":5,"token":"t"}', "bad_frame", "must be a string"),
        ('{"type":"hello","v":1,"client":""}', "bad_frame", "must not be empty"),
        ('{"type":"hello","v":1,"ack":"x"}', "bad_frame", "hello.ack must be an integer"),
        ('{"type":"bye","reason":7}', "bad_frame", "bye.reason must be a string"),
    ],
)
def test_protocol_bad_client_frames_get_their_code(text: str, code: str, fragment: str) -> None:
    """Each malformed client frame is refused with the documented code and a clear
    message."""
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(text, max_frame=LIMIT)
    assert info.value.code == code
    assert fragment in info.value.message


def test_protocol_long_identifiers_are_refused() -> None:
    """Ids and tokens are bounded, so a client cannot make the server hold huge keys."""
    frame = json.dumps({"type": "hello", "v": 1, "client": "x" * 129})
    with pytest.raises(ProtocolError, match="limit is 128"):
        decode_client_frame(frame, max_frame=LIMIT)


@pytest.mark.parametrize(
    "payload", ["x" * 200, "é" * 100, b"x" * 200], ids=["ascii", "two-byte", "bytes"]
)
def test_protocol_frames_over_the_limit_are_fatal(payload: Any) -> None:
    """Frame size counts UTF-8 bytes; over the limit is frame_too_large, fatal."""
    if isinstance(payload, bytes):
        text: Any = b'{"type":"ping","pad":"' + payload + b'"}'
    else:
        text = json.dumps({"type": "ping", "pad": payload}, ensure_ascii=False)
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(text, max_frame=150)
    assert info.value.code == "frame_too_large"
    assert info.value.fatal


def test_protocol_frame_at_the_limit_is_accepted() -> None:
    """A frame of exactly max_frame bytes passes."""
    base = '{"type":"ping","pad":""}'
    text = base[:-2] + "é" * 10 + base[-2:]
    size = len(text.encode())
    assert isinstance(decode_client_frame(text, max_frame=size), PingFrame)
    with pytest.raises(ProtocolError, match="frame_too_large"):
        decode_client_frame(text, max_frame=size - 1)


def test_protocol_bytes_must_be_utf8() -> None:
    """A frame of bytes that are not UTF-8 is a ProtocolError."""
    with pytest.raises(ProtocolError, match="not UTF-8"):
        decode_client_frame(b"\xff\xfe{}", max_frame=LIMIT)


def test_protocol_unknown_fields_are_ignored() -> None:
    """A v1 peer tolerates fields a later revision adds."""
    frame = decode_client_frame('{"type":"ack","seq":3,"future":true}', max_frame=LIMIT)
    assert frame == AckFrame(seq=3)


def test_protocol_encode_message_data_refuses_non_json() -> None:
    """Message data that is not JSON (a set, NaN) raises TypeError before any frame."""
    with pytest.raises(TypeError, match="JSON-serializable"):
        encode_message_data({1, 2})
    with pytest.raises(TypeError, match="JSON-serializable"):
        encode_message_data(float("nan"))


def test_protocol_error_codes_are_exactly_the_documented_ones() -> None:
    """The codec's error codes are the ones docs/protocol.md's error table lists, and the
    retryable ones are among them."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    table = text[text.index("## Errors") :]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))
    assert documented == ERROR_CODES
    assert RETRYABLE_CODES < ERROR_CODES
    assert {"server_shutdown", "unavailable"} <= RETRYABLE_CODES


def _docs_section(heading: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    section = text[text.index(f"\n## {heading}\n") + 1 :]
    return section[: section.find("\n## ", 1)]


def test_protocol_error_table_is_the_one_docs_protocol_md_shows() -> None:
    """docs/protocol.md's error table lists the table's codes in its order, "yes" as
    fatal exactly for those always fatal, and its retryable codes are the table's."""
    section = _docs_section("Errors")
    rows = re.findall(r"^\| `([a-z_]+)` \| [^|]* \| ([^|]*) \|$", section, flags=re.MULTILINE)
    assert [code for code, _ in rows] == [error.code for error in ERROR_TABLE]
    assert {code: fatal == "yes" for code, fatal in rows} == {
        error.code: error.always_fatal for error in ERROR_TABLE
    }
    listed = re.search(
        r"^((?:`[a-z_]+`(?:, | and ))+`[a-z_]+`) are \*\*retryable\*\*", section, re.M
    )
    assert listed is not None
    retryable = set(re.findall(r"`([a-z_]+)`", listed.group(1)))
    assert retryable == RETRYABLE_CODES == {e.code for e in ERROR_TABLE if e.retryable}
    assert FINAL_CODES == ERROR_CODES - RETRYABLE_CODES


def test_protocol_close_codes_are_the_ones_docs_protocol_md_shows() -> None:
    """docs/protocol.md's WebSocket close-code table gives every error code, once, the
    close code the table gives it."""
    section = _docs_section("Transports")
    table = section[section.index("| code | error | code | error |") :]
    table = table[: table.index("\n\n")]
    pairs = re.findall(r"\| (\d{4}) \| `([a-z_]+)`", table)
    documented = {code: int(close) for close, code in pairs}
    assert len(documented) == len(pairs)
    assert documented == dict(CLOSE_CODES)
    assert dict(CLOSE_CODES) == {error.code: error.close_code for error in ERROR_TABLE}


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1E999", "[1e309]"])
def test_decode_refuses_numbers_json_cannot_hold(number: str) -> None:
    """A number too large for a float (it would decode to infinity, which JSON cannot
    encode again) is a bad frame, on both sides, naming the number."""
    text = f'{{"type":"msg","seq":1,"data":{number}}}'
    for decode in (decode_client_frame, decode_server_frame):
        with pytest.raises(ProtocolError, match="out of range") as caught:
            decode(text, max_frame=LIMIT)
        assert caught.value.code == "bad_frame"


def test_decode_keeps_numbers_that_round_to_zero_or_are_large_but_finite() -> None:
    """Tiny and large finite numbers decode as floats, as JSON allows."""
    frame = decode_client_frame(
        '{"type":"msg","seq":1,"data":[1e-400,1.5e308,-2.5]}', max_frame=LIMIT
    )
    assert frame == MsgFrame(seq=1, data=[0.0, 1.5e308, -2.5])


def test_peek_msg_seq_reads_the_usual_start_of_a_msg_frame_only() -> None:
    """peek_msg_seq reads the seq of a msg frame written the usual way, compact or
    spaced, str or bytes, and says nothing about any other frame."""
    from statesession._core.codec import peek_msg_seq

    assert peek_msg_seq('{"type":"msg","seq":12,"data":"x"}') == 12
    assert peek_msg_seq(b'{"type": "msg", "seq": 7, "data": 1}') == 7
    assert peek_msg_seq(' {"type":"msg","seq":3}') == 3
    assert peek_msg_seq('{"seq":12,"type":"msg","data":"x"}') is None
    assert peek_msg_seq('{"type":"ack","seq":12}') is None
    assert peek_msg_seq('{"type":"msg","seq":-1,"data":0}') is None
    assert peek_msg_seq('{"type":"msg","seq":' + "9" * 40 + "}") is None
    assert peek_msg_seq("not json") is None
