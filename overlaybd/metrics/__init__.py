"""The service's counters, summed over the supervisor and its workers (docs/operations.md).

Off unless ``exporterConfig.enable``: then the supervisor calls :func:`enable` before it forks
its workers, and :mod:`overlaybd.metrics.exporter` serves the sums.  Every process counts into
its own slab of an :class:`overlaybd.shm.slabs.SlabTable` -- the supervisor slab 0, worker
``i`` slab ``i + 1`` (found through :func:`overlaybd.process.current` after the fork);
any other forked child counts nothing.  While metrics are off every hook below is a no-op (and
the cache layer is not even wrapped), so the read path pays nothing.

Hooks, each called where the event is also audited or logged:

* :func:`layer` -> :class:`LayerMeter` per (image config, layer): reads through the cache layer
  (hits and misses), registry reads (``download``, ``bk_download``), refills, evicted ranges,
  background-download progress;
* :func:`registry_error` per failed registry request (by kind), :func:`registry_gave_up` per
  read that failed for good;
* :func:`eviction` when an eviction pass of the file cache starts (next to its audit line),
  :func:`evicted` with what it freed;
* :func:`prefetch_progress` -- for trace replay (issue 14): call it with absolute numbers as
  often as convenient; the exporter shows the latest.

Within a process a thread lock makes each update whole (the per-read hook relies on the GIL
instead, see :meth:`LayerMeter.cache_read`); across processes there is nothing to exclude (one
writer per slab).
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_left

from loguru import logger

from .. import forksafe, process
from ..shm.slabs import SlabTable, TableFull

# -- the group layouts (word offsets inside a group) -------------------------------------------
WIDTH = 32
GLOBAL, REGISTRY, ERRORS, LAYER, PREFETCH = "global", "registry", "errors", "layer", "prefetch"

# global: upstream's download meter, evictions, reads given up (upstream's pread meter is the
# sum of the layers' reads: the hot path touches one group only)
G_DL_READS, G_DL_BYTES, G_DL_MAX_US = 3, 4, 5
G_EVICT_PASSES, G_EVICT_BYTES, G_RANGE_EVICTS, G_RANGE_BYTES = 6, 7, 8, 9
G_GAVE_UP, G_EVICT_TARGET = 10, 11
MAX_FIELDS = {(GLOBAL, G_DL_MAX_US)}

# registry (label: event): latency histogram of registry data reads
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BUCKETS_US = tuple(int(b * 1e6) for b in BUCKETS)
R_SUM_US, R_COUNT = len(BUCKETS) + 1, len(BUCKETS) + 2     # buckets 0..len(BUCKETS) (+Inf last)

# errors: one word per kind of failed registry request
ERROR_KINDS = ("auth", "not_found", "throttled", "server", "client", "timeout", "connection",
               "tls", "bad_response", "other")

# layer (labels: config, layer)
(L_READS, L_BYTES, L_HIT_READS, L_HIT_BYTES, L_REG_READS, L_REG_BYTES, L_REFILLS, L_REFILL_BYTES,
 L_BK_READS, L_BK_BYTES, L_BK_DONE_BYTES, L_BK_SIZE, L_BK_COMPLETED, L_BK_FAILURES,
 L_RANGE_BYTES, L_MAX_US) = range(16)
MAX_FIELDS |= {(LAYER, L_BK_DONE_BYTES), (LAYER, L_BK_SIZE), (LAYER, L_BK_COMPLETED), (LAYER, L_MAX_US)}
assert (L_READS, L_BYTES, L_HIT_READS, L_HIT_BYTES, L_MAX_US) == (0, 1, 2, 3, 15)   # cache_read

# prefetch (label: config): gauges set by the replayer
P_DONE, P_TOTAL, P_BYTES, P_FAILED = range(4)


class _State:
    table: SlabTable | None = None
    words = None                 # this process's slab, bound lazily after a fork
    forked = False
    lock = threading.Lock()
    full_warned = False
    groups = [None, {}]          # [table, {(kind, labels): first word}]
    gen = 0                      # bumped when the table or this process's slab changes


_st = _State()


def enable(slabs: int, capacity: int = 2048) -> SlabTable:
    """Start counting (in the supervisor, before workers are forked): ``slabs`` = workers + 1."""
    disable()
    _st.table = SlabTable(slabs, capacity, WIDTH)
    _st.words = _st.table.slab(0)
    _st.forked = False
    _st.gen += 1
    return _st.table


def disable() -> None:
    """Stop counting in this process (the shared memory goes with its last user)."""
    t, _st.table = _st.table, None
    _st.gen += 1
    if _st.words is not None:
        _st.words.release()
    _st.words = None
    if t is not None and not _st.forked:
        try:
            t.close()
        except BufferError:          # an exporter still holds a view: freed with it
            pass


def table() -> SlabTable | None:
    return _st.table


def enabled() -> bool:
    return _st.table is not None


@forksafe.at_fork_child
def _after_fork_in_child() -> None:
    _st.words = None
    _st.forked = True
    _st.gen += 1
    _st.lock = threading.Lock()


def _words():
    """This process's slab, or None (metrics off, or a forked process that is not a worker)."""
    w = _st.words
    if w is not None or _st.table is None:
        return w
    ctx = process.current()
    if not _st.forked:
        index = 0
    elif ctx is not None and ctx.workers > 0 and ctx.index + 1 < _st.table.slabs:
        index = ctx.index + 1
    else:
        return None
    _st.words = _st.table.slab(index)
    _st.gen += 1
    return _st.words


