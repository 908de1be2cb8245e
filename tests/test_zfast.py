"""The C accelerator of the ZFile reader (overlaybd/zfile/_zfast.c): it must give exactly the
bytes of the pure-Python path, report the first bad block instead of returning wrong bytes, and
never crash on garbage.  It is built by `pip install -e .` (make install); these tests fail,
not skip, if it is missing, because then the code shipped to users is not the code tested."""

import io
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaybd import zfile
from overlaybd.abi import zfile as zabi
from overlaybd.crc import crc32c_raw
from overlaybd.errors import ChecksumError, FormatError
from overlaybd.io import BytesFile
from overlaybd.zfile import decode as zdecode
from tests.helpers.zfile import FlakySource, blocks_of, golden, mixed_data

SEED = zabi.BLOCK_CRC_SEED


def zf():
    assert zdecode._zfast is not None, "overlaybd.zfile._zfast is not built (run make install)"
    assert zdecode._zfast.lz4_ok(), "liblz4.so.1 was not found by _zfast"
    return zdecode._zfast


def build(data, bs=4096, verify=True, algorithm="lz4"):
    out = io.BytesIO()
    with zfile.ZFileWriter(out, algorithm=algorithm, block_size=bs, verify=verify) as w:
        w.write(data)
    return out.getvalue()


def both(raw):
    """The same file opened twice: once on the C path, once forced onto the Python path."""
    fast = zfile.ZFile(BytesFile(raw))
    slow = zfile.ZFile(BytesFile(raw), accelerated=False)
    assert fast.fast and not slow.fast
    return fast, slow


@pytest.mark.parametrize("seed", [0, 1, SEED, 0xFFFFFFFF])
def test_crc_matches_the_reference(seed):
    rng = random.Random(seed)
    for n in (0, 1, 7, 8, 9, 63, 4096, 4101, 70000):
        data = rng.randbytes(n)
        assert zf().crc32c_raw(data, seed) == crc32c_raw(data, seed), n
    assert zf().crc_impl() in ("sse4.2", "table")


@pytest.mark.parametrize("name", ["layer1.lz4.zfile", "layer2.lz4.zfile", "layer3.lz4.zfile",
                                  "merged.lz4.zfile"])
def test_golden_files_read_the_same_on_both_paths(name):
    fast, slow = both(golden(name))
    whole = slow.pread(slow.size, 0)
    assert fast.pread(fast.size, 0) == whole
    buf = bytearray(fast.size + 100)
    assert fast.preadinto(buf, 0) == fast.size and bytes(buf[:fast.size]) == whole
    assert buf[fast.size:] == bytes(100)          # nothing written past the end
    # every span that starts and ends off block boundaries, and one that runs past the end
    for off, n in ((1, 3 * 4096), (4095, 4098), (4096 * 3 + 17, 40000), (fast.size - 5000, 9000)):
        want = whole[off:off + n]
        assert fast.pread(n, off) == want
        buf = bytearray(n)
        assert fast.preadinto(buf, off) == len(want) and bytes(buf[:len(want)]) == want


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 150_000), bs=st.sampled_from([4096, 8192, 65536]),
       verify=st.booleans(), data=st.data())
def test_random_reads_match_the_python_path(size, bs, verify, data):
    content = mixed_data(size, seed=size)
    fast, slow = both(build(content, bs, verify))
    for _ in range(5):
        off = data.draw(st.integers(0, size - 1))
        n = data.draw(st.integers(0, size + bs - off))
        want = content[off:off + n]
        assert fast.pread(n, off) == want == slow.pread(n, off)
        buf = bytearray(n)
        assert fast.preadinto(buf, off) == len(want)
        assert bytes(buf[:len(want)]) == want


def decode(raw, offs, first, stop, bs, size, verify=True):
    """_zfast.decode as the reader binds it: the bytes, or the first bad block's index."""
    parts = []
    bad = zf().decode(offs, bs, size, verify, SEED, raw, first, stop, parts)
    assert (bad < 0) == (len(parts) == 1)
    return parts[0] if bad < 0 else bad


def decode_into(out, raw, offs, first, stop, bs, size, verify=True):
    return zf().decode_into(offs, bs, size, verify, SEED, out, raw, first, stop)


