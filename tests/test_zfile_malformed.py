"""Malformed ZFiles: every error is a FormatError/ChecksumError naming file and field, and no
read loops forever (spec §2.5, §17 items 2-4)."""

import io
import random
import struct

import pytest

from overlaybd import zfile
from overlaybd.abi import zfile as zabi
from overlaybd.crc import crc32c_raw
from overlaybd.detect import open_blob
from overlaybd.errors import ChecksumError, FormatError, OverlaybdError
from overlaybd.io import BytesFile
from tests.helpers.zfile import FlakySource, blocks_of, golden, patch_header, patch_table

LZ4 = "layer1.lz4.zfile"


def open_bytes(data, path="blob"):
    return zfile.ZFile(BytesFile(data, path=path))


def expect(data, field, exc=FormatError, path="blob"):
    with pytest.raises(exc) as ei:
        open_bytes(data, path)
    assert ei.value.field == field and ei.value.path == path, str(ei.value)
    return ei.value


@pytest.mark.parametrize("name", [LZ4, "merged.lz4.zfile"])
@pytest.mark.parametrize("cut", [1, 100, 512, 700, 5000, 200_000])
def test_truncated(name, cut):
    data = golden(name)
    e = expect(data[:-cut], e_field(name, cut))
    assert "blob" in str(e)


def e_field(name, cut):
    if name == LZ4:               # header overwritten: the table no longer fits
        return "index_size"
    return "trailer magic"        # trailer taken from the end of the file


def test_tiny_files():
    for n in (0, 100, 511):
        assert not zfile.is_zfile(BytesFile(golden(LZ4)[:n]))
    expect(golden("merged.lz4.zfile")[:700], "trailer")


def test_bad_magic():
    data = bytearray(golden(LZ4))
    data[3] ^= 1
    assert not zfile.is_zfile(BytesFile(bytes(data)))
    expect(bytes(data), "magic")
    f = BytesFile(bytes(data))
    assert open_blob(f) is f           # left for the LSMT open, which reports it


def test_bad_digest_like_upstream_test():
    data = bytearray(golden(LZ4))
    data[400] ^= 0xFF                   # past the struct, still covered by the digest
    with pytest.raises(FormatError) as ei:
        zfile.is_zfile(BytesFile(bytes(data), path="blob"))
    assert ei.value.field == "digest" and "blob" in str(ei.value)
    with pytest.raises(FormatError):
        open_blob(BytesFile(bytes(data)))


def test_bad_trailer_digest():
    data = bytearray(golden("merged.lz4.zfile"))
    data[-100] ^= 1
    expect(bytes(data), "trailer digest")


def test_corrupted_jump_table():
    data = bytearray(golden(LZ4))
    h, _ = blocks_of(bytes(data))
    data[h.index_offset + 10] ^= 0x40
    e = expect(bytes(data), "index_crc")
    assert "jump table CRC" in str(e)


@pytest.mark.parametrize("value", [10**9 + 1, 2**63, 196])
def test_absurd_index_size(value):
    expect(patch_header(golden(LZ4), 0, index_size=value), "index_size")


def test_index_offset_outside_file():
    data = golden(LZ4)
    expect(patch_header(data, 0, index_offset=len(data)), "index_size")
    expect(patch_header(data, 0, index_offset=100), "index_size")


def test_block_size_over_64k_and_bad_algorithm():
    data = golden(LZ4)
    expect(patch_header(data, 0, block_size=131072), "block_size")
    expect(patch_header(data, 0, block_size=3000), "block_size")
    expect(patch_header(data, 0, algo=0), "algo")
    expect(patch_header(data, 0, dict_size=16), "dict_size")


@pytest.mark.parametrize("bad", [0, 4])
def test_block_length_too_small(bad):
    data = golden(LZ4)
    _, blocks = blocks_of(data)
    lens = [n for _, n in blocks]
    lens[7] = bad
    e = expect(patch_table(data, lens), "block length")
    assert "block 7" in str(e)


def test_blocks_overrunning_the_table():
    data = golden(LZ4)
    _, blocks = blocks_of(data)
    lens = [n for _, n in blocks]
    lens[-1] += 1000
    expect(patch_table(data, lens), "block length")


def test_upstream_group_sum_limit():
    """Upstream keeps in-group offsets in uint16: 15 blocks (4 KiB groups of 16) must add up to
    less than 65535.  Only the table matters at open time."""
    def fake(lens):
        body = bytes(sum(lens))
        out = io.BytesIO()
        w = zfile.ZFileWriter(out)
        w.close()
        table = struct.pack(f"<{len(lens)}I", *lens)
        raw = out.getvalue()[:512] + body + table + out.getvalue()[-512:]
        return patch_header(raw, len(raw) - 512, index_offset=512 + len(body),
                            index_size=len(lens), original_file_size=4096 * len(lens),
                            index_crc=crc32c_raw(table))
    open_bytes(fake([4300] * 16))                 # 15 * 4300 = 64500: accepted
    expect(fake([4400] * 16), "block length")     # 15 * 4400 = 66000: ERANGE upstream


