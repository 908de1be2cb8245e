"""A small read-only ext4 reader over a file object (an image), no mount.

``Ext4(f)`` reads the superblock and group descriptors through ``f.pread`` (512-byte aligned
whole-block reads, as the LSMT view requires); then ``lookup(path)`` resolves a path
(following symlinks inside the filesystem), ``walk(path)`` lists the regular files under a
directory, and ``file_extents(ino)`` says where a file's bytes are.  Directories are read
linearly, block by block: an htree-indexed directory keeps its index in blocks that read as
one empty entry, so the linear walk sees every name exactly once.
"""

from __future__ import annotations

import posixpath
import struct
from collections import OrderedDict
from typing import NamedTuple

from ..abi import ext4 as abi
from .extents import Ext4Error, Extent, block_map, extent_tree

BLOCK_CACHE = 256           # filesystem blocks kept (inode tables, directories, tree nodes)
MAX_SYMLINKS = 40           # as the kernel's path walk
SUPPORTED_BLOCK_SIZES = (1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Inode(NamedTuple):
    ino: int
    mode: int
    size: int
    flags: int
    i_block: bytes

    @property
    def kind(self) -> int:
        return self.mode & abi.S_IFMT

    @property
    def is_dir(self) -> bool:
        return self.kind == abi.S_IFDIR

    @property
    def is_reg(self) -> bool:
        return self.kind == abi.S_IFREG

    @property
    def is_symlink(self) -> bool:
        return self.kind == abi.S_IFLNK


def detect(f) -> str | None:
    """"ext4", "erofs" or None: which superblock magic sits at byte 1024 of ``f``."""
    block = f.pread(abi.SUPERBLOCK_SIZE, abi.SUPERBLOCK_OFFSET)
    if len(block) < abi.SUPERBLOCK_SIZE:
        return None
    if struct.unpack_from("<I", block, 0)[0] == abi.EROFS_MAGIC:
        return "erofs"
    if abi.field(block, abi.SB["magic"]) == abi.MAGIC:
        return "ext4"
    return None


class Ext4:
    def __init__(self, f, path=None):
        self.f = f
        self.path = path or getattr(f, "path", None) or "<image>"
        raw = f.pread(abi.SUPERBLOCK_SIZE, abi.SUPERBLOCK_OFFSET)
        if len(raw) < abi.SUPERBLOCK_SIZE:
            raise Ext4Error("too small for an ext4 superblock", path=self.path)
        sb = self.sb = abi.superblock(raw)
        if sb["magic"] != abi.MAGIC:
            if struct.unpack_from("<I", raw, 0)[0] == abi.EROFS_MAGIC:
                raise Ext4Error("EROFS filesystem: file-list prefetch reads ext4 only",
                                path=self.path)
            raise Ext4Error(f"no ext4 superblock (magic {sb['magic']:#06x})", path=self.path)
        self.block_size = 1024 << sb["log_block_size"] if sb["log_block_size"] < 7 else 0
        if self.block_size not in SUPPORTED_BLOCK_SIZES:
            raise Ext4Error(f"unsupported block size (log {sb['log_block_size']})", path=self.path)
        incompat = sb["feature_incompat"]
        if incompat & abi.INCOMPAT_META_BG:
            raise Ext4Error("meta_bg group descriptors are not supported", path=self.path)
        if incompat & abi.INCOMPAT_JOURNAL_DEV:
            raise Ext4Error("an external journal device holds no files", path=self.path)
        self.is64 = bool(incompat & abi.INCOMPAT_64BIT)
        self.blocks_count = sb["blocks_count_lo"] | (sb["blocks_count_hi"] << 32 if self.is64 else 0)
        self.inode_size = sb["inode_size"] if sb["rev_level"] >= 1 else abi.GOOD_OLD_INODE_SIZE
        self.desc_size = sb["desc_size"] if self.is64 else abi.GOOD_OLD_DESC_SIZE
        ipg, bpg = sb["inodes_per_group"], sb["blocks_per_group"]
        if not ipg or not bpg or self.inode_size < abi.GOOD_OLD_INODE_SIZE or \
                self.inode_size > self.block_size or self.inode_size & (self.inode_size - 1) or \
                (self.is64 and self.desc_size < abi.MIN_DESC_SIZE_64BIT):
            raise Ext4Error(f"implausible superblock (inodes/group {ipg}, blocks/group {bpg}, "
                            f"inode size {self.inode_size}, desc size {self.desc_size})",
                            path=self.path)
        self.groups = -(-(self.blocks_count - sb["first_data_block"]) // bpg)
        self.filetype = bool(incompat & abi.INCOMPAT_FILETYPE)
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._tables = self._inode_tables()

    # -- blocks -----------------------------------------------------------------------------
    def read_block(self, n: int) -> bytes:
        """Filesystem block ``n`` (cached)."""
        b = self._blocks.get(n)
        if b is not None:
            self._blocks.move_to_end(n)
            return b
        if n >= self.blocks_count:
            raise Ext4Error(f"block {n} is outside the filesystem ({self.blocks_count} blocks)",
                            path=self.path)
        b = self.f.pread(self.block_size, n * self.block_size)
        if len(b) != self.block_size:
            raise Ext4Error(f"short read of block {n}", path=self.path)
        self._blocks[n] = b
        if len(self._blocks) > BLOCK_CACHE:
            self._blocks.popitem(last=False)
        return b

    def _inode_tables(self) -> list[int]:
        first_gdt = self.sb["first_data_block"] + 1
        per_block = self.block_size // self.desc_size
        out = []
        for g in range(self.groups):
            blk = self.read_block(first_gdt + g // per_block)
            base = (g % per_block) * self.desc_size
            t = abi.field(blk, abi.GD_INODE_TABLE_LO, base)
            if self.desc_size >= abi.MIN_DESC_SIZE_64BIT:
                t |= abi.field(blk, abi.GD_INODE_TABLE_HI, base) << 32
            out.append(t)
        return out

    # -- inodes -----------------------------------------------------------------------------
    def inode(self, ino: int) -> Inode:
        if not 1 <= ino <= self.sb["inodes_count"]:
            raise Ext4Error(f"inode {ino} out of range", path=self.path)
        g, i = divmod(ino - 1, self.sb["inodes_per_group"])
        byte = self._tables[g] * self.block_size + i * self.inode_size
        blk = self.read_block(byte // self.block_size)
        at = byte % self.block_size
        raw = blk[at:at + abi.GOOD_OLD_INODE_SIZE]
        size = abi.field(raw, abi.INODE["size_lo"]) | abi.field(raw, abi.INODE["size_high"]) << 32
        return Inode(ino, abi.field(raw, abi.INODE["mode"]), size,
                     abi.field(raw, abi.INODE["flags"]),
                     bytes(raw[abi.I_BLOCK_OFFSET:abi.I_BLOCK_OFFSET + abi.I_BLOCK_SIZE]))

    def extents(self, inode: Inode) -> list[Extent]:
        """The inode's data runs in file order (inline-data files and fast symlinks: none)."""
        if inode.flags & abi.INLINE_DATA_FL or (inode.is_symlink and inode.size < 60 and
                                                not inode.flags & abi.EXTENTS_FL):
            return []
        what = f"inode {inode.ino}"
        if inode.flags & abi.EXTENTS_FL:
            runs = extent_tree(inode.i_block, self.read_block, self.blocks_count, what)
        else:
            nblocks = -(-inode.size // self.block_size)
            runs = block_map(inode.i_block, nblocks, self.block_size, self.read_block,
                             self.blocks_count, what)
        return sorted(runs)

    def file_extents(self, ino: int) -> list[tuple[int, int]]:
        """Byte ranges ``(offset, length)`` of the filesystem holding file ``ino``'s data, in
        file order: written extents only, clipped to the size rounded up to 512 bytes."""
        inode = self.inode(ino)
        end = -(-inode.size // 512) * 512
        bs = self.block_size
        out = []
        for e in self.extents(inode):
            start = e.logical * bs
            if start >= end:
                break
            if e.unwritten:
                continue
            n = min(e.length * bs, end - start)
            out.append((e.physical * bs, n))
        return out

    # -- directories ------------------------------------------------------------------------
    def entries(self, inode: Inode):
        """``(name, ino, file_type)`` of every live entry of a directory (linear read)."""
        if not inode.is_dir:
            raise Ext4Error(f"inode {inode.ino} is not a directory", path=self.path)
        if inode.flags & abi.INLINE_DATA_FL:      # i_block: parent (4 bytes), then entries
            parent = struct.unpack_from("<I", inode.i_block, 0)[0]
            yield "..", parent, abi.FT_DIR
            yield from self._parse_block(inode.i_block[4:], inode.ino)
            return
        bs = self.block_size
        for e in self.extents(inode):
            for k in range(e.length):
                if (e.logical + k) * bs >= inode.size:
                    return
                yield from self._parse_block(self.read_block(e.physical + k), inode.ino)

    def _parse_block(self, blk: bytes, dir_ino: int):
        pos, n = 0, len(blk)
        while pos + abi.DIRENT_HEADER_SIZE <= n:
            ino, raw_len, name_len, ftype = abi.DIRENT.unpack_from(blk, pos)
            rl = abi.rec_len(raw_len, self.block_size)
            if rl < abi.DIRENT_HEADER_SIZE or rl % 4 or pos + rl > n or \
                    name_len > rl - abi.DIRENT_HEADER_SIZE:
                raise Ext4Error(f"directory inode {dir_ino}: corrupt entry at byte {pos} "
                                f"(rec_len {rl}, name_len {name_len})", path=self.path)
            if ino:
                name = blk[pos + 8:pos + 8 + name_len].decode("utf-8", "surrogateescape")
                yield name, ino, ftype if self.filetype else 0
            pos += rl

    def lookup(self, path: str, follow=True) -> int:
        """The inode number of ``path`` (absolute or relative to the root)."""
        return self._resolve(path, follow, [0], [abi.ROOT_INO])

    def _resolve(self, path, follow, hops, stack):
        """Walk ``path`` from ``stack`` (the directory and its ancestors, for "..")."""
        stack = [abi.ROOT_INO] if path.startswith("/") else list(stack)
        parts = [p for p in path.split("/") if p and p != "."]
        for k, part in enumerate(parts):
            cur = self.inode(stack[-1])
            if not cur.is_dir:
                raise Ext4Error(f"{path}: not a directory", path=self.path)
            if part == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            child = None
            for name, ino, _ in self.entries(cur):
                if name == part:
                    child = ino
                    break
            if child is None:
                raise Ext4Error(f"{path}: no such file or directory", path=self.path)
            last = k == len(parts) - 1
            node = self.inode(child)
            if node.is_symlink and (follow or not last):
                hops[0] += 1
                if hops[0] > MAX_SYMLINKS:
                    raise Ext4Error(f"{path}: too many levels of symbolic links", path=self.path)
                target = self.readlink(node)
                rest = "/".join(parts[k + 1:])
                joined = posixpath.join(target, rest) if rest else target
                return self._resolve(joined, follow, hops, stack)
            stack.append(child)
        return stack[-1]

    def readlink(self, inode: Inode) -> str:
        if inode.size < 60 and not inode.flags & (abi.EXTENTS_FL | abi.INLINE_DATA_FL):
            raw = inode.i_block[:inode.size]
        elif inode.flags & abi.INLINE_DATA_FL:
            raw = inode.i_block[:min(inode.size, abi.I_BLOCK_SIZE)]
        else:
            raw = b"".join(self.f.pread(n, off) for off, n in self.file_extents(inode.ino))
            raw = raw[:inode.size]
        return raw.decode("utf-8", "surrogateescape")

    def walk(self, path: str = "/"):
        """``(path, ino)`` of every regular file under directory ``path``, depth first, each
        directory visited once (hard-linked or looping trees cannot recurse forever)."""
        top = self.lookup(path)
        if not self.inode(top).is_dir:
            raise Ext4Error(f"{path}: not a directory", path=self.path)
        seen = {top}
        todo = [(path.rstrip("/") or "/", top)]
        while todo:
            dpath, dino = todo.pop()
            subdirs = []
            for name, ino, _ in sorted(self.entries(self.inode(dino))):
                if name in (".", ".."):
                    continue
                node = self.inode(ino)
                child = posixpath.join(dpath, name)
                if node.is_dir:
                    if ino not in seen:
                        seen.add(ino)
                        subdirs.append((child, ino))
                elif node.is_reg:
                    yield child, ino
            todo.extend(reversed(subdirs))
