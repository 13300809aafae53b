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
