"""Wire protocol v1 as a sans-IO codec: frame values, encoding and validated decoding.

For writing a client in another framework, or inspecting traffic. See docs/protocol.md.
"""

from ._protocol import ERROR_CODES as ERROR_CODES
from ._protocol import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._protocol import RETRYABLE_CODES as RETRYABLE_CODES
from ._protocol import AckFrame as AckFrame
from ._protocol import ByeFrame as ByeFrame
from ._protocol import ClientFrame as ClientFrame
from ._protocol import ClosedFrame as ClosedFrame
from ._protocol import ErrorFrame as ErrorFrame
from ._protocol import HelloFrame as HelloFrame
from ._protocol import MsgFrame as MsgFrame
from ._protocol import PingFrame as PingFrame
from ._protocol import PongFrame as PongFrame
from ._protocol import ServerFrame as ServerFrame
from ._protocol import StateFrame as StateFrame
from ._protocol import WelcomeFrame as WelcomeFrame
from ._protocol import decode_client_frame as decode_client_frame
from ._protocol import decode_server_frame as decode_server_frame
from ._protocol import encode_frame as encode_frame

__all__ = [
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
