"""The delays between a client's reconnect attempts (no I/O, no trio)."""

from __future__ import annotations

import random

import attrs

__all__ = ["Backoff"]


@attrs.frozen(kw_only=True)
class Backoff:
    """Delays between reconnect attempts: ``initial * multiplier**n``, capped at
    ``maximum``, each randomized by +/- ``jitter`` (a fraction) so that many clients
    dropped at once do not come back at once."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.multiplier**attempt)
        return base * (1 + self.jitter * (2 * random.random() - 1))
