"""statesession: robust client sessions for trio servers.

Every session gets an explicit lifecycle (a statechart), owns every task and resource it
creates, and delivers every message exactly once, in order, across reconnects.

The sans-IO core (the lifecycle chart, the config, the wire protocol and the exceptions)
imports without trio; the runtime names (``open_manager``, ``Session``, ``open_client``,
...) load the trio driver on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._channel import Channel as Channel
from ._chart import SessionChart as SessionChart
from ._config import SessionConfig as SessionConfig
from ._exceptions import ChannelBrokenError as ChannelBrokenError
from ._exceptions import ChannelClosedError as ChannelClosedError
from ._exceptions import ChannelError as ChannelError
from ._exceptions import ConfigError as ConfigError
from ._exceptions import CorruptSnapshotError as CorruptSnapshotError
from ._exceptions import FrameTooLargeError as FrameTooLargeError
from ._exceptions import LifecycleError as LifecycleError
from ._exceptions import MessageTooLargeError as MessageTooLargeError
from ._exceptions import ProtocolError as ProtocolError
from ._exceptions import RemoteError as RemoteError
from ._exceptions import ResumeGapError as ResumeGapError
from ._exceptions import SessionClosedError as SessionClosedError
from ._exceptions import StateSessionError as StateSessionError
from ._exceptions import StoreError as StoreError
from ._exceptions import StoreVersionError as StoreVersionError
from ._exceptions import TransportError as TransportError
from ._report import CleanupItem as CleanupItem
from ._report import CleanupReport as CleanupReport
from ._report import Outcome as Outcome
from ._snapshot import LogEntry as LogEntry
from ._snapshot import SessionRecord as SessionRecord
from ._snapshot import Snapshot as Snapshot

if TYPE_CHECKING:
    from ._client import Backoff as Backoff
    from ._client import Client as Client
    from ._client import ClientStatistics as ClientStatistics
    from ._client import open_client as open_client
    from ._manager import ManagerStatistics as ManagerStatistics
    from ._manager import SessionManager as SessionManager
    from ._manager import open_manager as open_manager
    from ._session import Message as Message
    from ._session import Session as Session
    from ._session import SessionStatistics as SessionStatistics
    from ._store import MemoryStore as MemoryStore
    from ._store import SessionStore as SessionStore
    from ._store import StoreStatistics as StoreStatistics
    from ._store import open_store as open_store
    from ._transport import Transport as Transport
    from ._transport import load_transport as load_transport
    from ._transport import serve as serve

__version__ = "0.1.0.dev0"

#: Runtime names, loaded with trio on first access.
_DRIVER = {
    "Backoff": "._client",
    "Client": "._client",
    "ClientStatistics": "._client",
    "open_client": "._client",
    "ManagerStatistics": "._manager",
    "SessionManager": "._manager",
    "open_manager": "._manager",
    "Message": "._session",
    "Session": "._session",
    "SessionStatistics": "._session",
    "MemoryStore": "._store",
    "SessionStore": "._store",
    "StoreStatistics": "._store",
    "open_store": "._store",
    "Transport": "._transport",
    "load_transport": "._transport",
    "serve": "._transport",
}


def __getattr__(name: str) -> Any:
    module = _DRIVER.get(name)
    if module is None:
        raise AttributeError(f"module 'statesession' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Backoff",
    "Channel",
    "ChannelBrokenError",
    "ChannelClosedError",
    "ChannelError",
    "CleanupItem",
    "CleanupReport",
    "Client",
    "ClientStatistics",
    "ConfigError",
    "CorruptSnapshotError",
    "FrameTooLargeError",
    "LifecycleError",
    "LogEntry",
    "ManagerStatistics",
    "MemoryStore",
    "Message",
    "MessageTooLargeError",
    "Outcome",
    "ProtocolError",
    "RemoteError",
    "ResumeGapError",
    "Session",
    "SessionChart",
    "SessionClosedError",
    "SessionConfig",
    "SessionManager",
    "SessionRecord",
    "SessionStatistics",
    "SessionStore",
    "Snapshot",
    "StateSessionError",
    "StoreError",
    "StoreStatistics",
    "StoreVersionError",
    "Transport",
    "TransportError",
    "load_transport",
    "open_client",
    "open_manager",
    "open_store",
    "serve",
]
