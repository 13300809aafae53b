"""The WebSocket transports for statesession.

One WebSocket text message carries one frame. Two transports, each loaded only when used
(importing this package imports neither WebSocket library):

* ``websocket`` (also registered for the ``ws`` and ``wss`` URL schemes), on
  trio-websocket; needs the ``websocket`` extra (``pip install '.[websocket]'`` in a checkout).
* ``websockets``, on websockets' sans-I/O protocol driven directly by trio, with no task
  per connection; picked by name (``serve(manager, url, transport="websockets")``); needs
  the ``websockets`` extra (``pip install '.[websockets]'``).

Both speak the same WebSocket protocol, so either side can be either.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._common import CLOSE_CODES as CLOSE_CODES
from ._common import DEFAULT_PORT as DEFAULT_PORT

if TYPE_CHECKING:
    from ._trio_websocket import WebSocketChannel as WebSocketChannel
    from ._trio_websocket import WebSocketTransport as WebSocketTransport
    from ._trio_websocket import transport as transport
    from ._websockets import WebsocketsChannel as WebsocketsChannel
    from ._websockets import WebsocketsTransport as WebsocketsTransport
    from ._websockets import transport as websockets_transport

#: Names loaded (with their WebSocket library) on first access.
_LAZY = {
    "WebSocketChannel": ("._trio_websocket", "WebSocketChannel"),
    "WebSocketTransport": ("._trio_websocket", "WebSocketTransport"),
    "transport": ("._trio_websocket", "transport"),
    "WebsocketsChannel": ("._websockets", "WebsocketsChannel"),
    "WebsocketsTransport": ("._websockets", "WebsocketsTransport"),
    "websockets_transport": ("._websockets", "transport"),
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'statesession_websocket' has no attribute {name!r}")
    value = getattr(import_module(where[0], __name__), where[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CLOSE_CODES",
    "DEFAULT_PORT",
    "WebSocketChannel",
    "WebSocketTransport",
    "WebsocketsChannel",
    "WebsocketsTransport",
    "transport",
    "websockets_transport",
]
