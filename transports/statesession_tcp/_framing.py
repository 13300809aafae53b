"""Length-prefixed framing (sans-IO).

A frame on the wire is a 4-byte unsigned big-endian length, then that many bytes of UTF-8
JSON text. Nothing else: no magic, no version (the protocol's ``hello`` carries that).
"""

from __future__ import annotations

from statesession import ChannelBrokenError, FrameTooLargeError

__all__ = ["HEADER_SIZE", "FrameDecoder", "encode_frame"]

HEADER_SIZE = 4
_MAX_LENGTH = 2**32 - 1


def encode_frame(frame: str) -> bytes:
    """The bytes that carry ``frame``."""
    data = frame.encode("utf-8", "surrogatepass")
    if len(data) > _MAX_LENGTH:
        raise ValueError(f"frame of {len(data)} bytes cannot be length-prefixed in 4 bytes")
    return len(data).to_bytes(HEADER_SIZE, "big") + data


class FrameDecoder:
    """Turns received bytes into frames, enforcing ``max_frame`` before buffering one."""

    __slots__ = ("_buffer", "_desynced", "_max_frame", "_start")

    def __init__(self, max_frame: int) -> None:
        self._buffer = bytearray()
        self._start = 0
        self._max_frame = max_frame
        self._desynced = False

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame's payload, or ``None`` until more bytes arrive.

        Raises FrameTooLargeError for a frame announced over ``max_frame``; the stream is
        then out of step, and every later call raises ChannelBrokenError.
        """
        if self._desynced:
            raise ChannelBrokenError("stream is out of step after an oversized frame")
        buffer, start = self._buffer, self._start
        if len(buffer) - start < HEADER_SIZE:
            return None
        length = int.from_bytes(buffer[start : start + HEADER_SIZE], "big")
        if length > self._max_frame:
            self._desynced = True
            raise FrameTooLargeError(length, self._max_frame)
        end = start + HEADER_SIZE + length
        if len(buffer) < end:
            return None
        payload = bytes(buffer[start + HEADER_SIZE : end])
        if end == len(buffer):
            buffer.clear()
            self._start = 0
        elif end > 65536:
            del buffer[:end]
            self._start = 0
        else:
            self._start = end
        return payload

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer) - self._start
