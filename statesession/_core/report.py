"""What a session's termination did, step by step (sans-IO values)."""

from __future__ import annotations

import enum

import attrs

__all__ = ["CleanupItem", "CleanupReport", "Outcome"]


class Outcome(enum.Enum):
    """How one task or resource ended during the cleanup cascade."""

    #: A task finished by itself, or was cancelled and unwound; a resource closed in time.
    CLOSED = "closed"
    #: A task had to be cancelled after the grace period; a resource's close overran its
    #: timeout and was cut short (then its ``force`` callback ran, if it had one).
    FORCED = "forced"
    #: A task raised while unwinding or outlived its cancellation; a resource's close (or
    #: force) raised. Something may be left behind: the session goes to ``error``.
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class CleanupItem:
    """One task or resource in a :class:`CleanupReport`."""

    kind: str  # "task", "resource" or "connection"
    name: str
    outcome: Outcome
    #: Seconds from the start of its step of the cascade until it ended.
    duration: float
    #: ``"ExcType: message"`` when the outcome is ``FAILED``.
    error: str | None = None


@attrs.frozen(kw_only=True)
class CleanupReport:
    """What terminating (or passivating) a session did: every task alive when it began,
    every resource it held, and every connection attached, each with its outcome and
    duration.

    A connection is ``closed`` when it took its last frames and went, ``forced`` when it
    was aborted after ``send_timeout``, ``failed`` when it would not go even then."""

    session: str
    reason: str
    tasks: tuple[CleanupItem, ...]
    resources: tuple[CleanupItem, ...]
    connections: tuple[CleanupItem, ...] = ()
    #: Seconds the whole cascade took.
    duration: float
    #: The exception that ended the session, as ``"ExcType: message"`` (an app crash).
    error: str | None = None
    #: The report of an earlier pass, when this one retried a cleanup that had failed
    #: (a session terminated again from ``error``). Each pass closes only what was
    #: left; every resource is closed at most once.
    previous: CleanupReport | None = None

    @property
    def failed(self) -> tuple[CleanupItem, ...]:
        """Items whose outcome is ``FAILED``."""
        return tuple(
            i
            for i in (*self.tasks, *self.resources, *self.connections)
            if i.outcome is Outcome.FAILED
        )

    @property
    def clean(self) -> bool:
        """Whether this pass left nothing behind (no ``FAILED`` item)."""
        return not self.failed

    def passes(self) -> tuple[CleanupReport, ...]:
        """This report and the earlier passes it retried, oldest first."""
        chain: list[CleanupReport] = []
        report: CleanupReport | None = self
        while report is not None:
            chain.append(report)
            report = report.previous
        return tuple(reversed(chain))
