"""A counter shared by processes: the allocator of data-file positions for writable layers.

Several worker processes append to one writable LSMT data file.  Each append takes its position
from :meth:`SharedCounter.allocate`, an atomic fetch-and-add on a u64 in shared memory, so two
workers never write the same bytes.  The lock is a POSIX record lock (``fcntl.lockf``) on the
region's descriptor (per process, released by the kernel if the holder dies) plus a thread lock
(record locks do not exclude threads of one process).

The counter travels to worker processes inside a pickled opener through
:class:`overlaybd.shm.channel.Channel` (the descriptor goes by ``SCM_RIGHTS``); with ``fork``
it is simply inherited.
"""

from __future__ import annotations

import fcntl
import struct
import threading

from .channel import PassFd
from .region import SharedRegion

_U64 = struct.Struct("Q")


class SharedCounter:
    """``allocate(n) -> position``: returns the current value and advances it by ``n``."""

    def __init__(self, initial: int = 0, _region: SharedRegion | None = None):
        if _region is None:
            _region = SharedRegion.create(64, "counter")
            _U64.pack_into(_region.buf, 0, initial)
        self.region = _region
        self._tlock = threading.Lock()

    @classmethod
    def _attach(cls, fd: int) -> SharedCounter:
        return cls(_region=SharedRegion.attach(fd))

    def __reduce__(self):
        return (SharedCounter._attach, (PassFd(self.region.fd),))

    def _locked(self, fn):
        with self._tlock:
            fcntl.lockf(self.region.fd, fcntl.LOCK_EX)
            try:
                return fn(_U64.unpack_from(self.region.buf, 0)[0])
            finally:
                fcntl.lockf(self.region.fd, fcntl.LOCK_UN)

    def allocate(self, n: int) -> int:
        """Reserve ``n`` bytes; returns where they start."""
        if n < 0:
            raise ValueError(f"cannot allocate a negative size ({n})")

        def step(v):
            _U64.pack_into(self.region.buf, 0, v + n)
            return v
        return self._locked(step)

    __call__ = allocate

    def advance_to(self, value: int) -> int:
        """Raise the counter to at least ``value`` (e.g. a data file found longer); returns it."""
        def step(v):
            if value > v:
                _U64.pack_into(self.region.buf, 0, value)
                return value
            return v
        return self._locked(step)

    @property
    def value(self) -> int:
        return self._locked(lambda v: v)

    def close(self) -> None:
        self.region.close()
