"""Test helpers for statesession and for the programs that embed it."""

from ._faults import FaultyChannel as FaultyChannel
from ._memory import MemoryChannel as MemoryChannel
from ._memory import memory_channel_pair as memory_channel_pair

__all__ = ["FaultyChannel", "MemoryChannel", "memory_channel_pair"]
