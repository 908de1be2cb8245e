"""Replaying a trace: ``concurrency`` reader threads issue its reads, in order, through the
normal stack (ZFile -> cache -> registry), so that the on-disk cache is warm before the
container asks.

Consecutive records that continue each other (or nearly: gaps up to 128 KiB are read too) are
read as one run, cut into pieces of at most 1 MiB (upstream's replay buffer), handed out in
trace order; a piece that fails or comes back
short is logged and skipped.  Repeated pieces are read once.  Before each piece a reader passes the ``PriorityGate``: while the device has
commands in flight the gate is shut, so prefetch never competes with the I/O a container is
waiting for; a piece already started runs to its end.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from loguru import logger

from ..abi import trace as abi
from ..cache.filecache import planned_reads


class PriorityGate:
    """Device I/O first.  The daemon calls ``busy()`` when it starts serving commands and
    ``idle()`` when none is left in flight; a replay reads each piece between ``enter()`` and
    ``leave()``.  While the device is idle any number of pieces run; while it is busy at most
    ``busy_pieces`` do (0: none) and the other readers wait."""

    def __init__(self, busy_pieces=0):
        self.busy_pieces = busy_pieces
        self.shut = False            # the device has commands in flight (read it, never set it)
        self._cond = threading.Condition()
        self.running = 0
        self.waits = 0               # times a reader had to wait (for tests, stats)

    def busy(self) -> None:
        if not self.shut:
            with self._cond:
                self.shut = True

    def idle(self) -> None:
        if self.shut:
            with self._cond:
                self.shut = False
                self._cond.notify_all()

    @property
    def is_open(self) -> bool:
        return not self.shut

    def enter(self, stop: threading.Event) -> bool:
        """Wait for room to read a piece; False when ``stop`` was set meanwhile."""
        with self._cond:
            waited = False
            while self.shut and self.running >= self.busy_pieces and not stop.is_set():
                if not waited:
                    self.waits += 1
                    waited = True
                self._cond.wait(0.1)
            if stop.is_set():
                return False
            self.running += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self.running -= 1
            self._cond.notify()


MERGE_GAP = 128 << 10               # read through gaps this small between consecutive records
MAX_SPAN = 8 << 20
WARN_FAILURES = 5                   # failed pieces logged as warnings; the rest at debug level                  # a piece's first miss fetches at most this much of its run

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
        """``(layer, offset, count, span)`` pieces.  Each layer's records are merged into runs
        (overlapping, adjacent, or apart by at most ``MERGE_GAP`` bytes, which are read too:
        one region of the blob is one request, not several queued behind each other for the
        refill units they share); runs are handed out in the order of their first record,
        cut at ``piece`` bytes."""
        by_layer: dict[int, list] = {}
        missing = set()
        for k, r in enumerate(records):
            if r.op != abi.OP_READ or r.count <= 0 or r.offset < 0:
                self.skipped += 1
            elif r.layer not in self.targets:
                self.skipped += 1
                missing.add(r.layer)
            else:
                by_layer.setdefault(r.layer, []).append((r.offset, r.offset + r.count, k))
        runs = []
        for layer, spans in by_layer.items():
            spans.sort()
            cur = None
            for start, end, k in spans:
                if cur is not None and start <= cur[2] + MERGE_GAP:
                    cur[2] = max(cur[2], end)
                    cur[0] = min(cur[0], k)
                    continue
                cur = [k, start, end, layer]
                runs.append(cur)
        runs.sort()
        if missing:
            logger.warning("Prefetch: {}: records of layers {} skipped: the image has layers "
                           "0..{}", self.name, sorted(missing), len(self.targets) - 1)
        for _, start, end, layer in runs:
            yield from self._cut(layer, start, end, piece)

    @staticmethod
    def _cut(layer, off, end, piece):
        """Pieces of one run: ``(layer, offset, count, span)``, span being what is left of the
        run from the piece on (at most ``MAX_SPAN``): the piece's first miss fetches that
        much in one request, so the run's later pieces find their data there instead of
        queueing behind each other for the refill units they share."""
        while off < end:
            n = min(piece, end - off)
            # (+1/32: a ZFile stores incompressible data in slightly more bytes than it holds)
            yield layer, off, n, min(end - off, MAX_SPAN) * 33 // 32
            off += n

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
            self._loop()
        finally:
            self._thread_done()

    def _loop(self):
        while not self.stop_event.is_set():
            if not self.gate.enter(self.stop_event):
                break
            try:
                item = self._next()
                if item is None:
                    break
                layer, off, n, span = item
                t0 = time.monotonic()
                try:
                    with planned_reads(span):   # one fetch for the run, no readahead
                        got = len(self.targets[layer].pread(n, off))
                    err = None if got == n else f"short read: {got} of {n} bytes"
                except Exception as e:  # noqa: BLE001 -- a failed piece is a later cache miss
                    err = str(e) or type(e).__name__
            finally:
                self.gate.leave()
            logger.debug("Prefetch: {}: layer {} [{}, +{}) read in {:.1f} ms", self.name, layer,
                         off, n, (time.monotonic() - t0) * 1000)
            with self._lock:
                if err is None:
                    self.done += 1
                    self.bytes += n
                else:
                    self.failed += 1
            if err is not None:             # (a trace of another image fails everywhere)
                log = logger.warning if self.failed <= WARN_FAILURES else logger.debug
                log("Prefetch: {}: read of layer {} [{}, +{}) failed{}: {}", self.name, layer,
                    off, n, " (further failures at debug level)"
                    if self.failed == WARN_FAILURES else "", err)

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
