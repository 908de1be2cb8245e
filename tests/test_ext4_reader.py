"""The userspace ext4 reader against filesystems made by e2fsprogs (``mkfs.ext4 -d``): every
file's extents must be the blocks ``debugfs`` lists, and reading them must give the source
file's bytes."""

import hashlib
import os
import struct

import pytest

from overlaybd.abi import ext4 as abi
from overlaybd.ext4 import Ext4, Ext4Error, detect
from overlaybd.io import BytesFile, LocalFile
from tests.helpers.ext4 import debugfs, debugfs_blocks, make_tree, mkfs, need_e2fsprogs

_IMAGES = {}


def _image(kind, tmp_path_factory):
    """(kind, image path, {file: sha256}, source dir, Ext4) made once per session."""
    if kind not in _IMAGES:
        need_e2fsprogs()
        d = tmp_path_factory.mktemp(kind)
        src = d / "src"
        files = make_tree(src, big_mib=30 if kind != "ext4" else 8)
        img = mkfs(src, d / "img", 96 if kind == "ext4" else 64, kind)
        _IMAGES[kind] = (kind, img, files, src, Ext4(LocalFile(img)))
    return _IMAGES[kind]


@pytest.fixture(params=["ext4-1k", "ext4", "ext2"])
def fs_image(request, tmp_path_factory):
    return _image(request.param, tmp_path_factory)


@pytest.fixture
def fs_1k(tmp_path_factory):
    """The 1 KiB-block image without flex_bg, where big files fragment."""
    return _image("ext4-1k", tmp_path_factory)


def content(fs, ino):
    """A file's bytes read through its extents (holes as zeros)."""
    node = fs.inode(ino)
    out = bytearray(node.size)
    bs = fs.block_size
    for e in fs.extents(node):
        if e.unwritten:
            continue
        for k in range(e.length):
            pos = (e.logical + k) * bs
            if pos >= node.size:
                break
            blk = fs.read_block(e.physical + k)
            out[pos:pos + bs] = blk[:min(bs, node.size - pos)]
    return bytes(out)


def test_detects_ext4(fs_image):
    _, img, _, _, fs = fs_image
    with LocalFile(img) as f:
        assert detect(f) == "ext4"
    assert fs.block_size == (4096 if fs_image[0] == "ext4" else 1024)


def test_every_file_has_debugfs_blocks_and_source_bytes(fs_image):
    _, img, files, _, fs = fs_image
    for k, (rel, sha) in enumerate(sorted(files.items())):
        ino = fs.lookup("/" + rel)
        if not rel.startswith("many/") or k % 25 == 0:     # debugfs on a sample of /many
            blocks = [e.physical + j for e in fs.extents(fs.inode(ino)) for j in range(e.length)]
            assert blocks == debugfs_blocks(img, "/" + rel), rel
        assert hashlib.sha256(content(fs, ino)).hexdigest() == sha, rel


def test_walk_finds_the_source_tree(fs_image):
    _, _, files, src, fs = fs_image
    assert sorted(p.lstrip("/") for p, _ in fs.walk("/") if p != "/lost+found") == sorted(files)
    assert sorted(p for p, _ in fs.walk("/a/")) == sorted(
        "/" + r for r in files if r.startswith("a/"))


def test_fragmented_file_has_a_deep_extent_tree(fs_1k):
    _, img, _, _, fs = fs_1k
    node = fs.inode(fs.lookup("/big/frag.bin"))
    depth = abi.EXTENT_HEADER.unpack_from(node.i_block)[3]
    assert depth >= 1
    assert "Level Entries" in debugfs(img, "ex /big/frag.bin")
    runs = fs.extents(node)
    assert len(runs) > 4                            # more than the inode's root can hold
    assert any(a.physical + a.length != b.physical for a, b in zip(runs, runs[1:]))


