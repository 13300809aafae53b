"""Bounds on what a frame may hold once decoded, and what decoding it costs (sans-IO).

Theory of operation
-------------------
A frame's text is bounded by ``max_frame``, but what it decodes to is not: a value
costs 30 to 70 bytes of objects however few bytes it took on the wire. So every frame,
decoded (:mod:`.decode`) or encoded as a message's data (:mod:`.codec`), passes
:func:`check_shape` -- at most :data:`MAX_DEPTH` levels, :data:`MAX_VALUES` values --
and what a session's inbox holds is counted by :func:`decoded_cost`, not by length.
Both count separators in the text first, at C speed; only a frame near a bound is
walked.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MAX_DEPTH", "MAX_VALUES", "VALUE_COST", "check_shape", "decoded_cost"]

#: Deepest a frame may nest arrays and objects (the frame itself is one level).
MAX_DEPTH: Final = 64
#: Most JSON values one frame may hold (every array element, object key and object
#: value counts): decoded, a value costs 30 to 70 bytes however few bytes it took on the
#: wire, so 1 MiB of ``[[],[],...]`` would be 21 MiB of objects.
MAX_VALUES: Final = 65_536
#: What decoding costs per JSON value, beyond the text, for :func:`decoded_cost`.
VALUE_COST: Final = 56


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
