"""Malformed LSMT inputs: every one is a FormatError naming the file and the field."""

import struct

import pytest

from overlaybd.abi.lsmt import MAX_RO_INDEX_SIZE, HeaderTrailer, pack_entry
from overlaybd.errors import FormatError, OverlaybdError
from overlaybd.io import BytesFile
from overlaybd.lsmt import create_rw, open_merged, open_ro, open_rw
from tests.helpers.env import GOLDEN
from tests.helpers.lsmt import sealed_bytes

GOOD = (GOLDEN / "layer2.lsmt").read_bytes()
NAME = "bad.lsmt"
DATA = bytes(range(256)) * 16            # 4096 bytes = sectors 8..15


def expect(raw, field, *words):
    with pytest.raises(FormatError) as e:
        open_ro(BytesFile(raw, path=NAME))
    assert e.value.field == field, str(e.value)
    assert NAME in str(e.value)
    for w in words:
        assert w in str(e.value)
    return e.value


def patch_trailer(raw, **fields):
    ht = HeaderTrailer.unpack(raw[-4096:])
    for k, v in fields.items():
        setattr(ht, k, v)
    return raw[:-4096] + ht.pack()


def test_good_file_opens():
    assert len(open_ro(BytesFile(GOOD)).index) == 7
    assert len(open_ro(BytesFile(sealed_bytes([(0, 8, 8)], DATA, 1 << 20))).index) == 1


@pytest.mark.parametrize("cut", [0, 100, 4096, 8191])
def test_too_small(cut):
    expect(GOOD[:cut], "size")


@pytest.mark.parametrize("cut", [1, 512, 4096, 20000])
def test_truncated_tail(cut):
    # the last 4096 bytes are no longer a trailer
    expect(GOOD[:-cut], "magic")


def test_bad_header_magic():
    expect(b"LSMX" + GOOD[4:], "magic", "header")


def test_bad_trailer_magic():
    raw = bytearray(GOOD)
    raw[-4096 + 10] ^= 0xFF
    expect(bytes(raw), "magic", "trailer")


def test_header_not_a_header_or_not_data():
    expect(sealed_bytes([], b"", 0, header_flags=0x06), "flags")
    expect(sealed_bytes([], b"", 0, header_flags=0x01), "flags", "not a data file")


@pytest.mark.parametrize("flags", [0x07, 0x02, 0x04, 0x00])
def test_trailer_flags(flags):
    expect(patch_trailer(GOOD, flags=flags), "flags", "trailer")


def test_index_size_limit():
    expect(patch_trailer(GOOD, index_size=MAX_RO_INDEX_SIZE + 1), "index_size")
    expect(patch_trailer(GOOD, index_size=1 << 63), "index_size")


def test_index_past_the_trailer():
    t = HeaderTrailer.unpack(GOOD[-4096:])
    expect(patch_trailer(GOOD, index_offset=t.index_offset + 512), "index_offset")
    expect(patch_trailer(GOOD, index_offset=len(GOOD)), "index_offset")
    expect(patch_trailer(GOOD, index_offset=(1 << 64) - 1), "index_offset")


def test_huge_virtual_size():
    expect(patch_trailer(GOOD, virtual_size=(1 << 64) - 1), "virtual_size")


def test_unsorted_entries():
    expect(sealed_bytes([(16, 8, 8), (0, 8, 8)], DATA, 1 << 20), "index", "unsorted")


def test_overlapping_entries():
    expect(sealed_bytes([(0, 8, 8), (4, 8, 8)], DATA, 1 << 20), "index", "overlap")


@pytest.mark.parametrize("row", [(0, 8, 9), (0, 8, 7), (0, 1, 16), (0, 8, 1 << 40),
                                 (0, 1, 17, 1), (0, 1, 7, 1)])
def test_moffset_out_of_range(row):
    # data sectors are [8, 16): a data entry must fit inside, a zeroed one needs 8 <= m <= 16
    expect(sealed_bytes([row], DATA, 1 << 20), "moffset")


def test_zeroed_entry_at_the_data_end_is_fine():
    layer = open_ro(BytesFile(sealed_bytes([(0, 100, 16, 1)], DATA, 1 << 20)))
    assert layer.pread(4096, 0) == bytes(4096)


def test_padding_entries_dropped_and_tags_forced_to_zero():
    rows = [(0, 8, 8, 0, 9)]
    raw = sealed_bytes(rows, DATA, 1 << 20, pad_to=0,
                       raw_entries=pack_entry(0, 8, 8, 0, 9) + pack_entry((1 << 50) - 1, 5,
                                                                            123, 1, 3))
    layer = open_ro(BytesFile(raw))
    assert layer.index.rows() == [(0, 8, 8, 0, 0)]
    assert layer.pread(4096, 0) == DATA


