"""A frame's counted cost is not below what its decoded strings cost: one character
beyond ASCII widens a whole string to 4 bytes per character."""

from __future__ import annotations

import sys

from statesession._core.shape import decoded_cost
from statesession.protocol import decode_client_frame


def test_decoded_cost_is_not_below_what_a_decoded_string_costs() -> None:
    """A 256 KiB frame whose data is one string with one emoji costs, decoded, no more
    than decoded_cost says (within 10%)."""
    text = '{"type":"msg","seq":1,"data":"\\ud83d\\ude00' + "a" * 256 * 1024 + '"}'
    frame = decode_client_frame(text, max_frame=1 << 20)
    held = sys.getsizeof(frame.data)  # type: ignore[union-attr]
    assert held <= decoded_cost(text) * 1.1, (held, decoded_cost(text))
