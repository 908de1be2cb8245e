"""Accounting and LRU eviction of the file cache directory (spec §7.1).

One ``CacheStore`` per cache directory per process (``store_for``); the budget is the
directory's, shared by every process through ``usage.SharedUsage``, and one process (the
evictor) runs the passes.  Cache writes report their growth there; a writer that brings the
total to the risk mark stops cache writes and asks the evictor for a pass, which runs within
0.2 s.  A pass re-measures every file in the directory (so it sees what every process wrote),
moves files written since the last pass to the recent end of the LRU (in order of their
mtime), and every ``interval`` seconds (10 s) evicts least-recently-used files down to the
water mark or to 1 GiB of free disk:

* ``waterMark = max(0.9*capacity, capacity - 50 GiB)``;
  ``riskMark = max(capacity - 5 GiB, (waterMark + capacity) / 2)``;
* ``evictByDisk = 1 GiB - free`` when less than 1 GiB is free; ``evictByCache = used - waterMark``;
  target = ``min(max(both), used)``; an ``eviction`` audit line when target > 0;
* an evicted file is truncated to 0; it is unlinked unless a process has it open (each opener
  holds ``flock(LOCK_SH)`` on it), in which case it stays (empty) and becomes most recently
  used.  Cached data is found by the file's allocated extents, so a reader in another process
  sees a truncated file as not cached and fetches again.

LRU order: this process's own opens and reads, plus the write times every pass sees; a read
in another process of an already cached file does not move it.

A write that brings usage to the risk mark runs a pass at once and marks the store full: cache
writes then fail with ENOSPC (reads are still served from the registry) until a pass ends
below the risk mark.
"""

import errno
import fcntl
import os
import threading
import time
from collections import OrderedDict

from loguru import logger

from .. import audit, forksafe, metrics
from ..io import make_private_dir
from .usage import NAME as USAGE_NAME
from .usage import SharedUsage, sweep_stale

GiB = 1 << 30
DISK_RESERVE = 1 * GiB
INTERVAL = 10.0
POLL = 0.2                  # how often the evictor looks for a requested pass


def marks(capacity):
    water = max(0.9 * capacity, capacity - 50 * GiB)
    risk = max(capacity - 5 * GiB, (water + capacity) / 2)
    return water, risk


