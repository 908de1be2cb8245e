"""Writable LSMT layers: create/write/discard/reopen, close_seal, commit round trips, stacking."""

import io
import os

import numpy as np
import pytest

from overlaybd.abi.lsmt import HeaderTrailer, decode_entries, unpack_entry
from overlaybd.errors import OverlaybdError
from overlaybd.io import BytesFile, LocalFile
from overlaybd.lsmt import (
    AlignmentError,
    NotSupportedError,
    close_seal,
    commit,
    create_rw,
    open_merged,
    open_ro,
    open_rw,
    stack,
)
from tests.helpers.env import GOLDEN
from tests.helpers.lsmt import sha256_view

MiB = 1 << 20
U1 = "A1B2C3D4-0000-4000-8000-00000000000A"
P1 = "A1B2C3D4-0000-4000-8000-00000000000B"


def pattern(n, seed):
    """Deterministic bytes that differ per sector and per seed."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture(params=[False, True], ids=["append", "sparse"])
def sparse(request):
    return request.param


def new_layer(tmp_path, sparse, vsize=64 * MiB, name="rw", **kw):
    return create_rw(tmp_path / f"{name}.data", tmp_path / f"{name}.index", vsize,
                     sparse=sparse, **kw)


def read_all(f):
    return f.pread(f.size, 0)


def test_create_headers(tmp_path, sparse):
    layer = new_layer(tmp_path, sparse, uuid=U1.lower(), parent_uuid=P1)
    layer.close()
    data = (tmp_path / "rw.data").read_bytes()
    hdr = HeaderTrailer.unpack(data)
    assert hdr.flags == (0x13 if sparse else 0x03)
    assert hdr.virtual_size == 64 * MiB
    assert hdr.uuid == U1 and hdr.parent_uuid == P1          # written upper-case
    index = (tmp_path / "rw.index").read_bytes()
    if sparse:
        assert len(data) == 64 * MiB + 4096 and index == b""
    else:
        assert len(data) == 4096
        ih = HeaderTrailer.unpack(index)
        assert len(index) == 4096 and ih.flags == 0x01 and ih.index_offset == 4096
        assert ih.index_size == 0 and ih.uuid == U1 and ih.virtual_size == 64 * MiB


def test_random_uuid_by_default(tmp_path):
    a = new_layer(tmp_path, False, name="a")
    b = new_layer(tmp_path, False, name="b")
    assert a.uuid != b.uuid and a.uuid[14] == "4"
    assert a.parent_uuid == "00000000-0000-0000-0000-000000000000"


def test_write_read_discard(tmp_path, sparse):
    layer = new_layer(tmp_path, sparse)
    a = pattern(8192, 1)
    assert layer.pwrite(a, 4096) == 8192
    assert layer.pread(8192, 4096) == a
    assert layer.pread(1024, 0) == bytes(1024)
    assert layer.pread(2048, 3584) == bytes(512) + a[:1536]
    layer.discard(4608, 1024)
    assert layer.pread(8192, 4096) == a[:512] + bytes(1024) + a[1536:]
    buf = bytearray(b"\xff" * 4096)
    assert layer.preadinto(buf, 4096) == 4096
    assert bytes(buf) == a[:512] + bytes(1024) + a[1536:4096]
    layer.close()


def test_alignment_errors(tmp_path, sparse):
    layer = new_layer(tmp_path, sparse)
    for call in (lambda: layer.pwrite(b"x" * 512, 100), lambda: layer.pwrite(b"x" * 100, 0),
                 lambda: layer.pread(100, 0), lambda: layer.pread(512, 1),
                 lambda: layer.discard(0, 100), lambda: layer.preadinto(bytearray(100), 0)):
        with pytest.raises(AlignmentError) as e:
            call()
        assert "rw.data" in str(e.value) and "aligned" in str(e.value)


def test_reads_past_virtual_size_are_short(tmp_path, sparse):
    layer = new_layer(tmp_path, sparse, vsize=MiB)
    layer.pwrite(b"\x01" * 4096, MiB - 4096)
    assert layer.pread(8192, MiB - 4096) == b"\x01" * 4096
    assert layer.pread(4096, MiB) == b""
    assert layer.preadinto(bytearray(8192), MiB - 4096) == 4096


def test_append_log_records_and_4mib_split(tmp_path):
    layer = new_layer(tmp_path, False, vsize=16 * MiB)
    big = pattern(9 * MiB, 3)
    layer.pwrite(big, 2 * MiB)
    layer.discard(0, 20000 * 512)               # split at 16383 sectors
    layer.pwrite(b"\x07" * 512, 20 * MiB)       # past the virtual size: vsize grows
    assert layer.size == 20 * MiB + 512
    layer.close()
    raw = (tmp_path / "rw.index").read_bytes()[4096:]
    recs = [unpack_entry(raw, k) for k in range(0, len(raw), 16)]
    assert recs[:3] == [(4096, 8192, 8, 0, 0), (4096 + 8192, 8192, 8 + 8192, 0, 0),
                        (4096 + 16384, 2048, 8 + 16384, 0, 0)]      # 4 + 4 + 1 MiB
    end = 8 + 18432                             # data file end after 9 MiB, in sectors
    assert recs[3:5] == [(0, 16383, end, 1, 0), (16383, 20000 - 16383, end, 1, 0)]
    assert recs[5] == (40960, 1, end, 0, 0)
    assert os.path.getsize(tmp_path / "rw.data") == 4096 + 9 * MiB + 512
    layer = open_rw(tmp_path / "rw.data", tmp_path / "rw.index")
    assert layer.size == 16 * MiB                # reopen: vsize from the index header
    assert layer.pread(16 * MiB, 0) == bytes(20000 * 512) + big[20000 * 512 - 2 * MiB:] + \
        bytes(16 * MiB - 11 * MiB)


def test_sparse_extent_longer_than_16383_sectors(tmp_path):
    layer = new_layer(tmp_path, True, vsize=32 * MiB)
    big = pattern(10 * MiB, 5)
    layer.pwrite(big, MiB)
    layer.close()
    layer = open_rw(tmp_path / "rw.data")
    assert layer.sparse
    rows = layer.index.rows()
    assert [r[1] for r in rows] == [16383, 20480 - 16383]
    assert rows[0][:3] == (2048, 16383, 2048 + 8)
    assert layer.pread(12 * MiB, 0) == bytes(MiB) + big + bytes(MiB)


def test_reopen_equal(tmp_path, sparse):
    layer = new_layer(tmp_path, sparse, vsize=4 * MiB)
    for k in range(20):
        layer.pwrite(pattern(4096 * (k % 3 + 1), k), (k * 37 % 900) * 4096)
    layer.discard(8192, 4096 * 3)
    before = read_all(layer)
    layer.fsync()
    layer.close()
    again = open_rw(tmp_path / "rw.data", tmp_path / "rw.index")
    assert read_all(again) == before
    again.pwrite(b"\x09" * 4096, 0)
    assert again.pread(4096, 0) == b"\x09" * 4096


def test_commit_round_trip_and_append_equals_sparse(tmp_path):
    outs = []
    for sp in (False, True):
        layer = new_layer(tmp_path, sp, vsize=8 * MiB, name=f"l{sp}", uuid=U1, parent_uuid=P1)
        layer.pwrite(pattern(3 * MiB, 1), 0)
        layer.pwrite(pattern(8192, 2), 512)
        layer.pwrite(pattern(4096, 3), 5 * MiB)
        layer.discard(MiB, 8192)
        view = read_all(layer)
        out = io.BytesIO()
        trailer = commit(layer, out, message="hello")
        sealed = open_ro(BytesFile(out.getvalue()))
        assert read_all(sealed) == view
        assert sealed.header.flags == 0x07 and trailer.flags == 0x06
        assert sealed.uuid == "00000000-0000-0000-0000-000000000000"
        assert sealed.parent_uuid == P1 and sealed.header.user_tag == b"hello"
        assert trailer.index_size % 256 == 0
        assert trailer.index_offset == 4096 + sealed.allocated_sectors() * 512
        outs.append(out.getvalue())
    assert outs[0] == outs[1]


def test_commit_uuid_arguments(tmp_path):
    layer = new_layer(tmp_path, False, vsize=MiB, uuid=U1, parent_uuid=P1)
    out = io.BytesIO()
    commit(layer, out, uuid=U1.lower(), parent_uuid="0" * 8 + "-1111-2222-3333-" + "4" * 12)
    sealed = open_ro(BytesFile(out.getvalue()))
    assert sealed.uuid == U1 and sealed.parent_uuid == "00000000-1111-2222-3333-444444444444"
    with pytest.raises(OverlaybdError):
        commit(layer, io.BytesIO(), uuid="not-a-uuid")
    with pytest.raises(OverlaybdError):
        commit(layer, io.BytesIO(), message=b"m" * 257)


def test_close_seal_then_reopen(tmp_path, sparse):
    layer = new_layer(tmp_path, sparse, vsize=4 * MiB, uuid=U1, parent_uuid=P1)
    for k in range(40):
        layer.pwrite(pattern(512 * (k % 5 + 1), k), (k * 53 % 8000) * 512)
    layer.discard(0, 4096)
    view = read_all(layer)
    n = len(layer.index)
    sealed = close_seal(layer)
    assert read_all(sealed) == view
    assert sealed.header.flags == (0x13 if sparse else 0x03)
    assert sealed.trailer.flags == (0x16 if sparse else 0x06)
    assert sealed.trailer.index_size == n and sealed.uuid == U1 and sealed.parent_uuid == P1
    size = os.path.getsize(tmp_path / "rw.data")
    assert size == sealed.trailer.index_offset + (-(-n // 32) * 512) + 4096
    again = open_ro(LocalFile(tmp_path / "rw.data"))
    assert read_all(again) == view
    out = io.BytesIO()
    commit(again, out)                            # a close_sealed layer can be committed
    assert read_all(open_ro(BytesFile(out.getvalue()))) == view


def test_max_io_size(tmp_path):
    layer = new_layer(tmp_path, False)
    for bad in (511 * 1024, 0, 8 * MiB):        # not 4 KiB-aligned; empty; > 16383 sectors
        with pytest.raises(OverlaybdError):
            layer.set_max_io_size(bad)
    layer.set_max_io_size(64 * 1024)
    layer.pwrite(pattern(256 * 1024, 1), 0)
    assert len(layer.index) == 4 and layer.pread(256 * 1024, 0) == pattern(256 * 1024, 1)


def golden_lowers():
    return open_merged([LocalFile(GOLDEN / n) for n in ("layer1.lsmt", "layer2.lsmt",
                                                         "layer3.lsmt")])


def test_stack_over_golden_lowers(tmp_path, golden_manifest, sparse):
    lowers = golden_lowers()
    upper = new_layer(tmp_path, sparse, vsize=0)
    img = stack(upper, lowers)
    assert img.size == 1 << 30 and upper.size == 1 << 30
    with open(tmp_path / "rw.data", "rb") as f:
        assert HeaderTrailer.unpack(f.read(4096)).virtual_size == 1 << 30
    base = lowers.pread(MiB, 0)
    img.pwrite(b"\x5a" * 4096, 8192)
    img.discard(0, 4096)
    assert img.pread(MiB, 0) == bytes(4096) + base[4096:8192] + b"\x5a" * 4096 + base[12288:]
    assert upper.pread(16384, 0) == bytes(8192) + b"\x5a" * 4096 + bytes(4096)
    with pytest.raises(NotSupportedError):
        commit(img, io.BytesIO())
    img.close()
    if not sparse:
        raw = (tmp_path / "rw.index").read_bytes()[4096:]
        _, _, _, zeroed, tags = decode_entries(raw)
        assert list(tags) == [3, 3] and list(zeroed) == [0, 1]   # records carry tag = #lowers
    upper = open_rw(tmp_path / "rw.data", tmp_path / "rw.index")
    img = stack(upper, golden_lowers())
    # a sparse layer forgets its discards on reopen: the lower data shows through again
    first = base[:4096] if sparse else bytes(4096)
    assert img.pread(MiB, 0) == first + base[4096:8192] + b"\x5a" * 4096 + base[12288:]
    img.close()


def test_stack_without_lowers_is_the_upper(tmp_path):
    upper = new_layer(tmp_path, False)
    assert stack(upper, None) is upper


def test_flatten_stack_to_one_layer_equals_view(tmp_path, golden_manifest):
    lowers = golden_lowers()
    upper = new_layer(tmp_path, False, vsize=0)
    img = stack(upper, lowers)
    img.pwrite(pattern(65536, 9), 1 << 29)
    img.close()
    upper = open_rw(tmp_path / "rw.data", tmp_path / "rw.index")
    out = tmp_path / "upper.commit"
    with open(out, "wb") as f:
        commit(upper, f, uuid=U1, parent_uuid=golden_manifest["layers"][2]["uuid"])
    files = [LocalFile(GOLDEN / n) for n in ("layer1.lsmt", "layer2.lsmt", "layer3.lsmt")]
    merged = open_merged(files + [LocalFile(out)])
    flat = io.BytesIO()
    commit(merged, flat)
    flat_layer = open_ro(BytesFile(flat.getvalue()))
    assert flat_layer.pread(65536, 1 << 29) == pattern(65536, 9)
    assert sha256_view(flat_layer) == sha256_view(merged)
    merged.close()


def test_update_vsize(tmp_path, sparse):
    layer = new_layer(tmp_path, sparse, vsize=MiB)
    layer.pwrite(b"\x03" * 4096, 0)
    layer.update_vsize(2 * MiB)
    assert layer.size == 2 * MiB
    for name in (["rw.data"] if sparse else ["rw.data", "rw.index"]):
        with open(tmp_path / name, "rb") as f:
            assert HeaderTrailer.unpack(f.read(4096)).virtual_size == 2 * MiB
    if sparse:
        assert os.path.getsize(tmp_path / "rw.data") == 2 * MiB + 4096
    assert layer.pwrite(b"", 4096) == 0 and len(layer.index) == 1
    layer.close()
    again = open_rw(tmp_path / "rw.data", tmp_path / "rw.index")
    assert again.size == 2 * MiB and again.pread(4096, 0) == b"\x03" * 4096
    with pytest.raises(OverlaybdError):
        layer.pwrite(b"x" * 512, 0)              # closed


def test_live_snapshot_restack(tmp_path):
    """Seal the upper in place, put it on top of the lowers, continue in a new upper."""
    lowers = golden_lowers()
    upper = new_layer(tmp_path, False, vsize=0, name="u1")
    img = stack(upper, lowers)
    img.pwrite(pattern(8192, 4), 0)
    img.discard(1 << 20, 4096)
    view = img.pread(2 * MiB, 0)
    sealed = close_seal(img)
    from overlaybd.lsmt import add_top_layer
    merged = add_top_layer(lowers, sealed)
    assert len(merged.layers) == 4 and merged.pread(2 * MiB, 0) == view
    fresh = open_merged([LocalFile(GOLDEN / n) for n in ("layer1.lsmt", "layer2.lsmt",
                                                          "layer3.lsmt")] +
                        [LocalFile(tmp_path / "u1.data")])
    assert merged.index.rows() == fresh.index.rows()
    img2 = stack(new_layer(tmp_path, False, vsize=0, name="u2"), merged)
    img2.pwrite(b"\x11" * 512, 4096)
    assert img2.pread(2 * MiB, 0) == view[:4096] + b"\x11" * 512 + view[4608:]
    img2.close()
    fresh.close()
