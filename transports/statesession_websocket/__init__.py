"""The WebSocket transport for statesession, on trio-websocket.

One WebSocket text message carries one frame. Registered as ``websocket`` and for the
``ws`` and ``wss`` URL schemes; needs ``pip install 'statesession[websocket]'``. Serve with
``statesession.serve(manager, "ws://host:port/")`` and connect with
``statesession.open_client("ws://host:port/")``.
"""

from ._transport import CLOSE_CODES as CLOSE_CODES
from ._transport import DEFAULT_PORT as DEFAULT_PORT
from ._transport import WebSocketChannel as WebSocketChannel
from ._transport import WebSocketTransport as WebSocketTransport
from ._transport import transport as transport

__all__ = ["CLOSE_CODES", "DEFAULT_PORT", "WebSocketChannel", "WebSocketTransport", "transport"]
