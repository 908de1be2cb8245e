"""ZFile against the golden files written by upstream's overlaybd-commit -z / overlaybd-merge."""

import io
import random

import pytest

from overlaybd import zfile
from overlaybd.abi import zfile as zabi
from overlaybd.detect import describe, open_blob
from overlaybd.io import BytesFile, LocalFile
from tests.helpers.env import GOLDEN, need
from tests.helpers.zfile import ALGOS, LAYERS, blocks_of, golden, random_writes, sha256

CASES = [(layer, algo) for layer in LAYERS for algo in ALGOS]


def open_golden(name):
    return zfile.ZFile(LocalFile(GOLDEN / name))


@pytest.mark.parametrize("layer,algo", CASES + [("merged", "lz4")])
def test_decompresses_to_lsmt(layer, algo, golden_manifest):
    z = open_golden(f"{layer}.{algo}.zfile")
    ref = golden(f"{layer}.lsmt")
    assert z.size == len(ref)
    data = z.pread(z.size, 0)
    assert sha256(data) == sha256(ref)
    files = {f["name"]: f for f in golden_manifest["files"]}
    assert sha256(data) == files[f"{layer}.lsmt"]["sha256"]
    assert sha256(golden(f"{layer}.{algo}.zfile")) == files[f"{layer}.{algo}.zfile"]["sha256"]
    out = io.BytesIO()
    assert zfile.decompress(LocalFile(GOLDEN / f"{layer}.{algo}.zfile"), out) == len(ref)
    assert out.getvalue() == ref


@pytest.mark.parametrize("layer,algo", CASES)
def test_commit_z_header_and_trailer(layer, algo):
    raw = golden(f"{layer}.{algo}.zfile")
    ref = golden(f"{layer}.lsmt")
    z = zfile.ZFile(BytesFile(raw))
    h = z.header
    assert h.flags == 0x1B and h.is_header_overwritten
    assert (h.block_size, h.verify, h.level, h.dict_size, h.size) == (4096, 1, 0, 0, 96)
    assert h.algo == {"lz4": 1, "zstd": 2}[algo] and z.algorithm == algo
    assert h.original_file_size == len(ref)
    assert h.index_size == -(-len(ref) // 4096)
    t = zabi.HeaderTrailer.unpack(raw[-512:])
    assert t.flags == 0x16 and t.magic_ok and zabi.digest_ok(raw[-512:])
    for name in ("index_offset", "index_size", "original_file_size", "index_crc", "block_size",
                 "algo", "verify"):
        assert getattr(t, name) == getattr(h, name), name
    assert h.index_offset + 4 * h.index_size == len(raw) - 512
    assert zabi.digest_ok(raw[:512]) and raw[96:512] == bytes(416)
    assert h.pack() == raw[:512] and t.pack() == raw[-512:]


def test_merge_output_uses_trailer():
    raw = golden("merged.lz4.zfile")
    z = zfile.ZFile(BytesFile(raw))
    assert z.header.flags == 0x13 and not z.header.is_header_overwritten
    assert z.header.index_size == 0 and z.header.original_file_size == 0
    assert z.trailer.flags == 0x16 and z.trailer.original_file_size == z.size


@pytest.mark.parametrize("layer,algo", CASES + [("merged", "lz4")])
def test_random_preads(layer, algo):
    z = open_golden(f"{layer}.{algo}.zfile")
    ref = golden(f"{layer}.lsmt")
    rng = random.Random(hash((layer, algo)) & 0xFFFF)
    for _ in range(300):
        off = rng.randrange(len(ref) + 100)
        n = rng.choice([1, 511, 512, 4096, 4097, 65536, 200000, rng.randrange(1, 300000)])
        assert z.pread(n, off) == ref[off:off + n], (off, n)
    for off in range(0, len(ref), 4096):          # every block alone
        assert z.pread(4096, off) == ref[off:off + 4096]
    buf = bytearray(10000)
    assert z.preadinto(buf, 777) == 10000 and bytes(buf) == ref[777:10777]
    assert z.pread(10, len(ref)) == b"" and z.pread(0, 0) == b""


@pytest.mark.parametrize("layer,algo", CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_streaming_writer_reproduces_commit_z(layer, algo, threads):
    need(zfile.LZ4_EXACT or algo != "lz4", "liblz4 (LZ4_compress_default) for byte-exact lz4")
    ref = golden(f"{layer}.lsmt")
    out = io.BytesIO()
    w = zfile.ZFileWriter(out, algorithm=algo, block_size=4096, verify=True,
                          overwrite_header=True, threads=threads)
    random_writes(w, ref, random.Random(threads))
    w.close()
    expected = golden(f"{layer}.{algo}.zfile")
    if out.getvalue() != expected:    # say where, block by block
        _, ours = blocks_of(out.getvalue())
        _, theirs = blocks_of(expected)
        diff = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
        pytest.fail(f"differs from upstream; first differing blocks {diff[:10]}")


def test_one_shot_compress_reproduces_merge_output():
    need(zfile.LZ4_EXACT, "liblz4 (LZ4_compress_default) for byte-exact lz4")
    out = io.BytesIO()
    zfile.compress(LocalFile(GOLDEN / "merged.lsmt"), out)     # no header overwrite
    assert out.getvalue() == golden("merged.lz4.zfile")
    out = io.BytesIO()
    zfile.compress(io.BytesIO(golden("merged.lsmt")), out)     # stdin-style stream
    assert out.getvalue() == golden("merged.lz4.zfile")


@pytest.mark.parametrize("layer,algo", CASES + [("merged", "lz4")])
def test_verify_and_detection(layer, algo):
    name = f"{layer}.{algo}.zfile"
    f = LocalFile(GOLDEN / name)
    assert zfile.is_zfile(f)
    assert zfile.verify(f) == zfile.ZFile(f).nblocks
    assert not zfile.is_zfile(LocalFile(GOLDEN / f"{layer}.lsmt"))
    blob = open_blob(f)
    assert isinstance(blob, zfile.ZFile) and blob.pread(4096, 0) == golden(f"{layer}.lsmt")[:4096]
    d = describe(f)
    assert d["kinds"] == ["zfile", "lsmt"]
    assert d["zfile"]["trailer"]["flags"] == 0x16
    assert d["lsmt"]["header"]["virtual_size"] == 1 << 30
    plain = LocalFile(GOLDEN / f"{layer}.lsmt")
    assert open_blob(plain) is plain and describe(plain)["kinds"] == ["lsmt"]
