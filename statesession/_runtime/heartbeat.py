"""The state's timer (one per session, fired by the manager's timer task) and the jobs it
runs: heartbeats (ping, drop the silent, forget stale clients) and the window's expiry."""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from .resources import Resources
from .state import log
from .timers import Timer


class StateTimers(Resources):
    """A layer of :class:`Session`: the state's timer and heartbeats."""

    __slots__ = ()

    def _arm(self, at: float, job: Callable[[], None]) -> None:
        self._disarm()
        self._timer_job = job
        self._timer = self._runtime.timers.arm(at, self._timer_fired)

    def _timer_fired(self) -> None:
        """The state's timer is due (called by the manager's timer task): post its job."""
        timer, job = self._timer, self._timer_job
        if timer is not None and job is not None:
            self._post(lambda: self._fire(timer, job))

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.disarm()
            self._timer = self._timer_job = None

    def _fire(self, timer: Timer, job: Callable[[], None]) -> None:
        """Run a state's timer in the actor, unless the state that armed it has been
        left since the timer was posted."""
        if timer is self._timer:
            self._timer = self._timer_job = None
            job()

    def _kept_at_expiry(self) -> bool:
        """Whether an expired window saves this session (rather than ending it)."""
        runtime = self._runtime
        return runtime.config.window_expiry == "passivate" and runtime.registry.store_has_room(
            self.id
        )

    def _idle_after(self) -> float:
        runtime = self._runtime
        return runtime.config.passivate_after if runtime.store is not None else math.inf

    def _heartbeat(self) -> None:
        """``active``'s timer: passivate when idle, ping quiet connections, drop silent
        ones, forget clients gone for longer than the window; then re-arm."""
        config = self._runtime.config
        interval, timeout = config.heartbeat_interval, config.heartbeat_timeout
        idle_after = self._idle_after()
        now = trio.current_time()
        wake = now + interval
        # Every test below compares ``now`` with the very sum it would wake at, so a timer
        # never re-arms at a time that has already come (``a + b - a`` is not always ``b``).
        idle_at = self._last_activity + idle_after
        if not self._busy and now >= idle_at:
            self.request_passivation("idle")
        elif idle_at > now:
            wake = min(wake, idle_at)
        for connection in list(self._connections):
            last = connection.last_received
            if now >= last + timeout:
                log.info(
                    "session %s: %s silent for %.1f s, dropping it",
                    self.id,
                    connection.peer,
                    now - last,
                )
                connection.abort()
                continue
            if now >= last + interval:
                connection.ping(now)
                wake = min(wake, last + timeout)
            else:
                wake = min(wake, last + interval)
        self._delivery.forget_stale(now=now, window=config.reconnect_window)
        self._wake_changed()
        self._arm(wake, self._heartbeat)

    def request_passivation(self, reason: str) -> None:
        """Ask the session to passivate (to the store, if it has room); a busy one stays."""
        self._post(
            lambda: self._step(
                "passivate",
                store=self._runtime.registry.store_has_room(self.id),
                busy=self._busy,
                reason=reason,
            )
        )

    def _expire_window(self) -> None:
        """``reconnecting``'s timer: the window is over. A busy session is not passivated;
        it expires when its app stops being busy (see :meth:`busy`)."""
        self._step(
            "expire",
            now=trio.current_time(),
            deadline=self._deadline,
            store=self._kept_at_expiry(),
            busy=self._busy,
            reason="window_expired",
        )
