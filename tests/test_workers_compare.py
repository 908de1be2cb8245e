"""The engine's compare operations (VERIFY, COMPARE AND WRITE), WRITE SAME and the scratch
copies of EXTENDED COPY with 0, 1 and 2 workers: bytes on disk, miscompare offsets relative
to the command, and COMPARE AND WRITE atomic across worker processes."""

import os

import pytest

from overlaybd.abi.ops import (
    OP_COMPARE_WRITE,
    OP_COPY_IN,
    OP_COPY_OUT,
    OP_READ,
    OP_VERIFY,
    OP_WRITE_SAME,
    SCRATCH_SIZE,
    ST_GOOD,
    ST_MISCOMPARE,
    ST_WRITE_PROTECT,
    miscompare,
    status_kind,
)
from overlaybd.workers import CommandError
from tests.helpers.workers import EngineHarness, MiB

WORKERS = [0, 1, 2]


@pytest.mark.parametrize("workers", WORKERS)
def test_write_same_tiles_one_block_across_chunks(tmp_path, workers):
    h = EngineHarness(tmp_path, workers, writable=True, chunk_size=64 * 1024)
    try:
        block = os.urandom(512)
        h.mm[0:512] = block
        off, length = 64 * 1024 - 1024, 3 * 64 * 1024     # four chunks touched
        h.engine.submit(7, 1, OP_WRITE_SAME, off, length, [(0, 512)])
        h.wait_for([1])
        assert h.completions[1] == [ST_GOOD]
    finally:
        h.close()
    content = h.path.read_bytes()
    assert content[off:off + length] == block * (length // 512)
    assert content[:off] == h.src[:off]
    assert content[off + length:] == h.src[off + length:]


@pytest.mark.parametrize("workers", WORKERS)
def test_verify_reports_the_first_difference_from_the_command_start(tmp_path, workers):
    h = EngineHarness(tmp_path, workers, chunk_size=64 * 1024)
    try:
        off, length = 64 * 1024 - 4096, 64 * 1024      # spans two chunks
        h.mm[0:length] = h.src[off:off + length]
        h.engine.submit(7, 1, OP_VERIFY, off, length, [(0, 8192), (8192, length - 8192)])
        bad = 4096 + 5000                                # in the second chunk
        h.mm[bad] ^= 0x58
        h.mm[length - 1] ^= 0x01                         # a later difference: not reported
        h.wait_for([1])
        # (the first VERIFY may have run before or after the flip: submit again to be sure)
        h.engine.submit(7, 2, OP_VERIFY, off, length, [(0, 8192), (8192, length - 8192)])
        h.wait_for([2])
        assert h.completions[2] == [miscompare(bad)]
        h.mm[bad] ^= 0x58
        h.mm[length - 1] ^= 0x01
        h.engine.submit(7, 3, OP_VERIFY, off, length, [(0, length)])
        h.wait_for([3])
        assert h.completions[3] == [ST_GOOD]
    finally:
        h.close()


@pytest.mark.parametrize("workers", WORKERS)
def test_compare_and_write_writes_only_when_equal(tmp_path, workers):
    h = EngineHarness(tmp_path, workers, writable=True)
    try:
        lba_off = 5 * 512
        new = os.urandom(512)
        h.mm[0:512] = h.src[lba_off:lba_off + 512]
        h.mm[512:1024] = new
        h.mm[512 - 27] ^= 0xFF                           # compare data differs at byte 485
        h.engine.submit(7, 1, OP_COMPARE_WRITE, lba_off, 512, [(0, 1024)])
        h.wait_for([1])
        assert h.completions[1] == [miscompare(485)]
        h.mm[512 - 27] ^= 0xFF
        h.engine.submit(7, 2, OP_COMPARE_WRITE, lba_off, 512, [(0, 300), (300, 724)])
        h.wait_for([2])
        assert h.completions[2] == [ST_GOOD]
    finally:
        h.close()
    content = h.path.read_bytes()
    assert content[lba_off:lba_off + 512] == new
    assert content[:lba_off] == h.src[:lba_off]


def test_compare_and_write_on_a_read_only_backend_is_write_protect(tmp_path):
    h = EngineHarness(tmp_path, 0)
    try:
        h.mm[0:512] = h.src[:512]
        h.engine.submit(7, 1, OP_COMPARE_WRITE, 0, 512, [(0, 1024)])
        h.wait_for([1])
        assert h.completions[1] == [ST_WRITE_PROTECT]
    finally:
        h.close()


def test_compare_and_write_is_atomic_across_worker_processes(tmp_path):
    """20 COMPARE AND WRITEs of one block, all in flight at once, each expecting the block's
    original bytes and writing its own: exactly one may succeed, and its bytes are what the
    block holds.  Reads are slowed (10 ms) so that two processes running compares of the block
    at once would both see the original and both write (routing these commands to alternate
    workers makes this test fail)."""
    h = EngineHarness(tmp_path, 2, writable=True, delay=0.01, chunk_size=64 * 1024)
    n = 20
    try:
        target = 3 * 64 * 1024 + 512
        for c in range(16):        # both workers up, with the backend open, before the race
            h.engine.submit(7, 2000 + c, OP_READ, c * 64 * 1024, 512, [(2 * MiB + c * 512, 512)])
        h.wait_for([2000 + c for c in range(16)])
        assert h.engine.stats()[0]["parts_done"] and h.engine.stats()[1]["parts_done"]
        h.mm[0:512] = h.src[target:target + 512]        # what every command compares with
        datas = [os.urandom(512) for _ in range(n)]
        for i, d in enumerate(datas):
            base = 4096 + i * 1024
            h.mm[base:base + 512] = h.src[target:target + 512]
            h.mm[base + 512:base + 1024] = d
            h.engine.submit(7, i, OP_COMPARE_WRITE, target, 512, [(base, 1024)])
        h.wait_for(range(n))
        winners = [i for i in range(n) if h.completions[i] == [ST_GOOD]]
        losers = [i for i in range(n) if status_kind(h.completions[i][0]) == ST_MISCOMPARE]
        assert len(winners) == 1 and len(losers) == n - 1
    finally:
        h.close()
    assert h.path.read_bytes()[target:target + 512] == datas[winners[0]]


@pytest.mark.parametrize("workers", WORKERS)
def test_copy_in_then_out_moves_bytes_through_the_scratch_area(tmp_path, workers):
    h = EngineHarness(tmp_path, workers, writable=True, chunk_size=64 * 1024)
    try:
        src, dst, n = 64 * 1024 - 4096, 5 * 64 * 1024 + 512, 200 * 1024   # several chunks each
        h.engine.submit(7, 1, OP_COPY_IN, src, n, [(0, n)])
        h.wait_for([1])
        h.engine.submit(7, 2, OP_COPY_OUT, dst, n, [(0, n)])
        h.wait_for([2])
        assert h.completions == {1: [ST_GOOD], 2: [ST_GOOD]}
        with pytest.raises(CommandError):                     # beyond the scratch area
            h.engine.submit(7, 3, OP_COPY_IN, 0, 4096, [(SCRATCH_SIZE - 512, 4096)])
    finally:
        h.close()
    content = h.path.read_bytes()
    assert content[dst:dst + n] == h.src[src:src + n]
    assert content[:dst] == h.src[:dst] and content[dst + n:] == h.src[dst + n:]