def test_block_over_64k_cannot_be_read():
    """Incompressible 64 KiB blocks store more than 64 KiB: upstream's writer makes such files
    and its reader refuses them.  Our writer refuses to make them; our reader refuses them too."""
    rnd = random.Random(1).randbytes(65536)
    with pytest.raises(OverlaybdError) as ei:
        zfile.compress(io.BytesIO(rnd), io.BytesIO(), block_size=65536)
    assert ei.value.field == "block_size" and "compresses to" in str(ei.value)
    good = io.BytesIO()
    zfile.compress(io.BytesIO(bytes(65536)), good, block_size=65536)
    raw = bytearray(good.getvalue())
    # graft an over-long stored block: grow block 0's length in the jump table beyond 64 KiB
    h = zabi.HeaderTrailer.unpack(bytes(raw[-512:]))
    body = bytes(raw[512:h.index_offset]) + bytes(65537)
    table = struct.pack("<I", 65537 + h.index_offset - 512)
    blob = bytes(raw[:512]) + body + table + bytes(raw[-512:])
    blob = patch_header(blob, len(blob) - 512, index_offset=512 + len(body), index_size=1,
                        original_file_size=65536, index_crc=crc32c_raw(table))
    with pytest.raises(FormatError) as ei:
        open_bytes(blob).pread(10, 0)
    assert ei.value.field == "block length"


def corrupt_block(name=LZ4, index=5, delta=0x55):
    data = bytearray(golden(name))
    _, blocks = blocks_of(bytes(data))
    off, n = blocks[index]
    data[off + n // 2] ^= delta
    return bytes(data), off, n


def test_corrupted_block_checksum_error():
    data, off, n = corrupt_block()
    z = open_bytes(data)
    ref = golden("layer1.lsmt")
    assert z.pread(4096, 4 * 4096) == ref[4 * 4096:5 * 4096]     # neighbours fine
    assert z.pread(4096, 6 * 4096) == ref[6 * 4096:7 * 4096]
    for n_, o_ in ((4096, 5 * 4096), (100, 5 * 4096 + 7), (1 << 20, 0)):
        with pytest.raises(ChecksumError) as ei:
            z.pread(n_, o_)
        assert "block 5" in str(ei.value) and ei.value.field == "block crc"
        assert "blob" in str(ei.value)
    with pytest.raises(ChecksumError, match="block 5"):
        zfile.verify(BytesFile(data))


def test_upstream_validation_check_detects_8k_overwrite():
    data = bytearray(golden("layer2.zstd.zfile"))
    data[8192:16384] = bytes(8192)
    with pytest.raises(ChecksumError):
        zfile.verify(BytesFile(bytes(data)))


def test_evict_and_refetch_heals():
    clean = golden(LZ4)
    _, blocks = blocks_of(clean)
    off, n = blocks[5]
    src = FlakySource(clean, off + 10, 1, heal_after=1)
    z = zfile.ZFile(src)
    ref = golden("layer1.lsmt")
    assert z.pread(4096, 5 * 4096) == ref[5 * 4096:6 * 4096]
    assert src.evicts == [(off, n)] and z.retries == 1
    src2 = FlakySource(clean, off + 10, 1, heal_after=2)      # batched read path
    z2 = zfile.ZFile(src2)
    assert z2.pread(1 << 20, 0) == ref[:1 << 20]
    assert src2.evicts == [(off, n)] * 2


def test_evict_gives_up_after_three_retries():
    clean = golden(LZ4)
    _, blocks = blocks_of(clean)
    off, n = blocks[9]
    src = FlakySource(clean, off, n, heal_after=None)        # stays corrupt
    z = zfile.ZFile(src)
    with pytest.raises(ChecksumError) as ei:
        z.pread(4096, 9 * 4096)
    assert src.evicts == [(off, n)] * 3
    assert "after 3" in str(ei.value)


def test_decompression_failure_with_valid_crc():
    """A block whose CRC is right but whose bytes are not LZ4 (a writer bug, not transport)."""
    data = bytearray(golden(LZ4))
    _, blocks = blocks_of(bytes(data))
    off, n = blocks[3]
    body = bytes([0xF0]) + bytes(n - 5)              # literal run longer than the input
    data[off:off + n] = body + struct.pack("<I", crc32c_raw(body, 100007))
    z = open_bytes(bytes(data))
    with pytest.raises(FormatError, match="block 3.*decompress"):
        z.pread(4096, 3 * 4096)
    src = FlakySource(bytes(data), 0, 0)
    with pytest.raises(FormatError):
        zfile.ZFile(src).pread(4096, 3 * 4096)
    assert len(src.evicts) == 3


def test_source_shorter_than_table_claims():
    data = golden(LZ4)

    class Short(BytesFile):
        def pread(self, n, off):        # the cache returns short data for the block area
            return super().pread(n if off < 512 or off >= 400_000 else n // 2, off)
    z = zfile.ZFile(Short(data, path="short"))
    with pytest.raises(FormatError, match="truncated"):
        z.pread(4096, 0)


def test_bad_cached_metadata_is_evicted_and_reloaded():
    clean = golden(LZ4)
    h, _ = blocks_of(clean)
    src = FlakySource(clean, h.index_offset + 4, 1, heal_after=1)   # jump table bad once
    z = zfile.ZFile(src)
    assert src.evicts == [(0, len(clean))] and z.retries == 1
    assert z.pread(z.size, 0) == golden("layer1.lsmt")
    src = FlakySource(clean, h.index_offset + 4, 1, heal_after=None)  # stays bad: 2 retries
    with pytest.raises(FormatError) as ei:
        zfile.ZFile(src)
    assert ei.value.field == "index_crc" and len(src.evicts) == 2
