"""statesession: robust client sessions for trio servers.

Every session gets an explicit lifecycle (a statechart), owns every task and resource it
creates, and delivers every message exactly once, in order, across reconnects.

The sans-IO core (the lifecycle chart, the config, the wire protocol and the exceptions)
imports without trio; the runtime names (``open_manager``, ``Session``, ``open_client``,
...) load the trio driver on first use.
"""

import typing as _typing
from importlib import import_module as _import_module

from ._core.channel import Channel as Channel
from ._core.config import SessionConfig as SessionConfig
from ._core.exceptions import ChannelBrokenError as ChannelBrokenError
from ._core.exceptions import ChannelClosedError as ChannelClosedError
from ._core.exceptions import ChannelError as ChannelError
from ._core.exceptions import ConfigError as ConfigError
from ._core.exceptions import CorruptSnapshotError as CorruptSnapshotError
from ._core.exceptions import FrameTooLargeError as FrameTooLargeError
from ._core.exceptions import LifecycleError as LifecycleError
from ._core.exceptions import MessageTooLargeError as MessageTooLargeError
from ._core.exceptions import ProtocolError as ProtocolError
from ._core.exceptions import RemoteError as RemoteError
from ._core.exceptions import ResumeGapError as ResumeGapError
from ._core.exceptions import SessionClosedError as SessionClosedError
from ._core.exceptions import StateSessionError as StateSessionError
from ._core.exceptions import StoreError as StoreError
from ._core.exceptions import StoreVersionError as StoreVersionError
from ._core.exceptions import TransportError as TransportError
from ._core.report import CleanupItem as CleanupItem
from ._core.report import CleanupReport as CleanupReport
from ._core.report import Outcome as Outcome
from ._core.snapshot import LogEntry as LogEntry
from ._core.snapshot import SessionRecord as SessionRecord
from ._core.snapshot import Snapshot as Snapshot
from ._lifecycle.chart import SessionChart as SessionChart

if _typing.TYPE_CHECKING:
    from ._client.backoff import Backoff as Backoff
    from ._client.client import Client as Client
    from ._client.client import ClientStatistics as ClientStatistics
    from ._client.client import open_client as open_client
    from ._runtime.manager import ManagerStatistics as ManagerStatistics
    from ._runtime.manager import SessionManager as SessionManager
    from ._runtime.manager import open_manager as open_manager
    from ._runtime.observers import SessionObserver as SessionObserver
    from ._runtime.session import Message as Message
    from ._runtime.session import Session as Session
    from ._runtime.session import SessionStatistics as SessionStatistics
    from ._runtime.transport import Transport as Transport
    from ._runtime.transport import load_transport as load_transport
    from ._runtime.transport import serve as serve
    from ._stores.factory import open_store as open_store
    from ._stores.memory import MemoryStore as MemoryStore
    from ._stores.port import SessionStore as SessionStore
    from ._stores.port import StoreStatistics as StoreStatistics

__version__ = "0.1.0.dev0"

#: Runtime names, loaded with trio on first access.
_DRIVER = {
    "Backoff": "._client.backoff",
    "Client": "._client.client",
    "ClientStatistics": "._client.client",
    "open_client": "._client.client",
    "ManagerStatistics": "._runtime.manager",
    "SessionManager": "._runtime.manager",
    "open_manager": "._runtime.manager",
    "SessionObserver": "._runtime.observers",
    "Message": "._runtime.session",
    "Session": "._runtime.session",
    "SessionStatistics": "._runtime.session",
    "MemoryStore": "._stores.memory",
    "SessionStore": "._stores.port",
    "StoreStatistics": "._stores.port",
    "open_store": "._stores.factory",
    "Transport": "._runtime.transport",
    "load_transport": "._runtime.transport",
    "serve": "._runtime.transport",
}


def __getattr__(name: str) -> _typing.Any:
    module = _DRIVER.get(name)
    if module is None:
        raise AttributeError(f"module 'statesession' has no attribute {name!r}")
    value = getattr(_import_module(module, __name__), name)
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
    "SessionObserver",
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
