"""Test helpers for statesession and for the programs that embed it: an in-memory
channel pair, a fault injector, and the conformance suites every transport and every
store must pass.

Nothing here imports pytest.
"""

from ._conformance import CONFORMANCE_CHECKS as CONFORMANCE_CHECKS
from ._conformance import OpenPair as OpenPair
from ._conformance import check_channel_pair as check_channel_pair
from ._faults import FaultyChannel as FaultyChannel
from ._memory import MemoryChannel as MemoryChannel
from ._memory import memory_channel_pair as memory_channel_pair
from ._store_conformance import STORE_CHECKS as STORE_CHECKS
from ._store_conformance import NewStore as NewStore
from ._store_conformance import StoreOpener as StoreOpener
from ._store_conformance import check_store as check_store
from ._transport_check import check_declarations as check_declarations
from ._transport_check import check_transport as check_transport

__all__ = [
    "CONFORMANCE_CHECKS",
    "STORE_CHECKS",
    "FaultyChannel",
    "MemoryChannel",
    "NewStore",
    "OpenPair",
    "StoreOpener",
    "check_channel_pair",
    "check_declarations",
    "check_store",
    "check_transport",
    "memory_channel_pair",
]
