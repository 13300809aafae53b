"""Wire protocol v1 as a sans-IO codec: frame values, encoding and validated decoding.

For writing a client in another framework, or inspecting traffic. See docs/protocol.md.
"""

from ._core.codec import ERROR_CODES as ERROR_CODES
from ._core.codec import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._core.codec import RETRYABLE_CODES as RETRYABLE_CODES
from ._core.codec import AckFrame as AckFrame
from ._core.codec import ByeFrame as ByeFrame
from ._core.codec import ClientFrame as ClientFrame
from ._core.codec import ClosedFrame as ClosedFrame
from ._core.codec import ErrorFrame as ErrorFrame
from ._core.codec import HelloFrame as HelloFrame
from ._core.codec import MsgFrame as MsgFrame
from ._core.codec import PingFrame as PingFrame
from ._core.codec import PongFrame as PongFrame
from ._core.codec import ServerFrame as ServerFrame
from ._core.codec import StateFrame as StateFrame
from ._core.codec import WelcomeFrame as WelcomeFrame
from ._core.codec import decode_client_frame as decode_client_frame
from ._core.codec import decode_server_frame as decode_server_frame
from ._core.codec import encode_frame as encode_frame

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
