"""ZFile writer/reader round trips: algorithms x block sizes x threads, streaming writes."""

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaybd import zfile
from overlaybd.abi import zfile as zabi
from overlaybd.errors import OverlaybdError
from overlaybd.io import BytesFile, LocalFile
from tests.helpers.zfile import mixed_data, random_writes

SIZES = [4096, 8192, 16384, 32768, 65536]


def build(data, seed=0, **kw):
    out = io.BytesIO()
    w = zfile.ZFileWriter(out, **kw)
    random_writes(w, data, random.Random(seed))
    w.close()
    return out.getvalue()


@pytest.mark.parametrize("algo", ["lz4", "zstd"])
@pytest.mark.parametrize("bs", SIZES)
@pytest.mark.parametrize("threads", [1, 2])
def test_round_trip(algo, bs, threads):
    data = mixed_data(300_000 + bs // 3, seed=bs)      # last block short
    raw = build(data, seed=threads, algorithm=algo, block_size=bs, threads=threads,
                overwrite_header=True)
    z = zfile.ZFile(BytesFile(raw))
    assert (z.size, z.block_size, z.algorithm, z.verify) == (len(data), bs, algo, True)
    assert z.nblocks == -(-len(data) // bs)
    assert z.pread(len(data) + 5, 0) == data
    rng = random.Random(bs)
    for _ in range(150):
        off = rng.randrange(len(data))
        n = rng.randrange(1, 3 * bs)
        assert z.pread(n, off) == data[off:off + n]
    for off in range(0, len(data), bs):               # sequential block reads
        assert z.pread(bs, off) == data[off:off + bs]
    assert zfile.verify(BytesFile(raw)) == z.nblocks
    assert not zfile.is_zfile(BytesFile(data))         # decompressed output is not a ZFile


@pytest.mark.parametrize("algo", ["lz4", "zstd"])
def test_threads_do_not_change_bytes(algo):
    data = mixed_data(1_000_000, seed=3)
    one = build(data, seed=1, algorithm=algo, threads=1)
    assert build(data, seed=2, algorithm=algo, threads=2) == one
    assert build(data, seed=4, algorithm=algo, threads=3) == one


def test_header_flags_with_and_without_overwrite():
    data = mixed_data(50_000)
    plain = build(data)
    h = zabi.HeaderTrailer.unpack(plain[:512])
    assert h.flags == 0x13 and h.index_size == 0 and h.original_file_size == 0
    assert (h.block_size, h.algo, h.verify) == (4096, 1, 1)
    t = zabi.HeaderTrailer.unpack(plain[-512:])
    assert t.flags == 0x16 and t.original_file_size == len(data)
    over = build(data, overwrite_header=True)
    assert over[512:] == plain[512:]
    h2 = zabi.HeaderTrailer.unpack(over[:512])
    assert h2.flags == 0x1B and h2.index_offset == t.index_offset
    assert zfile.ZFile(BytesFile(plain)).pread(len(data), 0) == data


def test_without_block_crc():
    data = mixed_data(40_000)
    raw = build(data, verify=False)
    z = zfile.ZFile(BytesFile(raw))
    assert not z.verify and z.pread(len(data), 0) == data
    with pytest.raises(OverlaybdError, match="no per-block CRC"):
        zfile.verify(BytesFile(raw))


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097])
def test_small_inputs(size):
    data = mixed_data(size, seed=size)
    raw = build(data, overwrite_header=True)
    z = zfile.ZFile(BytesFile(raw))
    assert z.size == size and z.nblocks == -(-size // 4096)
    assert z.pread(10_000, 0) == data
    assert zfile.verify(BytesFile(raw)) == z.nblocks


def test_output_kinds(tmp_path):
    data = mixed_data(70_000)
    ref = build(data, overwrite_header=True)
    # a pwrite file (LocalFile)
    p = tmp_path / "a.zfile"
    p.touch()
    lf = LocalFile(p, writable=True)
    w = zfile.ZFileWriter(lf, overwrite_header=True)
    w.write(data)
    w.close()
    lf.close()
    assert p.read_bytes() == ref
    # a real file object, already holding a prefix
    with open(tmp_path / "b", "wb") as f:
        f.write(b"prefix")
        zfile.compress(BytesFile(data), f, overwrite_header=True)
        f.write(b"suffix")                     # the writer left the stream at its end
    assert (tmp_path / "b").read_bytes() == b"prefix" + ref + b"suffix"


class Pipe(io.RawIOBase):
    """A write-only, unseekable output (like stdout to a pipe)."""

    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buf += b
        return len(b)


def test_unseekable_output():
    data = mixed_data(20_000)
    with pytest.raises(OverlaybdError, match="seekable"):
        zfile.ZFileWriter(Pipe(), overwrite_header=True)
    p = Pipe()
    zfile.compress(io.BytesIO(data), p)
    assert bytes(p.buf) == build(data)


def test_writer_rejects_bad_options():
    for bs in (0, 3000, 131072):
        with pytest.raises(ValueError):
            zfile.ZFileWriter(io.BytesIO(), block_size=bs)
    with pytest.raises(ValueError):
        zfile.ZFileWriter(io.BytesIO(), algorithm="lzo")
    w = zfile.ZFileWriter(io.BytesIO())
    w.close()
    with pytest.raises(ValueError):
        w.write(b"x")


def test_concurrent_readers_and_close_chain():
    from concurrent.futures import ThreadPoolExecutor

    data = mixed_data(600_000, seed=9)
    raw = build(data, algorithm="zstd", overwrite_header=True)

    class Tracked(BytesFile):
        closed = False

        def close(self):
            self.closed = True
    src = Tracked(raw)
    z = zfile.ZFile(src)

    def job(seed):
        rng = random.Random(seed)
        for _ in range(200):
            off, n = rng.randrange(len(data)), rng.randrange(1, 70000)
            assert z.pread(n, off) == data[off:off + n]
        return True
    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(job, range(8)))
    z.close()
    assert src.closed and z.pread(10, 0) == b""
    src2 = Tracked(raw)
    zfile.ZFile(src2, own=False).close()
    assert not src2.closed


def test_lz4_fallback_without_liblz4(monkeypatch):
    """Without the system liblz4 the python-lz4 stream compressor is used: other (valid)
    bytes than upstream's, read back the same."""
    from overlaybd.zfile import codec
    data = mixed_data(100_000, seed=11)
    monkeypatch.setattr(codec, "LZ4_EXACT", False)
    raw = build(data, overwrite_header=True)
    z = zfile.ZFile(BytesFile(raw))
    assert z.pread(len(data), 0) == data and zfile.verify(BytesFile(raw)) == z.nblocks


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=30000), bs=st.sampled_from([4096, 8192]),
       algo=st.sampled_from(["lz4", "zstd"]), cuts=st.lists(st.integers(0, 30000)),
       reads=st.lists(st.tuples(st.integers(0, 31000), st.integers(0, 20000)), max_size=8))
def test_property_any_writes_any_reads(data, bs, algo, cuts, reads):
    out = io.BytesIO()
    w = zfile.ZFileWriter(out, algorithm=algo, block_size=bs, overwrite_header=True)
    pos = 0
    for c in sorted(set(cuts)) + [len(data)]:
        if c >= pos:
            w.write(data[pos:c])
            pos = c
    w.close()
    z = zfile.ZFile(BytesFile(out.getvalue()))
    assert z.size == len(data)
    for off, n in reads:
        assert z.pread(n, off) == data[off:off + n]
