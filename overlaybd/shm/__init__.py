"""POSIX shared-memory plumbing for the worker engine: regions, SPSC rings, descriptors,
wake-ups, control channels, heartbeats and the shared allocator for writable layers."""

from .channel import Channel, PassFd
from .counter import SharedCounter
from .descriptor import COMPLETION_SIZE, MAX_IOVS, PART_SIZE, Part
from .heartbeat import Heartbeat
from .region import SharedRegion, stale_names, sweep_stale
from .ring import Ring
from .wakeup import Event

__all__ = [
           "COMPLETION_SIZE",
           "MAX_IOVS",
           "PART_SIZE",
           "Channel",
           "Event",
           "Heartbeat",
           "Part",
           "PassFd",
           "Ring",
           "SharedCounter",
           "SharedRegion",
           "stale_names",
           "sweep_stale",
]
