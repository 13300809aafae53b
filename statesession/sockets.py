"""What a transport over TCP needs besides its framing: listening, serving each connection
in an error boundary of its own, naming the peer, and resetting a connection.

Each transport would otherwise write these again; see docs/writing-a-transport.md. The
code lives in ``statesession._runtime.sockets``; this module is its public name.
"""

from ._runtime.sockets import Stream as Stream
from ._runtime.sockets import listen_tcp as listen_tcp
from ._runtime.sockets import peer_address as peer_address
from ._runtime.sockets import peer_name as peer_name
from ._runtime.sockets import reset as reset
from ._runtime.sockets import serve_tcp as serve_tcp
from ._runtime.sockets import url_host as url_host

__all__ = [
    "Stream",
    "listen_tcp",
    "peer_address",
    "peer_name",
    "reset",
    "serve_tcp",
    "url_host",
]
