"""A remote blob cached in one sparse local file (spec §7.1 "file" cache, §7.2 "download").

``CachedBlob`` serves ``pread`` from the cache file where its pages are allocated; a read that
touches a hole fetches the hole span rounded out to the refill unit (256 KiB by default; grown
up to ``MAX_READAHEAD`` while reads are sequential) in one ranged GET, writes it into the file
and serves the caller.  Concurrent refills of the same range -- from threads or from other
processes -- fetch once (``RangeLock`` + re-check under the lock).  ``evict(off, n)`` punches a
hole so the next read refetches (the ZFile reader calls it on a CRC failure).
"""

import contextlib
import errno
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from loguru import logger

from .. import forksafe, log
from ..io import PRIVATE_FILE, pread_by_preadinto, punch_hole
from .sparse import (
    PAGE,
    RangeLock,
    align_down,
    align_up,
    fully_present,
    holes,
)

MAX_READAHEAD = 16 << 20
PREFETCH_DEPTH = 2

_prefetch_pool = None
_pool_lock = threading.Lock()


@forksafe.at_fork_child
def _after_fork_in_child():
    global _pool_lock, _prefetch_pool
    _pool_lock = threading.Lock()
    _prefetch_pool = None               # the parent's prefetch threads are not in the child


_tls = threading.local()
SCRATCH_KEEP = MAX_READAHEAD


def _scratch(n):
    """An ``n``-byte memoryview over this thread's reusable refill buffer (fresh pages are
    costly: reusing one buffer avoids a page fault per 4 KiB on every refill)."""
    if n > SCRATCH_KEEP:
        return memoryview(bytearray(n))
    b = getattr(_tls, "buf", None)
    if b is None or len(b) < n:
        b = _tls.buf = bytearray(max(n, MAX_READAHEAD))
    return memoryview(b)[:n]


@contextlib.contextmanager
def planned_reads(span):
    """In this thread, a miss fetches ``span`` bytes from where the missing range starts
    (rounded out to the refill unit) and nothing more: no sequential window, no background
    readahead.  Trace replay reads a planned piece this way: one request for the piece, where its reads
    would otherwise go out in refill units (a ZFile reads at most 64 KiB at a time) and its
    consecutive pieces would grow the window to 16 MiB fetches."""
    prev = getattr(_tls, "plan", None)
    _tls.plan = span
    try:
        yield
    finally:
        _tls.plan = prev


def _executor():
    """The process's prefetch threads (recreated after fork)."""
    global _prefetch_pool
    with _pool_lock:
        if _prefetch_pool is None:
            _prefetch_pool = ThreadPoolExecutor(4, thread_name_prefix="prefetch")
        return _prefetch_pool


