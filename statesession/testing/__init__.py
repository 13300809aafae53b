"""Test helpers for statesession and for the programs that embed it: an in-memory
channel pair, a fault injector, and the conformance suite every transport must pass.

Nothing here imports pytest.
"""

from ._conformance import CONFORMANCE_CHECKS as CONFORMANCE_CHECKS
from ._conformance import OpenPair as OpenPair
from ._conformance import check_channel_pair as check_channel_pair
from ._faults import FaultyChannel as FaultyChannel
from ._memory import MemoryChannel as MemoryChannel
from ._memory import memory_channel_pair as memory_channel_pair
from ._transport_check import check_declarations as check_declarations
from ._transport_check import check_transport as check_transport

__all__ = [
    "CONFORMANCE_CHECKS",
    "FaultyChannel",
    "MemoryChannel",
    "OpenPair",
    "check_channel_pair",
    "check_declarations",
    "check_transport",
    "memory_channel_pair",
]