def key(kind: str, *labels: str) -> str:
    return json.dumps([kind, *labels], separators=(",", ":"))


def _group(kind: str, *labels: str) -> int | None:
    """The first word of the group (kind, labels) in a slab (added to the table if new)."""
    t = _st.table
    if t is None:
        return None
    cache = _st.groups
    if cache[0] is not t:
        cache[:] = [t, {}]
    base = cache[1].get((kind, labels))
    if base is None:
        try:
            base = t.group(key(kind, *labels)) * WIDTH
        except TableFull as e:
            if not _st.full_warned:
                _st.full_warned = True
                logger.warning("metrics: {}; later series are not counted", e)
            return None
        cache[1][(kind, labels)] = base
    return base


# -- hooks -------------------------------------------------------------------------------------
def _note_max(w, i, value):
    if value > w[i]:
        w[i] = value


def _registry_read(w, event, nbytes, us):
    g = _group(GLOBAL)
    r = _group(REGISTRY, event)
    if g is None or r is None:
        return
    w[g + G_DL_READS] += 1
    w[g + G_DL_BYTES] += nbytes
    _note_max(w, g + G_DL_MAX_US, us)
    w[r + bisect_left(_BUCKETS_US, us)] += 1
    w[r + R_SUM_US] += us
    w[r + R_COUNT] += 1


class LayerMeter:
    """The counters of one layer of one image (``config`` path, layer digest or path)."""

    def __init__(self, config: str, layer: str):
        self.config, self.layer = config, layer
        self._labels = (config, layer)
        self._gen, self._w, self._b = -1, None, None

    def _base(self):
        return _group(LAYER, *self._labels)

    def _bind(self):
        """(words, first word of this layer's group), looked up once per table/slab."""
        w = _words()
        self._w, self._b = w, (self._base() if w is not None else None)
        self._gen = _st.gen
        return self._b is not None

    def cache_read(self, nbytes: int, us: int, hit: bool) -> None:
        """A read served by the cache layer (upstream's ``pread``); ``hit``: nothing fetched.

        Once per read, so: one group, no look-ups, and no lock -- under the GIL ``w[i] += n``
        with ``w``, ``i``, ``n`` already computed runs its load and store with no eval-breaker
        check between them (CPython 3.11/3.12), so threads lose no update; the max may lose
        a race, which only makes it one read less exact.  tests/test_metrics_slabs.py checks
        both with 8 threads."""
        if self._gen != _st.gen and not self._bind() or self._b is None:
            return
        w, b = self._w, self._b
        w[b] += 1                                   # L_READS
        w[b + 1] += nbytes                          # L_BYTES
        if hit:
            w[b + 2] += 1                           # L_HIT_READS
            w[b + 3] += nbytes                      # L_HIT_BYTES
        if us > w[b + 15]:                          # L_MAX_US
            w[b + 15] = us

    def registry_read(self, event: str, nbytes: int, seconds: float) -> None:
        """A registry data read audited as ``event`` (``download`` or ``bk_download``)."""
        w = _words()
        if w is None:
            return
        us = int(seconds * 1e6)
        with _st.lock:
            b = self._base()
            if b is None:
                return
            if event == "bk_download":
                w[b + L_BK_READS] += 1
                w[b + L_BK_BYTES] += nbytes
            else:
                w[b + L_REG_READS] += 1
                w[b + L_REG_BYTES] += nbytes
            _registry_read(w, event, nbytes, us)

    def refill(self, nbytes: int) -> None:
        """The cache fetched ``nbytes`` to fill holes (a miss, or read-ahead)."""
        _update((LAYER, *self._labels), add=((L_REFILLS, 1), (L_REFILL_BYTES, nbytes)))

    def range_evicted(self, nbytes: int) -> None:
        """A range was dropped from the cache (bad checksum: it will be fetched again)."""
        _update((LAYER, *self._labels), add=((L_RANGE_BYTES, nbytes),))
        _update((GLOBAL,), add=((G_RANGE_EVICTS, 1), (G_RANGE_BYTES, nbytes)))

    def download_progress(self, done_bytes: int, size: int) -> None:
        """Background download: ``done_bytes`` of ``size`` are in the local file."""
        _update((LAYER, *self._labels), put=((L_BK_DONE_BYTES, done_bytes), (L_BK_SIZE, size)))

    def download_finished(self, ok: bool) -> None:
        if ok:
            _update((LAYER, *self._labels), put=((L_BK_COMPLETED, 1),))
        else:
            _update((LAYER, *self._labels), add=((L_BK_FAILURES, 1),))