def known_size(path, hint=0):
    """The blob size a cache file proves without asking the registry, or None.

    A size that is not a multiple of 4 KiB can only come from a write of the blob's last page
    (spec §7.1); a size equal to the layer's configured ``size`` is trusted too."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_size % PAGE or (hint and st.st_size == hint):
        return st.st_size
    return None


class CachedBlob:
    """File object over a blob of ``size`` bytes cached in ``cache_path``.

    ``source`` is a callable returning the remote file object (opened lazily, so a fully cached
    blob never contacts the registry); ``store`` is a CacheStore for accounting or None.
    """

    def __init__(self, cache_path, size, source, refill=262144, store=None, url=None, meter=None):
        self.cache_path = cache_path
        self.path = url or cache_path
        self.size = size
        self._source_factory = source
        self._source = None
        self.refill = max(PAGE, int(refill or 262144))
        self.store = store
        self.name = os.path.relpath(cache_path, store.root) if store else None
        self.fd = os.open(cache_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        if os.fstat(self.fd).st_size != size:
            os.ftruncate(self.fd, 0)            # stale or foreign contents: start over
            os.ftruncate(self.fd, size)
        self.locks = RangeLock(self.fd)
        self._src_lock = threading.Lock()
        self._last_end, self._ahead = -1, -1
        self._window = self.refill
        self._prefetching = 0
        self._idle = threading.Condition(self._src_lock)
        self._closing = False
        forksafe.track(self)
        self.meter = meter
        self._fills = 0
        if meter is not None:       # metrics on: count every read (no cost when off)
            self.preadinto = self._metered_preadinto
        if store:
            store.acquire(self.name, self.fd)

    # -- file protocol ----------------------------------------------------------------------
    def pread(self, n, off):
        return pread_by_preadinto(self, n, off)

    def preadinto(self, buf, off):
        n = min(len(buf), max(0, self.size - off))
        if n <= 0:
            return 0
        mv = memoryview(buf)[:n]
        a, b = align_down(off), min(align_up(off + n), self.size)
        present = fully_present(self.fd, a, b)
        if getattr(_tls, "plan", None) is None:
            self._track(off, n, not present)
        for _ in range(3):
            fetched = None if present else self._fill(a, b)
            present = False
            if fetched is not None and fetched[0] <= off and off + n <= fetched[0] + len(fetched[1]):
                s = fetched[0]
                mv[:] = fetched[1][off - s:off + n - s]
                return n
            from_file = self._copy_out(mv, off, fetched)
            if from_file is not None and all(fully_present(self.fd, align_down(x), min(align_up(y), self.size))
                                             for x, y in from_file):
                if self.store:
                    self.store.touch(self.name)
                return n
            # the file was evicted (truncated) under us: fetch again
        raise OSError(errno.EIO, f"cache file {self.cache_path} keeps losing [{a}, {b})")

    def _metered_preadinto(self, buf, off):
        """preadinto, counted: a read during which this blob fetched nothing is a hit."""
        fills = self._fills
        t0 = time.monotonic_ns()
        n = CachedBlob.preadinto(self, buf, off)
        self.meter.cache_read(n, (time.monotonic_ns() - t0) // 1000, self._fills == fills)
        return n

    def evict(self, off, n):
        """Drop ``[off, off+n)`` (rounded out to pages) from the cache."""
        a, b = align_down(max(0, off)), min(align_up(off + n), self.size)
        with self.locks.hold(a, b):
            punch_hole(self.fd, a, b - a)
        logger.info("cache range evicted: {}", log.kv(blob=self.path, offset=a, size=b - a,
                                                      file=self.cache_path))
        if self.meter is not None:
            self.meter.range_evicted(b - a)

    def close(self):
        with self._idle:                        # background prefetches use the fd: wait
            while self._prefetching:
                self._idle.wait()
            self._closing = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            if self.store:
                self.store.release(self.name)

    def _after_fork_in_child(self):
        self._src_lock = threading.Lock()       # the parent's prefetch threads are gone: what
        self._idle = threading.Condition(self._src_lock)    # they held or counted goes too
        self._prefetching = 0

    @property
    def source(self):
        with self._src_lock:
            if self._source is None:
                self._source = self._source_factory()
            return self._source

    # -- refill -----------------------------------------------------------------------------
    def _track(self, off, n, miss=True):
        """Sequential-read detection: the window doubles per consecutive read that misses,
        from the refill unit up to MAX_READAHEAD; at its maximum, up to PREFETCH_DEPTH further
        windows are fetched in the background so network, page-cache writes and the reader
        overlap.  Hits do not grow it: a ZFile reads its blob 64 KiB at a time, so a few
        decompressed reads served from one refill (a mount's metadata) would otherwise reach
        16 MiB fetches (make demo fetched 72% of its image to mount it)."""
        if self._last_end - PAGE <= off <= self._last_end + PAGE:
            if miss:
                self._window = min(self._window * 2, MAX_READAHEAD)
        else:
            self._window, self._ahead = self.refill, -1
        self._last_end = off + n
        if self._window < MAX_READAHEAD or self._ahead < 0:
            return
        with self._src_lock:
            while (not self._closing and self._prefetching < PREFETCH_DEPTH and self._ahead < self.size
                   and self._ahead <= off + n + PREFETCH_DEPTH * MAX_READAHEAD):
                s, e = self._ahead, min(self._ahead + MAX_READAHEAD, self.size)
                self._ahead = e
                self._prefetching += 1
                _executor().submit(self._prefetch, s, e)

    def _prefetch(self, s, e):
        try:
            if self.fd >= 0 and not fully_present(self.fd, s, e):
                self._fill_span(s, e)
        except Exception as err:                # noqa: BLE001 - a failed prefetch is a later miss
            logger.debug("cache {}: prefetch [{}, {}) failed: {}", self.cache_path, s, e, err)
        finally:
            with self._idle:
                self._prefetching -= 1
                self._idle.notify_all()

    def _fill(self, a, b):
        """Make ``[a, b)`` present: fetch the holes' span rounded out to the refill unit (and
        grown to the sequential window, or to this thread's planned span) and write it.
        Returns (start, bytes) fetched -- served from memory, as the write may fail (cache
        full) or be evicted at once -- or None when another reader had filled the range
        meanwhile."""
        hs = holes(self.fd, a, b)
        if not hs:
            return None
        fs = align_down(hs[0][0], self.refill)
        plan = getattr(_tls, "plan", None)
        reach = fs + self._window if plan is None else align_up(hs[0][0] + plan, self.refill)
        fe = min(max(align_up(hs[-1][1], self.refill), reach), self.size)
        self._ahead = max(self._ahead, fe)
        return self._fill_span(fs, fe)

    def _fill_span(self, fs, fe):
        if self.fd < 0:
            return None
        with self.locks.hold(fs, fe):
            hs = holes(self.fd, fs, fe)         # someone may have filled it meanwhile
            if not hs:
                return None
            s = max(fs, align_down(hs[0][0], self.refill))
            e = min(fe, align_up(hs[-1][1], self.refill), self.size)
            buf = _scratch(e - s)
            self.source.fetch_into(buf, s)
            if self.meter is not None:
                self._fills += 1
                self.meter.refill(len(buf))
            try:
                if self.store:
                    self.store.check_writable()
                if os.fstat(self.fd).st_size != self.size:   # evicted (truncated) meanwhile
                    os.ftruncate(self.fd, self.size)
                w = os.pwrite(self.fd, buf, s)
                if w != len(buf):
                    raise OSError(errno.ENOSPC, "short write")
            except OSError as err:
                logger.warning("cache {}: not cached [{}, {}): {}", self.cache_path, s, e, err.strerror)
            finally:
                if self.store:
                    self.store.note_write(self.name)
        return s, buf

    def _copy_out(self, mv, off, fetched):
        """Serve ``mv`` (at ``off``) from a fetched (start, bytes), if any, plus the cache file.
        Returns the ranges read from the file, or None if it came up short (evicted)."""
        n = len(mv)
        lo = hi = off
        if fetched is not None:
            s, data = fetched
            lo, hi = max(off, s), min(off + n, s + len(data))
            if lo < hi:
                mv[lo - off:hi - off] = data[lo - s:hi - s]
            else:
                lo = hi = off
        ranges = [(x, y) for x, y in ((off, lo), (hi, off + n)) if x < y]
        for x, y in ranges:
            if os.preadv(self.fd, [mv[x - off:y - off]], x) != y - x:
                return None
        return ranges