def test_decode_reports_the_first_bad_block_and_writes_the_ones_before():
    content = mixed_data(20 * 4096, seed=3)
    raw = build(content)
    _, blocks = blocks_of(raw)
    z = zfile.ZFile(BytesFile(raw))
    offs = z._offs
    span = raw[offs[0]:offs[20]]
    assert decode(span, offs, 0, 20, 4096, z.size) == content
    for bad in (0, 7, 19):
        off, ln = blocks[bad]
        broken = bytearray(span)
        broken[off - offs[0] + ln // 2] ^= 0x40          # payload byte: CRC must catch it
        assert decode(bytes(broken), offs, 0, 20, 4096, z.size) == bad
        out = bytearray(len(content))
        assert decode_into(out, bytes(broken), offs, 0, 20, 4096, z.size) == bad
        assert out[:bad * 4096] == content[:bad * 4096]
    # a short source read: the first block not wholly present is reported
    assert decode(span[:offs[5] - offs[0] + 3], offs, 0, 20, 4096, z.size) == 5
    # the right CRC but bytes that are not LZ4 (e.g. a writer bug): still refused
    off, ln = blocks[4]
    junk = b"\xff" * (ln - 4)
    forged = span[:off - offs[0]] + junk + struct.pack("<I", crc32c_raw(junk, SEED)) + \
        span[off - offs[0] + ln:]
    assert decode(forged, offs, 0, 20, 4096, z.size) == 4


def test_corrupt_block_through_the_reader_is_refetched_or_refused():
    content = mixed_data(64 * 4096, seed=5)
    raw = build(content)
    _, blocks = blocks_of(raw)
    off, ln = blocks[30]
    healing = zfile.ZFile(FlakySource(raw, off + 10, 4, heal_after=1))
    assert healing.fast
    assert healing.pread(len(content), 0) == content
    assert healing.retries == 1 and healing.file.evicts == [(off, ln)]
    stuck = zfile.ZFile(FlakySource(raw, off + 10, 4, heal_after=None))
    with pytest.raises(ChecksumError) as ei:
        stuck.pread(len(content), 0)
    assert ei.value.field == "block crc" and "block 30" in str(ei.value)
    buf = bytearray(len(content))
    with pytest.raises(ChecksumError):
        stuck.preadinto(buf, 0)


def test_bad_block_on_a_file_without_crc_is_a_format_error():
    content = mixed_data(16 * 4096, seed=9)
    raw = bytearray(build(content, verify=False))
    _, blocks = blocks_of(bytes(raw))
    off, ln = blocks[6]
    raw[off:off + ln] = b"\xff" * ln
    z = zfile.ZFile(BytesFile(bytes(raw)))
    assert z.fast and not z.verify
    with pytest.raises(FormatError, match="block 6"):
        z.pread(len(content), 0)


def test_argument_checks_raise_instead_of_reading_out_of_bounds():
    raw = build(mixed_data(8 * 4096, seed=1))
    z = zfile.ZFile(BytesFile(raw))
    offs = z._offs
    span = raw[offs[0]:offs[8]]
    with pytest.raises(ValueError):
        decode(span, offs, 0, 9, 4096, z.size)                # past the table
    with pytest.raises(ValueError):
        decode(span, offs, 3, 3, 4096, z.size)                # empty run
    with pytest.raises(ValueError):
        decode(span, offs, 0, 8, 4096, 4096)                  # run past the file
    with pytest.raises(ValueError):
        decode_into(bytearray(100), span, offs, 0, 8, 4096, z.size)
    with pytest.raises(TypeError):
        decode(span, bytes(72), 0, 8, 4096, z.size)           # not an offsets array
    with pytest.raises(TypeError):
        zf().decode(offs, 4096, z.size, True, SEED, span, 0, 8, ())   # parts not a list
    with pytest.raises(BufferError):
        decode_into(b"read-only" * 5000, span, offs, 0, 8, 4096, z.size)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=3000), lens=st.lists(st.integers(0, 70000), min_size=1,
                                                   max_size=8),
       verify=st.booleans(), data=st.data())
def test_garbage_never_crashes(raw, lens, verify, data):
    from array import array
    offs = array("Q", [0])
    for n in lens:
        offs.append(offs[-1] + n)
    stop = len(lens)
    first = data.draw(st.integers(0, stop - 1))
    # raw holds the stored bytes from offs[first] on
    r = decode(raw, offs, first, stop, 4096, stop * 4096, verify)
    if isinstance(r, bytes):
        assert len(r) == (stop - first) * 4096
    else:
        assert first <= r < stop
    out = bytearray((stop - first) * 4096)
    assert -1 <= decode_into(out, raw, offs, first, stop, 4096, stop * 4096, verify) < stop
