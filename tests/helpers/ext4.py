"""Filesystem images made with e2fsprogs (``mkfs.ext4 -d``) for the ext4 reader and prefetch
tests, and their conversion into overlaybd layers with the project's own tools."""

import hashlib
import os
import random
import re
import shutil
import subprocess

from tests.helpers.env import need

MiB = 1 << 20


def need_e2fsprogs():
    need(all(shutil.which(t) for t in ("mkfs.ext4", "debugfs", "e2fsck")),
         "e2fsprogs (mkfs.ext4, debugfs, e2fsck) not installed")


def make_tree(root, seed=1, big_mib=30, many=400):
    """A directory tree: a big file (fragmented on a 1 KiB-block filesystem without flex_bg),
    a sparse file, a directory of ``many`` names (htree after ``e2fsck -D``), nested
    directories, symlinks and an empty file.  Returns {relative path: sha256}."""
    rnd = random.Random(seed)
    files = {}

    def put(rel, data):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        files[rel] = hashlib.sha256(data).hexdigest()

    put("big/frag.bin", rnd.randbytes(big_mib * MiB))
    put("big/mid.bin", rnd.randbytes(3 * MiB + 123))
    for i in range(many):
        put(f"many/file-with-a-long-name-{i:05d}.txt", rnd.randbytes(i * 37 % 5000))
    for d in ("a", "a/b", "a/b/c", "etc"):
        put(f"{d}/f-{len(d)}.cfg", rnd.randbytes(rnd.randrange(1, 70000)))
    put("a/b/c/empty", b"")
    sparse = os.path.join(root, "big/sparse.bin")
    with open(sparse, "wb") as f:
        f.seek(5 * MiB)
        data = rnd.randbytes(100000)
        f.write(data)
    files["big/sparse.bin"] = hashlib.sha256(bytes(5 * MiB) + data).hexdigest()
    os.symlink("../a/b/f-3.cfg", os.path.join(root, "big/link"))
    os.symlink("/a/b/c", os.path.join(root, "abs-link"))
    return files


def mkfs(src, image, size_mib=64, kind="ext4-1k", htree=True):
    """``mkfs -d src`` into a new image file: ``ext4-1k`` (1 KiB blocks, no flex_bg: files
    cross group metadata and fragment), ``ext4`` (mkfs defaults, 4 KiB blocks) or ``ext2`` (block maps)."""
    opts = {"ext4-1k": ["-t", "ext4", "-b", "1024", "-O", "^flex_bg,^resize_inode", "-N", "2048"],
            "ext4": ["-t", "ext4", "-b", "4096"],
            "ext2": ["-t", "ext2", "-b", "1024", "-N", "2048"]}[kind]
    if os.path.exists(image):
        os.unlink(image)
    subprocess.run(["mkfs.ext4", "-q", "-F", *opts, "-d", str(src), str(image), f"{size_mib}M"],
                   check=True, capture_output=True)
    if htree:
        r = subprocess.run(["e2fsck", "-fyD", str(image)], capture_output=True, text=True)
        assert r.returncode in (0, 1), r.stdout + r.stderr    # 1: "file system modified"
    return image


def debugfs(image, request):
    r = subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, text=True,
                       check=True)
    return r.stdout


_RUN = re.compile(r"\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?")


def debugfs_blocks(image, path):
    """The data blocks of ``path`` in file order, from the EXTENTS / BLOCKS list of
    ``debugfs stat`` (tree and indirect blocks, listed as (ETBn) / (IND) ..., left out)."""
    out = debugfs(image, f"stat {path}")
    tail = out.split("EXTENTS:", 1)[-1] if "EXTENTS:" in out else out.split("BLOCKS:", 1)[-1]
    blocks = []
    for lo, hi, plo, phi in _RUN.findall(tail):
        n = int(hi or lo) - int(lo) + 1
        assert int(phi or plo) - int(plo) + 1 == n
        blocks += range(int(plo), int(plo) + n)
    return blocks


def raw_to_layer(raw, out, tmp, compress=True, tar=True, select=None):
    """Turn a raw disk image into a committed overlaybd layer with the project's tools:
    overlaybd-create, writes of the non-zero 64 KiB pieces (those at offsets ``select(off)``
    accepts, if given), overlaybd-commit [-z] [-t]."""
    from overlaybd import lsmt
    from overlaybd.tools import commit
    data, index = os.path.join(tmp, "w.data"), os.path.join(tmp, "w.index")
    size = os.path.getsize(raw)
    layer = lsmt.create_rw(data, index, size)
    zero = bytes(64 << 10)
    with open(raw, "rb") as f:
        off = 0
        while chunk := f.read(64 << 10):
            if chunk != zero[:len(chunk)] and (select is None or select(off)):
                layer.pwrite(chunk, off)
            off += len(chunk)
    layer.close()
    args = (["-z"] if compress else []) + (["-t"] if tar else [])
    assert commit.main([*args, "-f", data, index, str(out)]) == 0
    os.unlink(data)
    os.unlink(index)
    return out