def test_file_extents_are_byte_ranges_clipped_to_the_size(fs_image):
    _, img, files, _, fs = fs_image
    ino = fs.lookup("/big/mid.bin")
    ranges = fs.file_extents(ino)
    size = fs.inode(ino).size
    assert sum(n for _, n in ranges) == -(-size // 512) * 512
    assert all(off % 512 == 0 and n % 512 == 0 for off, n in ranges)
    sparse = fs.file_extents(fs.lookup("/big/sparse.bin"))
    assert sum(n for _, n in sparse) < 200000     # the 5 MiB hole is not read


def test_htree_directory_listed_linearly(fs_image):
    kind, img, files, src, fs = fs_image
    node = fs.inode(fs.lookup("/many"))
    if kind != "ext2":
        assert node.flags & abi.INDEX_FL, "e2fsck -D should have indexed /many"
        assert "Root node dump" in debugfs(img, "htree /many")
    names = [n for n, _, _ in fs.entries(node) if n not in (".", "..")]
    assert sorted(names) == sorted(os.listdir(src / "many"))
    assert len(names) == len(set(names))


def test_symlinks_are_followed(fs_image):
    _, _, _, _, fs = fs_image
    assert fs.lookup("/big/link") == fs.lookup("/a/b/f-3.cfg")
    assert fs.lookup("/abs-link/empty") == fs.lookup("/a/b/c/empty")
    assert fs.lookup("/big/link", follow=False) != fs.lookup("/a/b/f-3.cfg")
    assert fs.lookup("/a/b/c/../../b/./c/empty") == fs.lookup("/a/b/c/empty")


def test_missing_paths_and_non_directories(fs_image):
    _, _, _, _, fs = fs_image
    with pytest.raises(Ext4Error, match="no such file"):
        fs.lookup("/nope")
    with pytest.raises(Ext4Error, match="not a directory"):
        fs.lookup("/big/mid.bin/x")
    with pytest.raises(Ext4Error, match="not a directory"):
        list(fs.walk("/big/mid.bin"))


def test_erofs_and_garbage_are_refused():
    sb = bytearray(4096)
    struct.pack_into("<I", sb, 1024, abi.EROFS_MAGIC)
    assert detect(BytesFile(sb)) == "erofs"
    with pytest.raises(Ext4Error, match="EROFS"):
        Ext4(BytesFile(sb))
    assert detect(BytesFile(bytes(4096))) is None
    with pytest.raises(Ext4Error, match="no ext4 superblock"):
        Ext4(BytesFile(bytes(4096)))
    with pytest.raises(Ext4Error, match="too small"):
        Ext4(BytesFile(bytes(1500)))


def test_corrupt_structures_raise_instead_of_looping(fs_1k, tmp_path):
    _, img, _, _, fs = fs_1k
    data = bytearray(img.read_bytes())
    node = fs.inode(fs.lookup("/big/frag.bin"))
    g, i = divmod(node.ino - 1, fs.sb["inodes_per_group"])
    at = fs._tables[g] * fs.block_size + i * fs.inode_size + abi.I_BLOCK_OFFSET
    bad = bytearray(data)
    bad[at:at + 2] = b"\0\0"                        # extent root magic
    def extents_in(buf, ino):
        bfs = Ext4(BytesFile(buf))
        return bfs.extents(bfs.inode(ino))

    with pytest.raises(Ext4Error, match="bad extent header magic"):
        extents_in(bad, node.ino)
    bad = bytearray(data)
    child = struct.unpack_from("<I", data, at + 12 + 4)[0]     # first index's leaf block
    struct.pack_into("<H", bad, child * fs.block_size + 6, 3)  # child claims depth 3
    with pytest.raises(Ext4Error, match="depth"):
        extents_in(bad, node.ino)
    d = fs.inode(fs.lookup("/a"))
    blk = fs.extents(d)[0].physical
    bad = bytearray(data)
    struct.pack_into("<H", bad, blk * fs.block_size + 4, 3)   # rec_len of "." = 3
    with pytest.raises(Ext4Error, match="corrupt entry"):
        bfs = Ext4(BytesFile(bad))
        list(bfs.entries(bfs.inode(d.ino)))
