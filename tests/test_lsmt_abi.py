"""LSMT ABI: header/trailer struct, flags, UUID text, index entry codec (spec §1.1, §1.2)."""

import numpy as np
import pytest

from overlaybd.abi import lsmt as abi
from tests.helpers.env import GOLDEN


def test_header_struct_is_390_bytes_in_a_4096_block():
    block = abi.HeaderTrailer.new(0x07, virtual_size=1 << 30).pack()
    assert len(block) == abi.HT_SPACE == 4096
    assert block[:8] == b"LSMT\x00\x01\x02\x00"
    assert block[8:24] == bytes.fromhex("657e63d29444084ca2d2c8ec4fcfae8a")
    assert int.from_bytes(block[24:28], "little") == 390
    assert int.from_bytes(block[28:32], "little") == 0x07
    assert int.from_bytes(block[48:56], "little") == 1 << 30
    assert block[56:93] == b"00000000-0000-0000-0000-000000000000\0"
    assert block[130:134] == b"\0\0\x01\x01"        # reserved, version 1, sub_version 1
    assert block[390:] == bytes(4096 - 390)


@pytest.mark.parametrize("name", ["layer1.lsmt", "layer2.lsmt", "layer3.lsmt", "merged.lsmt"])
def test_golden_header_and_trailer_round_trip(name):
    data = (GOLDEN / name).read_bytes()
    for block, flags in ((data[:4096], 0x07), (data[-4096:], 0x06)):
        ht = abi.HeaderTrailer.unpack(block)
        assert ht.magic_ok and ht.flags == flags
        assert ht.pack() == block
    trailer = abi.HeaderTrailer.unpack(data[-4096:])
    assert trailer.index_size % 256 == 0
    assert trailer.index_offset + trailer.index_size * 16 == len(data) - 4096


def test_flag_properties():
    ht = abi.HeaderTrailer(flags=0x13)
    assert ht.is_header and ht.is_data_file and not ht.is_sealed and ht.is_sparse
    ht = abi.HeaderTrailer(flags=0x06)
    assert not ht.is_header and ht.is_data_file and ht.is_sealed and not ht.is_sparse


def test_user_tag_limit():
    block = abi.HeaderTrailer.new(0x07, user_tag=b"x" * 256).pack()
    assert block[134:390] == b"x" * 256
    with pytest.raises(ValueError):
        abi.HeaderTrailer.new(0x07, user_tag=b"x" * 257)


def test_uuid_text_codec():
    raw = bytes(range(16))
    text = abi.uuid_text(raw)
    assert text == "00010203-0405-0607-0809-0A0B0C0D0E0F"
    assert abi.parse_uuid(text) == raw
    assert abi.parse_uuid(text.lower()) == raw
    assert abi.uuid_field(raw) == text.encode() + b"\0"
    assert abi.field_uuid(abi.uuid_field(raw)) == raw
    assert abi.uuid_text(abi.NULL_UUID) == "00000000-0000-0000-0000-000000000000"
    for bad in ["", "00010203-0405-0607-0809-0A0B0C0D0E0", "000102030405-0607-0809-0A0B0C0D0E0F",
                "00010203-0405-0607-0809-0A0B0C0D0E0G", "00010203_0405-0607-0809-0A0B0C0D0E0F",
                "00010203-0405-0607-0809-0A0B0C0D0E0F0"]:
        assert not abi.is_valid_uuid_text(bad)
        with pytest.raises(ValueError):
            abi.parse_uuid(bad)
    assert abi.field_uuid(b"garbage".ljust(37, b"\0")) is None


def test_entry_codec_verified_vector():
    raw = abi.pack_entry(1, 1, 1, zeroed=1, tag=0xAB)
    assert raw == bytes.fromhex("0100000000000400" "01000000000080AB")
    assert abi.unpack_entry(raw) == (1, 1, 1, 1, 0xAB)


def test_entry_codec_limits_and_vectorised_agree():
    rows = [(0, 1, 8, 0, 0), (abi.MAX_OFFSET - 1, abi.MAX_LENGTH, abi.MAX_MOFFSET, 1, 255),
            (12345, 16, 99, 0, 7), (abi.INVALID_OFFSET, 0, 0, 0, 0)]
    packed = b"".join(abi.pack_entry(*r) for r in rows)
    cols = list(zip(*rows))
    assert abi.encode_entries(*cols) == packed
    dec = abi.decode_entries(packed)
    assert [tuple(int(c[i]) for c in dec) for i in range(len(rows))] == rows
    assert abi.INVALID_ENTRY == abi.pack_entry(abi.INVALID_OFFSET, 0, 0)
    assert dec[0].dtype == np.uint64 and dec[1].dtype == np.uint16
