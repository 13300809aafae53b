"""What every session and connection of one manager shares: the runtime context.

A session and its connections are handed one :class:`Runtime` (made once by the manager)
rather than the manager itself: the configuration, the shared lifecycle, the timers, the
nursery writers and actors run in, the store, the application's hooks, and the
observers, and the
registry's few members they call (:class:`~statesession._runtime.ports.RegistryPort`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .._core.config import SessionConfig
from .._core.util import LogLimit
from .._lifecycle.interpreters import Lifecycle
from .._stores.port import SessionStore
from .observers import Observers
from .ports import RegistryPort
from .timers import Timers

__all__ = ["Runtime"]

#: A hook given a session (typed for any layer of one: each passes itself).
Hook = Callable[[Any], Awaitable[object]]


@attrs.define(eq=False, kw_only=True)
class Runtime:
    """The context one manager's sessions and connections run in."""

    config: SessionConfig
    #: The lifecycle every session of the manager steps (each from its own actor).
    lifecycle: Lifecycle
    #: Every session's state timer and every connection's send and idle timers.
    timers: Timers
    #: Where actors and connection writers run.
    nursery: trio.Nursery
    #: Where passivated sessions go, if anywhere.
    store: SessionStore | None
    #: ``app(session)``, and the optional ``setup`` and ``health_check`` hooks.
    app: Hook
    setup: Hook | None
    health_check: Hook | None
    #: Log lines about peers' bad frames are rate-limited across the manager.
    bad_frame_log: LogLimit
    #: Who is told what happens to the sessions (the store recorder among them).
    observers: Observers
    #: The manager's registry, set once by the manager after it is made.
    registry: RegistryPort = attrs.field(init=False)
