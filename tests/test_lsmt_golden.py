"""Upstream-written golden LSMT files: reads reproduce manifest hashes, commits are byte-exact."""

import hashlib
import io

import pytest

from overlaybd.io import BytesFile, LocalFile
from overlaybd.lsmt import commit, open_merged, open_ro
from tests.helpers.env import GOLDEN
from tests.helpers.lsmt import nonzero_extents, sha256_view

LAYERS = ["layer1.lsmt", "layer2.lsmt", "layer3.lsmt"]


def local(name):
    return LocalFile(GOLDEN / name)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_layer_alone_sha256(golden_manifest, i):
    entry = golden_manifest["layers"][i]
    with local(entry["files"]["lsmt"]) as f:
        layer = open_ro(f)
        assert layer.size == golden_manifest["virtual_size"]
        assert layer.uuid == entry["uuid"]
        assert layer.parent_uuid == (entry["parent_uuid"] or "0" * 8 + "-0000-0000-0000-" +
                                     "0" * 12)
        assert sha256_view(layer) == entry["view_of_this_layer_alone_sha256"]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_partial_stack_sha256(golden_manifest, n):
    merged = open_merged([local(name) for name in LAYERS[:n]])
    with merged:
        assert len(merged.layers) == n
        assert sha256_view(merged) == \
            golden_manifest["layers"][n - 1]["view_of_layers_1_to_this_sha256"]


@pytest.fixture(scope="module")
def merged_stack():
    m = open_merged([local(name) for name in LAYERS])
    yield m
    m.close()


def test_merged_ranges(golden_manifest, merged_stack):
    assert merged_stack.size == golden_manifest["merged"]["virtual_size"]
    for r in golden_manifest["merged"]["ranges"]:
        data = merged_stack.pread(r["length"], r["offset"])
        assert hashlib.sha256(data).hexdigest() == r["sha256"], r["note"]
        buf = bytearray(b"\xee" * r["length"])
        assert merged_stack.preadinto(buf, r["offset"]) == r["length"]
        assert hashlib.sha256(buf).hexdigest() == r["sha256"], r["note"]


def test_merged_nonzero_extents(golden_manifest, merged_stack):
    assert nonzero_extents(merged_stack) == golden_manifest["merged"]["nonzero_extents"]


@pytest.mark.parametrize("name", ["merged.lsmt"])
def test_flattened_file_reads_as_the_stack(golden_manifest, name):
    with local(name) as f:
        layer = open_ro(f)
        assert sha256_view(layer) == golden_manifest["merged"]["sha256"]
        for r in golden_manifest["merged"]["ranges"]:
            data = layer.pread(r["length"], r["offset"])
            assert hashlib.sha256(data).hexdigest() == r["sha256"], r["note"]


def test_layers_from_memory_files_read_like_local_files(golden_manifest):
    """Any object with pread/size works as a layer source (no fd fast path)."""
    files = [BytesFile((GOLDEN / n).read_bytes(), path=n) for n in LAYERS]
    merged = open_merged(files)
    for r in golden_manifest["merged"]["ranges"]:
        data = merged.pread(r["length"], r["offset"])
        assert hashlib.sha256(data).hexdigest() == r["sha256"], r["note"]


def test_allocated_sectors(merged_stack):
    # st_blocks of the merged file: allocated (non-zeroed) sectors of the merged index
    rows = merged_stack.index.rows()
    assert merged_stack.allocated_sectors() == sum(r[1] for r in rows if not r[3])
    # merged.lsmt holds exactly the allocated sectors of the stack as data
    with local("merged.lsmt") as f:
        flat = open_ro(f)
        assert flat.trailer.index_offset - 4096 == merged_stack.allocated_sectors() * 512


@pytest.mark.parametrize("i", [0, 1, 2])
def test_commit_sealed_layer_is_byte_exact(golden_manifest, i):
    entry = golden_manifest["layers"][i]
    original = (GOLDEN / entry["files"]["lsmt"]).read_bytes()
    with local(entry["files"]["lsmt"]) as f:
        layer = open_ro(f)
        out = io.BytesIO()
        trailer = commit(layer, out, uuid=entry["uuid"], message=layer.header.user_tag)
    assert out.getvalue() == original
    assert trailer.index_offset == layer.trailer.index_offset


def test_commit_merged_stack_is_byte_exact():
    original = (GOLDEN / "merged.lsmt").read_bytes()
    with local("merged.lsmt") as f:
        hdr = open_ro(f).header
    assert hdr.uuid == hdr.parent_uuid == "00000000-0000-0000-0000-000000000000"
    assert hdr.user_tag == b""
    merged = open_merged([local(name) for name in LAYERS])
    with merged:
        out = io.BytesIO()
        commit(merged, out)             # overlaybd-merge: no --uuid, parent from bottom layer
    assert out.getvalue() == original


def test_commit_of_committed_merge_is_a_fixed_point():
    original = (GOLDEN / "merged.lsmt").read_bytes()
    layer = open_ro(BytesFile(original))
    out = io.BytesIO()
    commit(layer, out)
    # tags stored in merged.lsmt are dropped on load, so the compressor may now join
    # neighbours that came from different layers; the data and view must be identical
    again = open_ro(BytesFile(out.getvalue()))
    assert again.trailer.index_offset == layer.trailer.index_offset
    assert out.getvalue()[4096:layer.trailer.index_offset] == \
        original[4096:layer.trailer.index_offset]
    assert sha256_view(again) == sha256_view(layer)


def test_255_layers_merge_with_slot_tags():
    from overlaybd.lsmt import MAX_LAYERS
    from tests.helpers.lsmt import sealed_bytes
    # layer k (bottom first) writes sector k with byte k; the top one also covers sector 0
    files = []
    for k in range(MAX_LAYERS):
        rows = [(k, 1, 8)] + ([(0, 1, 8)] if k == MAX_LAYERS - 1 else [])
        rows.sort()
        data = bytes([k]) * 512
        files.append(BytesFile(sealed_bytes([(r[0], 1, 8) for r in rows], data, 1 << 20),
                               path=f"l{k}"))
    merged = open_merged(files)
    assert merged.pread(512, 0) == bytes([254]) * 512
    assert merged.pread(512, 5 * 512) == bytes([5]) * 512
    tags = {r[0]: r[4] for r in merged.index.rows()}
    assert tags[0] == 0 and tags[254] == 0 and tags[1] == 253 and tags[5] == 249
