"""Recording the reads each lower layer serves, from every process that serves the device.

The supervisor decides to record (``overlaybd.prefetch.session``) and creates a *spool*: an
empty file every serving process appends to.  ``RecordSpec`` travels inside the image opener
to the workers; in each process ``wrap_layers`` puts a ``RecordingFile`` between the merged
LSMT view and each decoded layer (after tar and ZFile), so a record is in the layer's own
address space.  Every successful full read appends one 24-byte record with a single
``O_APPEND`` write: the kernel orders appends, so the spool holds the records of all processes
in arrival order, and a process that dies loses nothing.

A process stops appending when the lock file is gone (looked at about once a second), when the
learning window is over, when its byte budget is spent, or when the image closes; the
supervisor turns the spool into the trace.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from loguru import logger

from ..abi import trace as abi

LOCK_POLL = 0.5             # seconds between looks at the lock file (upstream: 1 s)


@dataclass(frozen=True)
class RecordSpec:
    """What an engine process needs to record (picklable).

    ``spool``: the file to append to; ``lock``: recording stops when this file is gone (None:
    no lock); ``until``: wall-clock time (``time.time()``) after which nothing is recorded
    (0: no limit); ``max_bytes``: stop after records covering this many bytes (0: no limit)."""
    spool: str
    lock: str | None = None
    until: float = 0.0
    max_bytes: int = 0

    def sink(self):
        """This process's ``Sink``, or None when the recording is already over."""
        if self.until and time.time() >= self.until:
            return None
        try:
            fd = os.open(self.spool, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as e:
            logger.warning("Prefetch: not recording, cannot open spool {}: {}", self.spool,
                           e.strerror)
            return None
        return Sink(fd, self)


class Sink:
    """One process's end of the spool.  ``add`` is called from any reading thread."""

    def __init__(self, fd, spec: RecordSpec):
        self.fd = fd
        self.spec = spec
        self.armed = False          # off while the image opens: index reads are not recorded
        self.recorded = 0
        self.bytes = 0
        self._next_look = 0.0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.fd >= 0

    def arm(self):
        self.armed = True

    def add(self, layer: int, count: int, offset: int) -> None:
        if not self.armed or self.fd < 0:
            return
        spec = self.spec
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + LOCK_POLL
            if (spec.lock and not os.path.exists(spec.lock)) or \
                    (spec.until and time.time() >= spec.until):
                self.stop()
                return
        try:
            os.write(self.fd, abi.pack_record(abi.OP_READ, layer, count, offset))
        except OSError as e:
            logger.warning("Prefetch: recording stopped, spool {}: {}", spec.spool, e.strerror)
            self.stop()
            return
        self.recorded += 1
        self.bytes += count
        if spec.max_bytes and self.bytes >= spec.max_bytes:
            self.stop()

    def stop(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class RecordingFile:
    """A layer file that reports each successful full read to a ``Sink``.

    Implements the file protocol (``size``, ``pread``, ``preadinto``, ``close``) and forwards
    ``evict``/``path`` to the layer.  Short or failed reads are not recorded (upstream records
    only reads that returned ``count`` bytes)."""

    def __init__(self, file, layer: int, sink: Sink):
        self.file = file
        self.layer = layer
        self.sink = sink
        self.size = file.size
        self.path = getattr(file, "path", None)
        self._into = getattr(file, "preadinto", None)
        ev = getattr(file, "evict", None)
        if ev is not None:
            self.evict = ev

    def pread(self, n, off):
        data = self.file.pread(n, off)
        if len(data) == n and n:
            self.sink.add(self.layer, n, off)
        return data

    def preadinto(self, buf, off):
        n = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
        if self._into is not None:
            got = self._into(buf, off)
        else:
            data = self.file.pread(n, off)
            got = len(data)
            memoryview(buf).cast("B")[:got] = data
        if got == n and n:
            self.sink.add(self.layer, n, off)
        return got

    def close(self):
        self.file.close()


def wrap_layers(layers, spec: RecordSpec | None):
    """``(layers, sink)``: each decoded lower wrapped for recording under ``spec`` (layer
    index = position, bottom first), or the layers as they are when there is nothing to
    record.  The sink starts disarmed: call ``sink.arm()`` once the image is open."""
    sink = spec.sink() if spec is not None else None
    if sink is None:
        return list(layers), None
    return [RecordingFile(f, i, sink) for i, f in enumerate(layers)], sink
