"""The decompressed-block cache: a bounded LRU file wrapper, one slice per engine process.

``BlockCache(file, block_size, capacity_bytes)`` sits in the image stack above a decompressing
layer (a ZFile) and keeps up to ``capacity_bytes`` of its most recently used ``block_size``-
aligned blocks.  Routing sends one chunk to one worker (docs/engine.md), so the slices of the
workers never hold the same block and together act as one cache ``workers`` times larger.
Misses in a contiguous run are fetched with one read of the wrapped file.

What it keeps: blocks that a read *cuts*.  A read that covers part of a block (a 4 KiB
read of a 16-64 KiB ZFile block, a 512-byte read) decompresses the whole block, so the block
is kept for the reads of its other parts that usually follow.  Blocks a read covers whole are
decoded straight into the caller's buffer and neither looked up nor kept: the kernel's page
cache above the device already holds what it reads whole, and keeping them here would copy
each block into a fresh object and, while the cache grows, fault in a new page for it (in the
one-vCPU UML guest a page fault costs ~140 us, more than the read: docs/performance.md,
"Decompressed-block cache").  Reads of ``BYPASS_BYTES`` or more go straight to the wrapped
file even where they cut a block at either end.
"""

from __future__ import annotations

from collections import OrderedDict

BYPASS_BYTES = 64 << 10


class _Slice:
    """One LRU over blocks of any number of files, bounded in bytes: a worker's whole slice."""

    def __init__(self, capacity_bytes: int):
        self.capacity = capacity_bytes
        self.used = 0
        self.blocks: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    def get(self, key):
        block = self.blocks.get(key)
        if block is not None:
            self.blocks.move_to_end(key)
        return block

    def put(self, key, block: bytes) -> None:
        old = self.blocks.pop(key, None)
        if old is not None:
            self.used -= len(old)
        self.blocks[key] = block
        self.used += len(block)
        while self.used > self.capacity and self.blocks:
            self.used -= len(self.blocks.popitem(last=False)[1])

    def pop(self, key) -> None:
        old = self.blocks.pop(key, None)
        if old is not None:
            self.used -= len(old)

    def drop_file(self, fid: int) -> None:
        for key in [k for k in self.blocks if k[0] == fid]:
            self.pop(key)


_process_slice: _Slice | None = None
_next_fid = 0


class BlockCache:
    """Implements the file protocol (``size``, ``pread``, ``preadinto``, ``evict``, ``close``).

    ``BlockCache(file, block_size, capacity_bytes)`` has a private LRU;
    ``shared(file, block_size, budget_bytes)`` shares one LRU of the process's budget among
    all the files it wraps, so the budget bounds the worker however many layers and devices
    it serves."""

    def __init__(self, file, block_size: int, capacity_bytes: int, _slice: _Slice | None = None):
        global _next_fid
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        self.file = file
        self._into = getattr(file, "preadinto", None)        # looked up once: the read path's
        self.block_size = block_size
        self.capacity = capacity_bytes // block_size          # in blocks
        self.lru = _slice if _slice is not None else _Slice(capacity_bytes)
        _next_fid += 1
        self.fid = _next_fid
        self.hits = 0
        self.misses = 0

    @classmethod
    def shared(cls, file, block_size: int, budget_bytes: int):
        """``file`` wrapped in this process's one LRU of ``budget_bytes`` (the image opener
        passes ``workerConfig.cacheSizeMB``); ``file`` itself when the budget cannot hold a
        block.  A new budget replaces the process's LRU for the files wrapped from then on."""
        global _process_slice
        if budget_bytes < block_size:
            return file
        if _process_slice is None or _process_slice.capacity != budget_bytes:
            _process_slice = _Slice(budget_bytes)
        return cls(file, block_size, budget_bytes, _process_slice)

    @property
    def blocks(self) -> list[int]:
        """This file's cached block numbers, least recently used first."""
        return [b for f, b in self.lru.blocks if f == self.fid]

    @property
    def size(self) -> int:
        return self.file.size

    @property
    def path(self):
        return getattr(self.file, "path", None)

    def _fetch(self, first: int, count: int) -> list[bytes]:
        """Read ``count`` blocks from ``first`` in one go; the last may be short at EOF."""
        bs = self.block_size
        data = self.file.pread(count * bs, first * bs)
        return [data[i:i + bs] for i in range(0, len(data), bs)]

    def _insert(self, index: int, block: bytes) -> None:
        self.lru.put((self.fid, index), block)

    def _blocks(self, first: int, last: int) -> list[bytes]:
        """Blocks ``first..last`` (inclusive), from the cache or the file; short at EOF."""
        out: list[bytes] = []
        b = first
        while b <= last:
            cached = self.lru.get((self.fid, b))
            if cached is not None:
                self.hits += 1
                out.append(cached)
                b += 1
                continue
            run = b + 1
            while run <= last and (self.fid, run) not in self.lru.blocks:
                run += 1
            fetched = self._fetch(b, run - b)
            self.misses += run - b
            for i, block in enumerate(fetched):
                # A short block is cached only at the end of the file: elsewhere it is an error.
                if len(block) == self.block_size or (b + i + 1) * self.block_size >= self.size:
                    self._insert(b + i, block)
            out.extend(fetched)
            if len(fetched) < run - b or (fetched and len(fetched[-1]) < self.block_size):
                return out
            b = run
        return out

    def preadinto(self, buf, off: int) -> int:
        size = self.size
        n = min(len(buf), size - off)
        if n <= 0:
            return 0
        bs = self.block_size
        end = off + n
        if self.capacity == 0 or n >= BYPASS_BYTES or (
                not off % bs and (not end % bs or end == size)):
            return self._direct(memoryview(buf)[:n], off)
        mv = memoryview(buf)
        whole = -(-off // bs) * bs                  # [whole, cut): the blocks read whole
        cut = size if end == size else end - end % bs
        if whole >= cut:                            # inside one or two cut blocks
            return self._cached(mv[:n], off)
        done = self._cached(mv[:whole - off], off) if whole > off else 0
        done += self._direct(mv[done:cut - off], whole)
        if cut < end:
            done += self._cached(mv[done:n], cut)
        return done

    def _direct(self, mv, off: int) -> int:
        if self._into is not None:
            return self._into(mv, off)
        data = self.file.pread(len(mv), off)
        mv[:len(data)] = data
        return len(data)

    def _cached(self, mv, off: int) -> int:
        """Fill ``mv`` from the blocks over ``[off, off + len(mv))``, kept in the LRU."""
        n = len(mv)
        bs = self.block_size
        first, last = off // bs, (off + n - 1) // bs
        done = 0
        skip = off - first * bs
        for block in self._blocks(first, last):
            piece = block[skip:skip + n - done]
            mv[done:done + len(piece)] = piece
            done += len(piece)
            skip = 0
            if done >= n or len(block) < bs:
                break
        return done

    def pread(self, n: int, off: int) -> bytes:
        buf = bytearray(max(min(n, self.size - off), 0))
        got = self.preadinto(buf, off)
        return bytes(buf[:got])

    def evict(self, off: int, n: int) -> None:
        """Forget the cached blocks over ``[off, off+n)`` and evict them below too."""
        bs = self.block_size
        for b in range(off // bs, (off + max(n, 1) - 1) // bs + 1):
            self.lru.pop((self.fid, b))
        inner = getattr(self.file, "evict", None)
        if inner is not None:
            inner(off, n)

    def close(self) -> None:
        self.lru.drop_file(self.fid)
        self.file.close()
