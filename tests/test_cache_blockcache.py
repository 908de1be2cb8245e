"""The per-worker block cache: bytes equal the wrapped file's, bounded LRU, evict."""

import random

import pytest

from overlaybd.cache.blockcache import BlockCache
from overlaybd.io import BytesFile


class CountingFile(BytesFile):
    def __init__(self, data):
        super().__init__(data, path="inner")
        self.reads = []
        self.evicted = []

    def pread(self, n, off):
        self.reads.append((off, n))
        return super().pread(n, off)

    def evict(self, off, n):
        self.evicted.append((off, n))


DATA = random.Random(5).randbytes(100_000)      # not a multiple of the block size


@pytest.mark.parametrize("capacity", [0, 4096, 3 * 4096, 1 << 20])
def test_reads_equal_the_wrapped_file(capacity):
    inner = CountingFile(DATA)
    c = BlockCache(inner, 4096, capacity)
    rnd = random.Random(capacity)
    for _ in range(300):
        off = rnd.randrange(0, len(DATA) + 5000)
        n = rnd.randrange(0, 20000)
        assert c.pread(n, off) == DATA[off:off + n], (off, n)
        buf = bytearray(n)
        got = c.preadinto(memoryview(buf), off)
        assert bytes(buf[:got]) == DATA[off:off + n]
    assert c.size == len(DATA) and c.path == "inner"
    assert len(c.blocks) <= capacity // 4096


def test_lru_keeps_the_recent_blocks_and_batches_misses():
    inner = CountingFile(DATA)
    c = BlockCache(inner, 4096, 2 * 4096)
    assert c.pread(8000, 100) == DATA[100:8100]
    assert inner.reads == [(0, 8192)]                 # two missing blocks, one read
    c.pread(100, 10)                                  # hit block 0: now most recent
    c.pread(100, 3 * 4096)                            # miss block 3: evicts block 1
    assert list(c.blocks) == [0, 3] and c.hits == 1 and c.misses == 3
    inner.reads.clear()
    c.pread(100, 5)
    assert inner.reads == []
    c.pread(100, 4096)
    assert inner.reads == [(4096, 4096)]


