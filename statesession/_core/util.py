"""Small helpers shared by the driver modules."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collapse_single_exception_group", "new_id"]


def new_id(nbytes: int) -> str:
    """A random URL-safe id of ``nbytes`` bytes that does not begin with ``-``, so that it
    can be passed on a command line (``statesession replay ID``) without being taken for
    an option."""
    while True:
        candidate = secrets.token_urlsafe(nbytes)
        if not candidate.startswith("-"):
            return candidate


@contextmanager
def collapse_single_exception_group() -> Iterator[None]:
    """Re-raise a lone exception that a library nursery wrapped in an ExceptionGroup.

    A user whose code raised one error inside our context manager should see that error,
    not a group holding it; groups of several errors pass through untouched.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        context = exc.__context__
        try:
            raise exc
        finally:
            exc.__context__ = context
            del exc, group


def plural(count: int, noun: str) -> str:
    """``1 session``, ``2 sessions``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class LogLimit:
    """Lets log lines of one kind through at most ``burst`` at once and ``rate`` a second
    after that (a token bucket), so that a peer cannot fill the log at will; counts what
    it held back, for the next line it lets through to say so."""

    __slots__ = ("_at", "_burst", "_left_out", "_rate", "_tokens")

    def __init__(self, *, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._at: float | None = None
        self._left_out = 0

    def allow(self, now: float) -> int | None:
        """``None``: leave this line out; otherwise write it, adding that this many were
        left out since the last one."""
        if self._at is not None and now >= self._at:
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            self._left_out += 1
            return None
        self._tokens -= 1
        left_out, self._left_out = self._left_out, 0
        return left_out
