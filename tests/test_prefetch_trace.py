"""The trace format (spec §11) against hand-built byte vectors, every rejection, round trips."""

import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaybd.abi import trace as abi
from overlaybd.prefetch import filelist
from overlaybd.prefetch import trace as tr
from overlaybd.prefetch.trace import Record, TraceError


def crc32c_raw_ref(data, crc):
    """Bit-by-bit CRC-32C (reflected 0x82F63B78) without the initial/final inversion."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


def le(v, n, signed=False):
    return v.to_bytes(n, "little", signed=signed)


def record_bytes(op, layer, count, offset):
    """A 24-byte record written out field by field: op, 3 pad, u32 layer, u64 count, i64 off."""
    return op + b"\0\0\0" + le(layer, 4) + le(count, 8) + le(offset, 8, signed=True)


def header_bytes(magic, data_size, checksum):
    return le(magic, 4) + b"\0" * 4 + le(data_size, 8) + le(checksum, 4) + b"\0" * 4


VECTOR_RECORDS = [(b"R", 0, 4096, 0), (b"R", 2, 1 << 20, 123 << 20), (b"R", 1, 512, 7 << 40)]


def vector():
    """A trace built by hand: records, then the checksum chained record by record."""
    body = b"".join(record_bytes(*r) for r in VECTOR_RECORDS)
    crc = 0
    for k in range(0, len(body), 24):
        crc = crc32c_raw_ref(body[k:k + 24], crc)     # seed 0, then the previous result
    return header_bytes(0xC2EF1820, len(body), crc) + body, crc


def test_reference_crc_is_crc32c():
    # the standard CRC-32C check value of "123456789" is 0xE3069283; raw = std without
    # the inversions, so raw with seed ~0 then inverted must give it
    assert crc32c_raw_ref(b"123456789", 0xFFFFFFFF) ^ 0xFFFFFFFF == 0xE3069283


def test_magic_is_crc32_of_the_format_name():
    assert abi.MAGIC == zlib.crc32(abi.MAGIC_TEXT) == 3270449184
    assert abi.HEADER_SIZE == abi.RECORD_SIZE == 24


def test_encode_matches_hand_built_vector():
    data, crc = vector()
    assert tr.encode([Record(*r) for r in VECTOR_RECORDS]) == data
    assert tr.chain_checksum(data[24:]) == crc
    assert data[16:20] == le(crc, 4)


def test_decode_hand_built_vector():
    data, _ = vector()
    assert tr.decode(data) == [Record(*r) for r in VECTOR_RECORDS]


def test_checksum_chain_differs_from_unchained_sum():
    # chaining matters: the checksum is not the XOR or the per-record CRCs from seed 0
    data, crc = vector()
    separate = [crc32c_raw_ref(data[24 + k:48 + k], 0) for k in range(0, 72, 24)]
    assert crc not in separate and crc != separate[0] ^ separate[1] ^ separate[2]


def test_empty_trace_is_valid():
    data = header_bytes(abi.MAGIC, 0, 0)
    assert tr.encode([]) == data
    assert tr.decode(data) == []


def reason(data):
    with pytest.raises(TraceError) as e:
        tr.decode(data)
    return e.value.reason


def test_rejects_short_header():
    assert "too short" in reason(le(abi.MAGIC, 4) + b"\0" * 10)


def test_rejects_bad_magic():
    data, _ = vector()
    assert "bad magic" in reason(le(0xC2EF1821, 4) + data[4:])


@pytest.mark.parametrize("delta", [-24, -1, 1, 24])
def test_rejects_size_mismatch(delta):
    data, _ = vector()
    bad = data[:delta] if delta < 0 else data + b"\0" * delta
    assert "size mismatch" in reason(bad)


def test_rejects_data_size_not_a_record_multiple():
    data, _ = vector()
    body = data[24:] + b"\0" * 4
    assert "not a multiple" in reason(header_bytes(abi.MAGIC, len(body), 0) + body)


@pytest.mark.parametrize("where", [0, 1, 4, 8, 16, 30, 71])
def test_rejects_any_flipped_record_byte_padding_included(where):
    data, _ = vector()
    bad = bytearray(data)
    bad[24 + where] ^= 0x40
    assert "checksum mismatch" in reason(bytes(bad))


def test_rejects_wrong_header_checksum():
    data, crc = vector()
    bad = data[:16] + le(crc ^ 1, 4) + data[20:]
    assert "checksum mismatch" in reason(bad)


def test_load_tells_the_modes_apart(tmp_path):
    p = tmp_path / "trace"
    assert tr.load(p) == ("missing", None)
    p.write_bytes(b"")
    assert tr.load(p) == ("record", None)
    data, _ = vector()
    p.write_bytes(data)
    assert tr.load(p) == ("trace", [Record(*r) for r in VECTOR_RECORDS])
    p.write_text("/usr/bin/\n /etc/hosts \n")
    assert tr.load(p) == ("list", "/usr/bin/\n /etc/hosts \n")
    p.write_bytes(data[:-1])
    with pytest.raises(TraceError, match="size mismatch"):
        tr.load(p)
    p.write_bytes(b"\x21" + data[1:])              # binary without the magic: not a list
    with pytest.raises(TraceError, match="bad magic 0xc2ef1821.*not a text file list"):
        tr.load(p)
    p.write_text("/x\n" * (22 << 10))            # 66 KiB
    with pytest.raises(TraceError, match="larger than 65536"):
        tr.load(p)


records = st.lists(st.builds(Record, st.sampled_from([b"R", b"W"]), st.integers(0, 2**32 - 1),
                             st.integers(0, 2**64 - 1), st.integers(-2**63, 2**63 - 1)),
                   max_size=50)


@settings(max_examples=100, deadline=None)
@given(records)
def test_round_trip(recs):
    data = tr.encode(recs)
    assert len(data) == 24 + 24 * len(recs)
    assert tr.decode(data) == recs


def test_write_in_place_round_trip(tmp_path):
    p = tmp_path / "trace"
    p.write_bytes(b"x" * 1000)                      # longer garbage: truncated first
    recs = [Record(b"R", i % 3, 4096 * (i + 1), i << 20) for i in range(100)]
    fd = os.open(p, os.O_WRONLY)
    try:
        tr.write(fd, recs)
    finally:
        os.close(fd)
    assert p.stat().st_size == 24 + 2400
    assert tr.load(p) == ("trace", recs)


def test_spool_records_ignore_a_torn_tail():
    body = tr.encode_records([Record(b"R", 1, 512, 0), Record(b"R", 0, 4096, 8192)])
    assert tr.decode_records(body + b"R\0\0") == [Record(b"R", 1, 512, 0),
                                                  Record(b"R", 0, 4096, 8192)]


def test_summary_counts_per_layer():
    s = tr.summary([Record(b"R", 0, 4096, 0), Record(b"R", 0, 512, 1 << 20),
                    Record(b"R", 3, 100, 7)])
    assert s["records"] == 3 and s["bytes"] == 4708 and s["ops"] == {"R": 3}
    assert s["layers"]["0"] == {"records": 2, "bytes": 4608, "min_offset": 0,
                                "max_end": (1 << 20) + 512}


def test_file_list_parsing_follows_upstream_rules():
    text = " /usr/bin/python3 \n\n/etc/\n/lib/*\nnot a path\n/bad|char\nrel/ok.txt\n"
    assert filelist.parse(text) == ["/usr/bin/python3", "/etc/", "/lib/*", "rel/ok.txt"]


def test_split_into_one_mib_pieces():
    recs = filelist.split(4096, 2 * (1 << 20) + 512)
    assert [(r.offset, r.count) for r in recs] == [(4096, 1 << 20), (4096 + (1 << 20), 1 << 20),
                                                   (4096 + (2 << 20), 512)]
    assert all(r.layer == 0 and r.op == b"R" for r in recs)