def layer(config: str, layer: str) -> LayerMeter | None:
    """A meter for one layer of one image, or None while metrics are off."""
    if _st.table is None:
        return None
    return LayerMeter(config or "", layer or "")


def _update(group: tuple, add=(), put=()) -> None:
    """Add ``(field, n)`` pairs to, and store ``(field, value)`` pairs in, the group
    ``(kind, *labels)`` of this process's slab."""
    w = _words()
    if w is None:
        return
    with _st.lock:
        g = _group(*group)
        if g is None:
            return
        for f, n in add:
            w[g + f] += n
        for f, v in put:
            w[g + f] = v


def registry_error(kind: str) -> None:
    """A registry request failed (it may be retried); ``kind`` is one of ERROR_KINDS."""
    i = ERROR_KINDS.index(kind if kind in ERROR_KINDS else "other")
    _update((ERRORS,), add=((i, 1),))


def registry_gave_up() -> None:
    """A registry read failed for good (retries exhausted or not retryable)."""
    _update((GLOBAL,), add=((G_GAVE_UP, 1),))


def eviction(target: int) -> None:
    """An eviction pass of the file cache starts, to free ``target`` bytes (its audit line's
    ``actualEvict``)."""
    _update((GLOBAL,), add=((G_EVICT_PASSES, 1), (G_EVICT_TARGET, target)))


def evicted(nbytes: int) -> None:
    """An eviction pass freed ``nbytes``."""
    _update((GLOBAL,), add=((G_EVICT_BYTES, nbytes),))


def prefetch_progress(config: str, done: int, total: int, nbytes: int = 0, failed: int = 0) -> None:
    """Trace replay of the image ``config``: ``done`` of ``total`` reads issued, ``nbytes`` read,
    ``failed`` reads that failed.  Absolute values, so any process may call it any number of
    times (each process reports its own share; the exporter sums them)."""
    _update((PREFETCH, config), put=((P_DONE, done), (P_TOTAL, total), (P_BYTES, nbytes),
                                     (P_FAILED, failed)))


def pread_totals(tot: dict) -> tuple[int, int]:
    """Upstream's ``pread`` meter (reads, bytes) from :func:`totals`: the layers' sum."""
    reads = nbytes = 0
    for k, row in tot.items():
        if k.startswith('["layer"'):
            reads += row[L_READS]
            nbytes += row[L_BYTES]
    return reads, nbytes


def totals() -> dict:
    """Every group summed over the processes: ``{key: [word, ...]}`` (max fields: the largest)."""
    t = _st.table
    if t is None:
        return {}
    keys = t.keys()
    a = t.array()[:, :len(keys), :]
    summed = a.sum(axis=0, dtype="uint64").tolist()
    top = a.max(axis=0).tolist() if len(keys) else []
    del a
    out = {}
    for g, k in enumerate(keys):
        kind = json.loads(k)[0]
        row = summed[g]
        for f in range(WIDTH):
            if (kind, f) in MAX_FIELDS:
                row[f] = top[g][f]
        out[k] = row
    return out


def reset_max() -> dict:
    """Read and clear the windowed maxima (the exporter's sampler, once per window):
    ``{"pread": us, "download": us}``.  A writer racing the clear may carry its value into the
    next window."""
    out = {"pread": 0, "download": 0}
    t = _st.table
    if t is None:
        return out
    fields = []
    for g, k in enumerate(t.keys()):
        if k.startswith('["layer"'):
            fields.append(("pread", g * WIDTH + L_MAX_US))
        elif k == key(GLOBAL):
            fields.append(("download", g * WIDTH + G_DL_MAX_US))
    for s in range(t.slabs):
        w = t.slab(s)
        for name, i in fields:
            if w[i] > out[name]:
                out[name] = w[i]
            w[i] = 0
        w.release()
    return out
