"""Accounting and LRU eviction of the file cache directory (spec §7.1).

One ``CacheStore`` per cache directory per process (``store_for``).  At start the directory
tree is walked and every file's allocated bytes counted (LRU order = walk order).  Files that
appear later (placed by hand) are counted when opened or at the next timer pass.  Every
``interval`` seconds (10 s) a pass evicts least-recently-used files down to the water mark or
to 1 GiB of free disk:

* ``waterMark = max(0.9*capacity, capacity - 50 GiB)``;
  ``riskMark = max(capacity - 5 GiB, (waterMark + capacity) / 2)``;
* ``evictByDisk = 1 GiB - free`` when less than 1 GiB is free; ``evictByCache = used - waterMark``;
  target = ``min(max(both), used)``; an ``eviction`` audit line when target > 0;
* an evicted file is truncated to 0; it is unlinked unless someone has it open, in which case it
  stays (empty) and becomes most recently used.

A write that brings usage to the risk mark runs a pass at once and marks the store full: cache
writes then fail with ENOSPC (reads are still served from the registry) until a pass ends
below the risk mark.
"""

import errno
import os
import threading
from collections import OrderedDict

from loguru import logger

from .. import audit, metrics
from ..io import make_private_dir

GiB = 1 << 30
DISK_RESERVE = 1 * GiB
INTERVAL = 10.0


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
        self.full = False
        make_private_dir(self.root)
        self.scan()
        self._stop = threading.Event()
        self._timer = None
        if interval:
            self._timer = threading.Thread(target=self._loop, args=(interval,), daemon=True,
                                           name=f"cache-evict:{self.root}")
            self._timer.start()

    # -- bookkeeping ----------------------------------------------------------------------
    def scan(self):
        """Count files not known yet (start-up walk, and files placed by hand since)."""
        for dirpath, _, files in os.walk(self.root):
            for fn in sorted(files):
                name = os.path.relpath(os.path.join(dirpath, fn), self.root)
                with self.lock:
                    if name not in self.used:
                        self._measure(name)

    def _measure(self, name):
        try:
            n = os.stat(os.path.join(self.root, name)).st_blocks * 512
        except FileNotFoundError:
            n = 0
        old = self.used.get(name, 0)
        self.used[name] = n
        self.total += n - old
        return n

    def acquire(self, name):
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
        if self.full:
            raise OSError(errno.ENOSPC, f"cache {self.root} is full")

    def note_write(self, name):
        """Re-measure ``name`` after a write; at the risk mark evict now and mark full."""
        with self.lock:
            self._measure(name)
            self.used.move_to_end(name)
            over = self.total >= self.risk
        if over:
            self.evict_pass()
            self.full = True

    # -- eviction -------------------------------------------------------------------------
    def _free_disk(self):
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    def evict_pass(self):
        """One eviction pass; returns the number of bytes freed."""
        if not os.path.isdir(self.root):        # removed by hand: recreated on the next open
            return 0
        self.scan()
        free, fs_size = self._free_disk()
        with self.lock:
            by_disk = DISK_RESERVE - free if free < DISK_RESERVE else 0
            if not by_disk and fs_size < self.water:
                self.full = False
                return 0
            by_cache = max(0, int(self.total - self.water))
            target = min(max(by_cache, by_disk), self.total)
            if target <= 0:
                self.full = self.total >= self.risk
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
            self.full = self.total >= self.risk
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
        if self.opened.get(name):
            self.used[name] = 0
            self.used.move_to_end(name)
        else:
            del self.used[name]
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return size

    def _loop(self, interval):
        while not self._stop.wait(interval):
            try:
                self.evict_pass()
            except Exception as e:              # noqa: BLE001 - the timer must survive anything
                logger.error("cache {}: eviction pass failed: {}", self.root, e)

    def stop(self):
        self._stop.set()


_stores = {}
_stores_lock = threading.Lock()
_stores_pid = None


def store_for(root, size_gb, interval=INTERVAL):
    """The process's CacheStore for ``root`` (capacity ``size_gb`` GiB, a float is fine)."""
    global _stores_pid
    key = os.path.abspath(root)
    with _stores_lock:
        if _stores_pid != os.getpid():       # after fork: the timer threads did not survive
            _stores.clear()
            _stores_pid = os.getpid()
        st = _stores.get(key)
        cap = int(float(size_gb) * GiB)
        if st is None or st.capacity != cap:
            if st is not None:
                st.stop()
            st = _stores[key] = CacheStore(key, cap, interval)
        return st
