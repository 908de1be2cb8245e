"""The ZFile reader's one block iterator (``ZFile.runs``) and its two decoders: runs tile a
block range within the decoder's span, both decoders read the same bytes across runs, and
verify walks the same runs to name the first bad or missing block."""

import io
import random

import pytest

from overlaybd import zfile
from overlaybd.errors import ChecksumError, FormatError
from overlaybd.io import BytesFile
from tests.helpers.zfile import blocks_of, mixed_data

# > 4 MiB compressed (several C runs), a short last block
CONTENT = random.Random(11).randbytes(5 << 20) + mixed_data(1 << 20, seed=11) + bytes(123)


@pytest.fixture(scope="module")
def blob():
    out = io.BytesIO()
    with zfile.ZFileWriter(out, algorithm="lz4", block_size=4096) as w:
        w.write(CONTENT)
    return out.getvalue()


@pytest.mark.parametrize("accelerated", [True, False])
def test_runs_tile_the_blocks_within_the_span(blob, accelerated):
    z = zfile.ZFile(BytesFile(blob), accelerated=accelerated)
    assert z.fast == accelerated
    span = z._decoder.span
    for first, stop in ((0, z.nblocks), (3, 4), (100, 1300), (z.nblocks - 2, z.nblocks)):
        runs = z.runs(first, stop)
        assert runs[0][0] == first and runs[-1][1] == stop
        for (i, j, off, n), nxt in zip(runs, list(runs[1:]) + [None]):
            assert (off, n) == (z.block_range(i)[0], sum(z.block_range(k)[1] for k in range(i, j)))
            assert n <= span or j == i + 1
            assert nxt is None or nxt[0] == j
    assert len(z.runs(0, z.nblocks)) > 1


def test_both_decoders_read_the_same_bytes_across_runs(blob):
    fast = zfile.ZFile(BytesFile(blob))
    slow = zfile.ZFile(BytesFile(blob), accelerated=False)
    assert fast.pread(len(CONTENT), 0) == CONTENT == slow.pread(len(CONTENT), 0)
    for off, n in ((4095, 5 << 20), (len(CONTENT) - 70000, 80000)):
        want = CONTENT[off:off + n]
        for z in (fast, slow):
            buf = bytearray(n)
            assert z.preadinto(buf, off) == len(want) and buf[:len(want)] == want


def test_verify_names_the_bad_block_in_a_later_run(blob):
    _, blocks = blocks_of(blob)
    z = zfile.ZFile(BytesFile(blob))
    k = z.runs(0, z.nblocks)[1][0] + 5                 # a block of the second run
    off, n = blocks[k]
    bad = bytearray(blob)
    bad[off + n // 2] ^= 0x10
    assert zfile.verify(BytesFile(blob)) == z.nblocks
    with pytest.raises(ChecksumError) as ei:
        zfile.verify(BytesFile(bytes(bad)))
    assert f"block {k} at offset {off}" in str(ei.value) and ei.value.field == "block crc"


def test_verify_names_the_first_block_a_short_source_lacks(blob):
    _, blocks = blocks_of(blob)
    k = 700
    cut = blocks[k][0] + 3

    class Short(BytesFile):
        def pread(self, n, off):
            if off < cut < off + n:
                n = cut - off                            # the block area stops short
            return super().pread(n, off)
    with pytest.raises(FormatError) as ei:
        zfile.verify(Short(blob, path="short.zfile"))
    assert f"block {k} " in str(ei.value) and "truncated" in str(ei.value)
    assert "short.zfile" in str(ei.value)
