"""Length-prefixed framing of the TCP transport (sans-IO)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statesession import ChannelBrokenError, FrameTooLargeError
from statesession_tcp import FrameDecoder, encode_frame


def test_framing_is_a_four_byte_big_endian_length_then_utf8() -> None:
    """A TCP frame is its UTF-8 length in four big-endian bytes, then the UTF-8 text."""
    assert encode_frame('{"a":"é"}') == b"\x00\x00\x00\x0a" + '{"a":"é"}'.encode()


@given(
    frames=st.lists(st.text(max_size=300), max_size=30),
    cuts=st.lists(st.integers(0, 5000), max_size=20),
)
def test_framing_round_trips_however_the_bytes_are_split(
    frames: list[str], cuts: list[int]
) -> None:
    """Frames decode back exactly however the bytes are split, leaving nothing pending."""
    wire = b"".join(encode_frame(frame) for frame in frames)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    decoder = FrameDecoder(max_frame=10_000)
    got = []
    for start, end in itertools.pairwise(points):
        decoder.feed(wire[start:end])
        while (frame := decoder.next_frame()) is not None:
            got.append(frame.decode("utf-8", "surrogatepass"))
    assert got == frames
    assert decoder.pending == 0


def test_framing_refuses_an_oversized_frame_before_buffering_it() -> None:
    """A length over max_frame raises FrameTooLargeError before the body arrives, and the
    decoder then stops (out of step)."""
    decoder = FrameDecoder(max_frame=100)
    decoder.feed((101).to_bytes(4, "big"))
    with pytest.raises(FrameTooLargeError) as info:
        decoder.next_frame()
    assert (info.value.size, info.value.limit) == (101, 100)
    with pytest.raises(ChannelBrokenError, match="out of step"):
        decoder.next_frame()


def test_framing_waits_for_the_whole_frame() -> None:
    """The decoder returns no frame until the whole body has arrived."""
    decoder = FrameDecoder(max_frame=100)
    wire = encode_frame("hello")
    decoder.feed(wire[:6])
    assert decoder.next_frame() is None
    decoder.feed(wire[6:])
    assert decoder.next_frame() == b"hello"