def test_blocks_read_whole_are_neither_kept_nor_looked_up():
    """Only blocks a read cuts are kept: whole ones go straight to the file (the page cache
    above the device holds them), so aligned 4 KiB reads of a 4 KiB-block ZFile never grow
    the cache.  A read that cuts blocks at both ends keeps those two and reads the middle
    through."""
    inner = CountingFile(DATA)
    c = BlockCache(inner, 4096, 1 << 20)
    for off, n in ((0, 4096), (8192, 3 * 4096), (len(DATA) // 4096 * 4096, 5000)):
        assert c.pread(n, off) == DATA[off:off + n]
    assert c.blocks == [] and c.hits == c.misses == 0 and c.lru.used == 0
    assert inner.reads == [(0, 4096), (8192, 3 * 4096), (len(DATA) // 4096 * 4096,
                                                       len(DATA) % 4096)]
    inner.reads.clear()
    assert c.pread(4 * 4096, 4096 + 10) == DATA[4096 + 10:5 * 4096 + 10]
    assert c.blocks == [1, 5] and c.misses == 2
    assert inner.reads == [(4096, 4096), (2 * 4096, 3 * 4096), (5 * 4096, 4096)]
    inner.reads.clear()
    assert c.pread(4096, 4096) == DATA[4096:2 * 4096]      # whole: not from the cache
    assert inner.reads == [(4096, 4096)] and c.hits == 0
    assert c.pread(10, 5 * 4096 + 1) == DATA[5 * 4096 + 1:5 * 4096 + 11]
    assert c.hits == 1 and inner.reads == [(4096, 4096)]


def test_tail_block_is_short_and_cached():
    inner = CountingFile(DATA)
    c = BlockCache(inner, 4096, 1 << 20)
    last = len(DATA) // 4096 * 4096
    assert c.pread(8192, last + 100) == DATA[last + 100:]      # cuts the short last block
    assert c.blocks == [last // 4096] and inner.reads == [(last, 4096)]
    inner.reads.clear()
    assert c.pread(50, len(DATA) - 50) == DATA[-50:]
    assert inner.reads == [] and c.pread(10, len(DATA)) == b""


def test_evict_drops_blocks_and_passes_down():
    inner = CountingFile(DATA)
    c = BlockCache(inner, 4096, 1 << 20)
    for k in range(5):
        c.pread(100, k * 4096 + 1)
    c.evict(4096, 4097)                               # blocks 1 and 2
    assert sorted(c.blocks) == [0, 3, 4] and inner.evicted == [(4096, 4097)]
    inner.reads.clear()
    assert c.pread(3 * 4096 - 2, 1) == DATA[1:3 * 4096 - 1]
    assert inner.reads == [(4096, 4096), (2 * 4096, 4096)]   # whole block 1, cut block 2


def test_bad_arguments():
    with pytest.raises(ValueError):
        BlockCache(BytesFile(b""), 0, 10)
    with pytest.raises(ValueError):
        BlockCache(BytesFile(b""), 4096, -1)


def test_over_a_golden_zfile_reads_equal_the_plain_layer():
    """The intended place: above a decompressing layer.  Reads through the cache over an
    upstream ZFile equal the plain (decompressed) layer, and repeated reads stop hitting it."""
    import pathlib

    from overlaybd.io import LocalFile
    from overlaybd.zfile import ZFile
    golden = pathlib.Path(__file__).parent / "data" / "golden"
    plain = (golden / "layer1.lsmt").read_bytes()
    z = ZFile(LocalFile(golden / "layer1.lz4.zfile"))
    c = BlockCache(z, z.block_size, 64 * z.block_size)
    rnd = random.Random(11)
    for _ in range(200):
        off = rnd.randrange(0, len(plain))
        n = rnd.randrange(1, 3 * z.block_size)
        assert c.pread(n, off) == plain[off:off + n]
    c.pread(8192, 4000)
    c.hits = c.misses = 0
    for _ in range(3):
        assert c.pread(8192, 4000) == plain[4000:12192]
    assert c.misses == 0 and c.hits == 6                # the two cut blocks each time
    c.close()


def test_shared_takes_the_budget_it_is_given(monkeypatch):
    from overlaybd.cache import blockcache
    monkeypatch.setattr(blockcache, "_process_slice", None)
    inner = BytesFile(DATA)
    c = BlockCache.shared(inner, 4096, 10 * 4096)
    assert isinstance(c, BlockCache) and c.capacity == 10 and c.lru.capacity == 10 * 4096
    assert c.pread(5000, 3000) == DATA[3000:8000]
    assert BlockCache.shared(inner, 4096, 0) is inner                 # no budget
    assert BlockCache.shared(inner, 4096, 4095) is inner              # not even one block


def test_process_slice_bounds_all_files_together(monkeypatch):
    """shared: every wrapped file shares the process's one budget."""
    from overlaybd.cache import blockcache
    monkeypatch.setattr(blockcache, "_process_slice", None)
    files = [BlockCache.shared(BytesFile(bytes([i]) * (64 * 4096)), 4096, 8 * 4096)
             for i in range(3)]
    for i, f in enumerate(files):
        for k in range(15):                                # cut blocks are kept
            assert f.pread(100, k * 4096 + 1) == bytes([i]) * 100
    assert files[0].lru is files[2].lru and files[0].lru.used <= 8 * 4096
    assert sum(len(f.blocks) for f in files) == 8 and files[0].blocks == []
    files[2].close()
    assert files[2].blocks == [] and files[0].lru.used == 0


def test_large_reads_bypass_the_cache_and_leave_it_alone():
    """A read of BYPASS_BYTES or more is served by the wrapped file directly: a sequential scan
    neither copies its blocks into the cache nor evicts what small reads keep there."""
    from overlaybd.cache.blockcache import BYPASS_BYTES
    c = BlockCache(CountingFile(DATA), 4096, 64 * 4096)
    assert c.pread(100, 5 * 4096) == DATA[5 * 4096:5 * 4096 + 100]
    before = (c.blocks, c.lru.used, c.misses)
    assert before[0] == [5]
    for off in (0, 12345, len(DATA) - BYPASS_BYTES):
        assert c.pread(BYPASS_BYTES, off) == DATA[off:off + BYPASS_BYTES]
    assert (c.blocks, c.lru.used, c.misses) == before
