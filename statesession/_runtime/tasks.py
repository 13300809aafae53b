"""The tasks a session owns: started by the app, run in the session's nursery, named
``<id>:<name>``, and accounted for in the cleanup report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from .._core.exceptions import SessionClosedError
from .cascade import OwnedTask, describe
from .state import SessionState, log


class Tasks(SessionState):
    """A layer of :class:`Session`: the tasks it owns."""

    __slots__ = ()

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None
    ) -> None:
        """Run ``fn(*args)`` as a task owned by this session.

        The task is cancelled (after the grace period) when the session terminates. If it
        raises, the session terminates with reason ``"task_failed"``. Raises
        :class:`SessionClosedError` once the session is terminating.
        """
        self._check_open()
        label = name or str(getattr(fn, "__qualname__", None) or repr(fn))
        self._spawn(OwnedTask(label), fn, args)

    def _spawn(
        self,
        task: OwnedTask,
        fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        *,
        app: bool = False,
    ) -> None:
        assert self._nursery is not None
        self._tasks[task] = None
        self._nursery.start_soon(
            self._run_task, task, fn, args, app, name=f"{self.id}:{task.name}"
        )

    async def _run_task(
        self,
        task: OwnedTask,
        fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        app: bool,
    ) -> None:
        try:
            with task.scope:
                await fn(*args)
        except Exception as exc:
            if isinstance(exc, SessionClosedError) and self._closing:
                # The task used the session after it began terminating: the documented
                # way for send() and friends to say "stop". A clean end, not a failure.
                return
            task.error = exc
            if not self._closing:
                log.warning(
                    "session %s: task %s raised %s",
                    self.id,
                    task.name,
                    describe(exc),
                    exc_info=exc,
                )
                self._failure = exc
                self.terminate("app_error" if app else "task_failed")
        else:
            if app and not self._closing:
                self.terminate("completed")
        finally:
            task.ended_at = trio.current_time()
            del self._tasks[task]
            if not self._tasks:  # what a cascade waits for (not each of 1,000 tasks)
                self._wake_changed()