class FlakyFile:
    """Serves ``raw`` but answers reads inside the data area with ``data_read(n, off)``."""

    def __init__(self, raw, data_read, path="flaky.lsmt"):
        self.raw, self.data_read, self.path, self.size = raw, data_read, path, len(raw)
        self.calls = []

    def pread(self, n, off):
        if off == 0 or off >= 8192:       # header, index, trailer
            return self.raw[off:off + n]
        self.calls.append((n, off))
        return self.data_read(n, off)


def test_short_read_then_eof_reads_zeros():
    raw = sealed_bytes([(0, 8, 8)], DATA, 1 << 20)
    # 1024 bytes, then end of file on the retry
    f = FlakyFile(raw, lambda n, off: raw[off:min(off + n, 4096 + 1024)])
    layer = open_ro(f)
    assert layer.pread(4096, 0) == DATA[:1024] + bytes(3072)
    assert f.calls == [(4096, 4096), (3072, 5120)]


def test_short_read_with_partial_retry_is_an_error():
    raw = sealed_bytes([(0, 8, 8)], DATA, 1 << 20)
    f = FlakyFile(raw, lambda n, off: raw[off:off + min(n, 512)])     # always short
    layer = open_ro(f)
    with pytest.raises(OverlaybdError) as e:
        layer.pread(4096, 0)
    assert "short read" in str(e.value) and "flaky.lsmt" in str(e.value)
    assert len(f.calls) == 2


def test_merged_open_names_the_bad_layer():
    bad = BytesFile(GOOD[:-1], path="broken-layer.lsmt")
    with pytest.raises(FormatError) as e:
        open_merged([BytesFile(GOOD, path="ok.lsmt"), bad])
    assert "broken-layer.lsmt" in str(e.value)
    with pytest.raises(OverlaybdError):
        open_merged([BytesFile(GOOD)] * 256)
    with pytest.raises(OverlaybdError):
        open_merged([])


def test_rw_index_file_errors(tmp_path):
    layer = create_rw(tmp_path / "d", tmp_path / "i", 1 << 20)
    layer.pwrite(b"\x01" * 4096, 0)
    layer.close()
    good_index = (tmp_path / "i").read_bytes()
    # a record pointing past the data file
    (tmp_path / "i").write_bytes(good_index + pack_entry(8, 8, 1000))
    with pytest.raises(FormatError) as e:
        open_rw(tmp_path / "d", tmp_path / "i")
    assert e.value.field == "moffset" and str(tmp_path / "i") in str(e.value)
    # an index file whose header says "data file"
    ih = HeaderTrailer.unpack(good_index)
    ih.flags = 0x03
    (tmp_path / "i").write_bytes(ih.pack() + good_index[4096:])
    with pytest.raises(FormatError) as e:
        open_rw(tmp_path / "d", tmp_path / "i")
    assert e.value.field == "flags"
    ih.flags, ih.index_offset = 0x01, 8192
    (tmp_path / "i").write_bytes(ih.pack() + good_index[4096:])
    with pytest.raises(FormatError) as e:
        open_rw(tmp_path / "d", tmp_path / "i")
    assert e.value.field == "index_offset"
    (tmp_path / "i").write_bytes(good_index)
    (tmp_path / "d").write_bytes(b"garbage" * 1000)
    with pytest.raises(FormatError) as e:
        open_rw(tmp_path / "d", tmp_path / "i")
    assert e.value.field == "magic"
    with pytest.raises(FormatError):
        open_rw(tmp_path / "i")           # an append layer needs its index file


def test_no_hang_on_random_garbage():
    import random
    rng = random.Random(3)
    for _ in range(200):
        raw = bytearray(GOOD)
        for _ in range(rng.randrange(1, 6)):
            pos = rng.choice([rng.randrange(len(raw)), rng.randrange(len(raw) - 4096,
                                                                     len(raw))])
            raw[pos] = rng.randrange(256)
        try:
            layer = open_ro(BytesFile(bytes(raw)))
        except FormatError:
            continue
        # whatever opens must read within bounds without errors
        for off in (0, 1 << 20, (1 << 30) - 4096):
            assert len(layer.pread(4096, off)) == min(4096, max(0, layer.size - off))


def test_struct_size_field_is_not_trusted_for_layout():
    raw = bytearray(GOOD)
    struct.pack_into("<I", raw, 24, 9999)
    assert open_ro(BytesFile(bytes(raw))).pread(512, 0) == open_ro(BytesFile(GOOD)).pread(512, 0)
