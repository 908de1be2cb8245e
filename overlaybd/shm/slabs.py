"""Counters shared by the supervisor and its workers: one slab of u64 words per process.

The metrics of the service (:mod:`overlaybd.metrics`) are counted by every process -- the
supervisor (device opens, inline I/O, background download) and each worker -- and reported
summed.  A shared word that all processes add to would need an atomic read-modify-write, which
Python does not have; a lock per increment costs a system call.  Instead each *process position*
owns a slab (the supervisor slab 0, worker ``i`` slab ``i + 1``) and is its only writer, so an
increment is a plain load and store of an aligned u64 (see :mod:`overlaybd.shm.words`).  A
worker that is replaced hands its slab to its successor, which goes on adding to the same
words: counts survive restarts.  The reader sums the slabs.

Words are grouped: a *group* is ``width`` words named by a key (utf-8, at most ``key_size``
bytes), e.g. one layer of one image.  The key directory is shared; a process finds or adds a
key under a record lock on the region (plus a thread lock), at image open, never per I/O.  A
key is written before the count that publishes it, so a reader never sees a half-written one.

Layout: header (8 u64: magic, version, slabs, capacity, width, key_size, used, spare), then
``capacity`` keys of ``key_size`` bytes, then ``slabs`` x ``capacity`` x ``width`` u64 words.
The memory comes from :class:`overlaybd.shm.region.SharedRegion` (no name left in /dev/shm);
forked workers inherit the mapping.
"""

from __future__ import annotations

import fcntl
import threading

import numpy as np

from .. import forksafe
from .region import SharedRegion
from .words import u64_words

MAGIC = 0x6F62647374617473          # "obdstats"
VERSION = 1
_HEADER_WORDS = 8
_SLABS, _CAPACITY, _WIDTH, _KEY_SIZE, _USED = 2, 3, 4, 5, 6


class TableFull(Exception):
    """No room for another key (``capacity`` groups in use) or the key is too long."""


class SlabTable:
    """``slabs`` process slabs of ``capacity`` groups of ``width`` u64 words each."""

    def __init__(self, slabs: int, capacity: int = 2048, width: int = 32, key_size: int = 512,
                 _region: SharedRegion | None = None):
        if _region is None:
            if slabs < 1 or capacity < 1 or width < 1 or key_size < 8:
                raise ValueError("a slab table needs at least one slab, group, word and a key")
            size = self.footprint(slabs, capacity, width, key_size)
            _region = SharedRegion.create(size, "stats")
            head = u64_words(_region.buf, 0, _HEADER_WORDS)
            head[0], head[1] = MAGIC, VERSION
            head[_SLABS], head[_CAPACITY], head[_WIDTH], head[_KEY_SIZE] = slabs, capacity, width, key_size
            head.release()
        self.region = _region
        self.head = u64_words(_region.buf, 0, _HEADER_WORDS)
        if self.head[0] != MAGIC or self.head[1] != VERSION:
            raise ValueError("not an overlaybd stats region")
        self.slabs, self.capacity = int(self.head[_SLABS]), int(self.head[_CAPACITY])
        self.width, self.key_size = int(self.head[_WIDTH]), int(self.head[_KEY_SIZE])
        self.keys_off = _HEADER_WORDS * 8
        self.words_off = self.keys_off + _align8(self.capacity * self.key_size)
        self.slab_words = self.capacity * self.width
        self._tlock = threading.Lock()
        self._index: dict[str, int] = {}    # this process's cache of the directory
        forksafe.track(self)

    @staticmethod
    def footprint(slabs: int, capacity: int, width: int, key_size: int) -> int:
        return _HEADER_WORDS * 8 + _align8(capacity * key_size) + slabs * capacity * width * 8

    def _after_fork_in_child(self) -> None:
        self._tlock = threading.Lock()      # a thread of the parent may have held it

    # -- the key directory ----------------------------------------------------------------------
    @property
    def used(self) -> int:
        return int(self.head[_USED])

    def key(self, group: int) -> str:
        off = self.keys_off + group * self.key_size
        raw = bytes(self.region.buf[off:off + self.key_size])
        return raw.rstrip(b"\0").decode("utf-8", "replace")

    def keys(self) -> list[str]:
        return [self.key(g) for g in range(self.used)]

    def group(self, key: str) -> int:
        """The group of ``key``, added if new.  Raises TableFull."""
        g = self._index.get(key)
        if g is not None:
            return g
        raw = key.encode()
        if not raw or len(raw) > self.key_size or b"\0" in raw:
            raise TableFull(f"stats key of {len(raw)} bytes does not fit {self.key_size}")
        with self._tlock:
            fcntl.lockf(self.region.fd, fcntl.LOCK_EX)
            try:
                used = self.used
                for g in range(used):
                    k = self.key(g)
                    self._index[k] = g
                    if k == key:
                        return g
                if used >= self.capacity:
                    raise TableFull(f"all {self.capacity} stats groups are in use")
                off = self.keys_off + used * self.key_size
                self.region.buf[off:off + len(raw)] = raw
                self.head[_USED] = used + 1        # publishes the key written above
                self._index[key] = used
                return used
            finally:
                fcntl.lockf(self.region.fd, fcntl.LOCK_UN)

    # -- words ----------------------------------------------------------------------------------
    def slab(self, index: int) -> memoryview:
        """Slab ``index`` as u64 words (group ``g`` word ``f`` at ``g * width + f``); the only
        writer of a slab is the process that owns its position."""
        if not 0 <= index < self.slabs:
            raise IndexError(f"slab {index} of {self.slabs}")
        return u64_words(self.region.buf, self.words_off + index * self.slab_words * 8, self.slab_words)

    def array(self) -> np.ndarray:
        """All words as a read-only (slabs, used groups, width) uint64 array: a view, not a copy."""
        a = np.frombuffer(self.region.buf, dtype=np.uint64, count=self.slabs * self.slab_words,
                          offset=self.words_off).reshape(self.slabs, self.capacity, self.width)
        a.flags.writeable = False
        return a[:, :self.used, :]

    def close(self) -> None:
        self.head.release()
        self.region.close()


def _align8(n: int) -> int:
    return (n + 7) & ~7

