"""The TCP transport for statesession: length-prefixed JSON frames over trio streams.

Each frame is a 4-byte unsigned big-endian length followed by that many bytes of UTF-8
JSON. Registered as ``tcp``; serve with ``statesession.serve(manager, "tcp://host:port")``
and connect with ``statesession.open_client("tcp://host:port")``.
"""

from ._framing import HEADER_SIZE as HEADER_SIZE
from ._framing import FrameDecoder as FrameDecoder
from ._framing import encode_frame as encode_frame
from ._transport import DEFAULT_PORT as DEFAULT_PORT
from ._transport import TcpChannel as TcpChannel
from ._transport import TcpTransport as TcpTransport
from ._transport import transport as transport

__all__ = [
    "DEFAULT_PORT",
    "HEADER_SIZE",
    "FrameDecoder",
    "TcpChannel",
    "TcpTransport",
    "encode_frame",
    "transport",
]
