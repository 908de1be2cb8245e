"""Replaying a trace: ``concurrency`` reader threads issue its reads, in order, through the
normal stack (ZFile -> cache -> registry), so that the on-disk cache is warm before the
container asks.

Records are cut into pieces of at most 1 MiB (upstream's replay buffer) and handed out in
trace order; a piece that fails or comes back short is logged and skipped.  Repeated pieces
are read once.  Before each piece a reader passes the ``PriorityGate``: while the device has
commands in flight the gate is shut, so prefetch never competes with the I/O a container is
waiting for; a piece already started runs to its end.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from loguru import logger

from ..abi import trace as abi


class PriorityGate:
    """Open while the device is idle.  The daemon calls ``busy()`` when it starts serving
    commands and ``idle()`` when none is left in flight; readers call ``wait()``."""

    def __init__(self):
        self._open = threading.Event()
        self._open.set()
        self.waits = 0               # times a reader found the gate shut (for tests, stats)

    def busy(self) -> None:
        if self._open.is_set():
            self._open.clear()

    def idle(self) -> None:
        if not self._open.is_set():
            self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def wait(self, stop: threading.Event, timeout: float | None = None) -> bool:
        """Block until the gate opens (True) or ``stop`` is set / ``timeout`` passes (False)."""
        if self._open.is_set():
            return not stop.is_set()
        self.waits += 1
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stop.is_set():
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return False
            if self._open.wait(left):
                return not stop.is_set()
        return False


OPEN_GATE = PriorityGate()           # for replays nobody gates (tools, tests)


class Replayer:
    """Replays ``records`` against ``targets`` (layer index -> file object with ``pread``).

    ``start()`` launches the readers in the background; ``join()`` waits for them;
    ``stop()`` asks them to finish their current piece and quit.  Counters: ``done``,
    ``failed``, ``skipped`` (records of a layer not in ``targets`` or not reads), ``bytes``."""

    def __init__(self, records, targets, concurrency=16, gate=None, name="replay",
                 piece=abi.MAX_IO_SIZE, stop_event=None):
        self.targets = dict(targets)
        self.concurrency = max(1, int(concurrency))
        self.gate = gate or OPEN_GATE
        self.name = name
        self.stop_event = stop_event or threading.Event()
        self.done = self.failed = self.skipped = self.bytes = 0
        self._lock = threading.Lock()
        self._queue = deque(self._pieces(records, piece))
        self.total = len(self._queue)
        self._threads: list[threading.Thread] = []
        self._live = 0
        self.started = self.finished = None

    def _pieces(self, records, piece):
        seen = set()
        missing = set()
        for r in records:
            if r.op != abi.OP_READ or r.count <= 0 or r.offset < 0:
                self.skipped += 1
                continue
            if r.layer not in self.targets:
                self.skipped += 1
                missing.add(r.layer)
                continue
            off, end = r.offset, r.offset + r.count
            while off < end:
                n = min(piece, end - off)
                key = (r.layer, off, n)
                if key not in seen:
                    seen.add(key)
                    yield key
                off += n
        if missing:
            logger.warning("Prefetch: {}: records of layers {} skipped: the image has layers "
                           "0..{}", self.name, sorted(missing), len(self.targets) - 1)

    def start(self) -> Replayer:
        self.started = time.monotonic()
        logger.info("Prefetch: {}: replaying {} reads, concurrency {}", self.name, self.total,
                    self.concurrency)
        n = min(self.concurrency, max(1, self.total))
        self._live = n
        for k in range(n):
            t = threading.Thread(target=self._run, name=f"prefetch-{k}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def _next(self):
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _run(self):
        try:
            while not self.stop_event.is_set():
                if not self.gate.wait(self.stop_event):
                    break
                item = self._next()
                if item is None:
                    break
                layer, off, n = item
                try:
                    got = len(self.targets[layer].pread(n, off))
                    err = None if got == n else f"short read: {got} of {n} bytes"
                except Exception as e:  # noqa: BLE001 -- a failed piece is a later cache miss
                    err = str(e) or type(e).__name__
                with self._lock:
                    if err is None:
                        self.done += 1
                        self.bytes += n
                    else:
                        self.failed += 1
                if err is not None:
                    logger.warning("Prefetch: {}: read of layer {} [{}, +{}) failed: {}",
                                   self.name, layer, off, n, err)
        finally:
            self._thread_done()

    def _thread_done(self):
        with self._lock:
            self._live -= 1
            if self._live:
                return
            self.finished = time.monotonic()
        logger.info("Prefetch: {}: {} reads done ({} MiB), {} failed, {} left{}, in {:.0f} ms",
                    self.name, self.done, self.bytes >> 20, self.failed, len(self._queue),
                    " (stopped)" if self.stop_event.is_set() else "",
                    (self.finished - self.started) * 1000)

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the readers; True when all have finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)
