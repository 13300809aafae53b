"""Wire protocol v1 as a sans-IO codec: frame values, encoding, validated decoding, and
the error codes with their WebSocket close codes.

For writing a client in another framework, or inspecting traffic. See docs/protocol.md.
"""

from ._core.codec import encode_frame as encode_frame
from ._core.decode import decode_client_frame as decode_client_frame
from ._core.decode import decode_server_frame as decode_server_frame
from ._core.errors import CLOSE_CODES as CLOSE_CODES
from ._core.errors import ERROR_CODES as ERROR_CODES
from ._core.errors import RETRYABLE_CODES as RETRYABLE_CODES
from ._core.frames import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._core.frames import AckFrame as AckFrame
from ._core.frames import ByeFrame as ByeFrame
from ._core.frames import ClientFrame as ClientFrame
from ._core.frames import ClosedFrame as ClosedFrame
from ._core.frames import ErrorFrame as ErrorFrame
from ._core.frames import HelloFrame as HelloFrame
from ._core.frames import MsgFrame as MsgFrame
from ._core.frames import PingFrame as PingFrame
from ._core.frames import PongFrame as PongFrame
from ._core.frames import ServerFrame as ServerFrame
from ._core.frames import StateFrame as StateFrame
from ._core.frames import WelcomeFrame as WelcomeFrame

__all__ = [
    "CLOSE_CODES",
    "ERROR_CODES",
    "PROTOCOL_VERSION",
    "RETRYABLE_CODES",
    "AckFrame",
    "ByeFrame",
    "ClientFrame",
    "ClosedFrame",
    "ErrorFrame",
    "HelloFrame",
    "MsgFrame",
    "PingFrame",
    "PongFrame",
    "ServerFrame",
    "StateFrame",
    "WelcomeFrame",
    "decode_client_frame",
    "decode_server_frame",
    "encode_frame",
]
