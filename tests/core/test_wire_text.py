"""One writer of wire text: only the codec spells out a frame, and what it writes decodes
back to the frame it stands for."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statesession._core.codec import (
    MSG_ENVELOPE,
    PING_TEXT,
    PONG_TEXT,
    ack_text,
    encode_message_data,
    msg_text,
)
from statesession._core.frames import MAX_SEQ
from statesession.protocol import (
    AckFrame,
    MsgFrame,
    PingFrame,
    PongFrame,
    decode_client_frame,
    decode_server_frame,
    encode_frame,
)

ROOT = Path(__file__).resolve().parents[2]
#: Where frames are sent from: the library, its transports and the benchmarks' clients.
SCANNED = ("statesession", "transports", "bench")
#: The one writer of frame text.
WRITER = Path("statesession/_core/codec.py")
#: Where the frames are documented: their docstrings may show frame text.
DOCUMENTED = Path("statesession/_core/frames.py")
LIMIT = 1 << 20

#: A JSON object's ``type`` field being written: ``"type":`` in a string or f-string.
TYPE_FIELD = re.compile(r'"type"\s*:')

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings in ``tree``."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                found.add(id(body[0].value))
    return found


def frame_text_built(source: str, *, allow_docstrings: bool = False) -> list[str]:
    """Where ``source`` builds frame text itself: a string or f-string part writing a
    ``"type":`` field, a dict display with a ``"type"`` key (``json.dumps({"type": ...})``),
    or ``dict(type=...)``. One ``line: what`` entry per place."""
    tree = ast.parse(source)
    skipped = docstrings(tree) if allow_docstrings else set()
    places: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            if id(node) not in skipped and TYPE_FIELD.search(text):
                places.append(f"{node.lineno}: {text[:60]!r}")
        elif isinstance(node, ast.Dict):
            for key in node.keys:
                if isinstance(key, ast.Constant) and key.value == "type":
                    places.append(f"{node.lineno}: a dict display with a 'type' key")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "dict"
            and any(keyword.arg == "type" for keyword in node.keywords)
        ):
            places.append(f"{node.lineno}: dict(type=...)")
    return places


def scanned_modules() -> list[Path]:
    modules = [path for top in SCANNED for path in sorted((ROOT / top).rglob("*.py"))]
    return [path.relative_to(ROOT) for path in modules]


def test_wire_text_only_the_codec_writes_frames() -> None:
    """No module of the library, its transports or the benchmarks writes frame text but
    the codec (frames.py's docstrings may show it)."""
    modules = scanned_modules()
    assert WRITER in modules
    assert len(modules) > 40  # the scan sees the whole tree
    found = {
        str(path): places
        for path in modules
        if path != WRITER
        and (
            places := frame_text_built(
                (ROOT / path).read_text(), allow_docstrings=path == DOCUMENTED
            )
        )
    }
    assert found == {}


@pytest.mark.parametrize(
    "source",
    [
        'def ack(seq):\n    return f\'{{"type":"ack","seq":{seq}}}\'\n',
        'PONG = \'{"type": "pong"}\'\n',
        "import json\ntext = json.dumps({'type': 'hello', 'v': 1})\n",
        "frame = dict(type='bye')\n",
        "def f():\n    '''{\"type\":\"ping\"}'''\n",
    ],
    ids=["f-string", "constant", "json-dumps-dict", "dict-call", "docstring"],
)
def test_wire_text_scan_finds_a_hand_built_frame(source: str) -> None:
    """The scan catches a frame written by hand: an f-string, a constant, a dict for
    json.dumps, dict(type=...), and frame text in a docstring outside frames.py."""
    assert frame_text_built(source)


def test_wire_text_scan_allows_reading_frames() -> None:
    """Reading a frame's type and frames.py's documenting docstrings are not writing one."""
    reading = "def kind(frame):\n    return frame['type'] == 'msg' or frame.get('type')\n"
    assert frame_text_built(reading) == []
    documented = "def f():\n    '''{\"type\":\"ping\"}'''\n"
    assert frame_text_built(documented, allow_docstrings=True) == []


@given(seq=st.integers(1, MAX_SEQ), data=json_values)
def test_wire_text_msg_text_decodes_to_its_frame(seq: int, data: Any) -> None:
    """msg_text around encoded data decodes, on either side, to the msg frame it stands
    for; it is encode_frame's msg, and MSG_ENVELOPE is all it adds but the seq."""
    body = encode_message_data(data)
    text = msg_text(seq, body)
    frame = MsgFrame(seq=seq, data=data)
    assert text.isascii()
    assert decode_server_frame(text, max_frame=LIMIT) == frame
    assert decode_client_frame(text, max_frame=LIMIT) == frame
    assert text == encode_frame(frame)
    assert len(text) == len(body) + len(str(seq)) + MSG_ENVELOPE


@given(seq=st.integers(0, MAX_SEQ))
def test_wire_text_ack_text_decodes_to_its_frame(seq: int) -> None:
    """ack_text decodes, on either side, to the ack frame it stands for, and is
    encode_frame's ack."""
    text = ack_text(seq)
    frame = AckFrame(seq=seq)
    assert decode_server_frame(text, max_frame=LIMIT) == frame
    assert decode_client_frame(text, max_frame=LIMIT) == frame
    assert text == encode_frame(frame)


def test_wire_text_ping_and_pong_decode_to_their_frames() -> None:
    """PING_TEXT and PONG_TEXT decode, on either side, to ping and pong."""
    for text, frame in ((PING_TEXT, PingFrame()), (PONG_TEXT, PongFrame())):
        assert decode_server_frame(text, max_frame=LIMIT) == frame
        assert decode_client_frame(text, max_frame=LIMIT) == frame
        assert text == encode_frame(frame)