class CacheStore:
    def __init__(self, root, capacity, interval=INTERVAL):
        self.root = os.path.abspath(root)
        self.capacity = int(capacity)
        self.water, self.risk = marks(self.capacity)
        self.lock = threading.RLock()
        self.used = OrderedDict()            # relative name -> allocated bytes, LRU first
        self.opened = {}                     # relative name -> open count (this process)
        self.total = 0
        self.mtimes = {}                     # relative name -> st_mtime_ns at the last measure
        make_private_dir(self.root)
        sweep_stale()
        self.usage = SharedUsage(self.root)
        self.usage.try_become_evictor()
        self.scan()
        self._stop = threading.Event()
        self._timer = None
        if interval:
            self._timer = threading.Thread(target=self._loop, args=(interval,), daemon=True,
                                           name=f"cache-evict:{self.root}")
            self._timer.start()

    @property
    def full(self):
        return self.usage.full

    # -- bookkeeping ----------------------------------------------------------------------
    def _names(self):
        for dirpath, _, files in os.walk(self.root):
            for fn in sorted(files):
                if fn == USAGE_NAME and dirpath == self.root:
                    continue
                yield os.path.relpath(os.path.join(dirpath, fn), self.root)

    def scan(self, remeasure=False):
        """Count files not known yet (start-up walk, and files placed by hand since); with
        ``remeasure`` (the evictor's pass) measure every file again and forget vanished ones,
        moving those written since the last look to the recent end, oldest write first."""
        seen, written = set(), []
        for name in self._names():
            seen.add(name)
            with self.lock:
                if name not in self.used or remeasure:
                    before = self.mtimes.get(name)
                    self._measure(name)
                    if remeasure and before is not None and self.mtimes.get(name) != before:
                        written.append((self.mtimes[name], name))
        if remeasure:
            with self.lock:
                for name in [n for n in self.used if n not in seen and not self.opened.get(n)]:
                    self.total -= self.used.pop(name)
                    self.mtimes.pop(name, None)
                for _, name in sorted(written):
                    self.used.move_to_end(name)

    def _measure(self, name):
        try:
            st = os.stat(os.path.join(self.root, name))
            n = st.st_blocks * 512
            self.mtimes[name] = st.st_mtime_ns
        except FileNotFoundError:
            n = 0
        old = self.used.get(name, 0)
        self.used[name] = n
        self.total += n - old
        return n - old

    def acquire(self, name, fd=None):
        """``name`` is open here; with ``fd``, other processes' evictors see it open too."""
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        with self.lock:
            self.opened[name] = self.opened.get(name, 0) + 1
            self._measure(name)
            self.used.move_to_end(name)

    def release(self, name):
        with self.lock:
            k = self.opened.get(name, 0) - 1
            if k > 0:
                self.opened[name] = k
            else:
                self.opened.pop(name, None)

    def touch(self, name):
        with self.lock:
            if name in self.used:
                self.used.move_to_end(name)

    def check_writable(self):
        if self.usage.full:
            raise OSError(errno.ENOSPC, f"cache {self.root} is full")

    def note_write(self, name):
        """Re-measure ``name`` after a write and report its growth; at the risk mark stop
        cache writes and evict now (here if this process is the evictor, else by request)."""
        with self.lock:
            grown = self._measure(name)
            self.used.move_to_end(name)
        if self.usage.add_written(grown) >= self.risk:
            self.usage.request_pass()
            if self.usage.evictor:
                self.evict_pass()

    # -- eviction -------------------------------------------------------------------------
    def _free_disk(self):
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    def evict_pass(self):
        """One eviction pass; returns the number of bytes freed.  Only the evictor runs
        passes; in another process this asks the evictor for one and returns 0."""
        if not os.path.isdir(self.root):        # removed by hand: recreated on the next open
            return 0
        if not self.usage.try_become_evictor():
            self.usage.request_pass()
            return 0
        self.scan(remeasure=True)
        free, fs_size = self._free_disk()
        with self.lock:
            by_disk = DISK_RESERVE - free if free < DISK_RESERVE else 0
            if not by_disk and fs_size < self.water:
                self.usage.publish(self.total, full=False)
                return 0
            by_cache = max(0, int(self.total - self.water))
            target = min(max(by_cache, by_disk), self.total)
            if target <= 0:
                self.usage.publish(self.total, full=self.total >= self.risk)
                return 0
            audit.event("eviction", ("actualEvict", target), ("evictByCache", by_cache),
                        ("evictByDisk", by_disk), ("totalUsed_", self.total))
            metrics.eviction(target)
            freed, tried = 0, set()
            while target > 0 and self.used:
                name, size = next(iter(self.used.items()))
                if name in tried:
                    break
                tried.add(name)
                freed += self._evict_file(name, size)
                target -= size
            self.usage.publish(self.total, full=self.total >= self.risk)
        if freed:
            metrics.evicted(freed)
            logger.info("cache {}: evicted {} bytes, {} in use", self.root, freed, self.total)
        return freed

    def _evict_file(self, name, size):
        path = os.path.join(self.root, name)
        try:
            os.truncate(path, 0)
        except FileNotFoundError:
            pass
        except OSError as e:
            logger.warning("cache {}: cannot truncate {}: {}", self.root, name, e.strerror)
        self.total -= size
        if self.opened.get(name) or not _unused_elsewhere(path):
            self.used[name] = 0
            self.used.move_to_end(name)
            try:                        # our truncation is not a write: keep its place
                self.mtimes[name] = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                pass
        else:
            del self.used[name]
            self.mtimes.pop(name, None)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return size

    def _loop(self, interval):
        last = time.monotonic()
        while not self._stop.wait(min(POLL, interval)):
            due = time.monotonic() - last >= interval
            if not (due or (self.usage.evictor and self.usage.requested)):
                continue
            last = time.monotonic()
            try:
                if self.usage.try_become_evictor():
                    self.evict_pass()
            except Exception as e:              # noqa: BLE001 - the timer must survive anything
                logger.error("cache {}: eviction pass failed: {}", self.root, e)

    def stop(self):
        self._stop.set()

    def forget(self):
        """In a forked child: this store's timer did not survive and its usage descriptor is
        the parent's; it stays usable by what the child inherited, as a non-evictor."""
        self._stop.set()
        self.usage.reopen_after_fork()


def _unused_elsewhere(path):
    """True when no process holds ``path`` open through a CacheStore (their flock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


_stores = {}
_stores_lock = threading.Lock()


@forksafe.at_fork_child
def _after_fork_in_child():
    global _stores_lock
    _stores_lock = threading.Lock()
    for old in _stores.values():        # their timer threads did not survive the fork
        old.forget()
    _stores.clear()


def store_for(root, size_gb, interval=INTERVAL):
    """The process's CacheStore for ``root`` (capacity ``size_gb`` GiB, a float is fine)."""
    key = os.path.abspath(root)
    with _stores_lock:
        st = _stores.get(key)
        cap = int(float(size_gb) * GiB)
        if st is None or st.capacity != cap:
            if st is not None:
                st.stop()
            st = _stores[key] = CacheStore(key, cap, interval)
        return st
