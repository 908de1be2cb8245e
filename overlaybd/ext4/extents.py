"""Where a file's data lives: its extent tree (any depth) or its ext2/3 block map.

Both return ``Extent(logical, physical, length, unwritten)`` runs in logical order, in
filesystem blocks.  ``read_block(n) -> bytes`` reads one filesystem block.  A corrupt tree
(bad magic, an entry count over the maximum, too deep, pointers outside the filesystem)
raises Ext4Error instead of looping or reading garbage.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ..abi import ext4 as abi
from ..errors import FormatError


class Ext4Error(FormatError):
    """The filesystem (or one file of it) cannot be read as ext4."""


class Extent(NamedTuple):
    logical: int        # first file block
    physical: int       # first filesystem block
    length: int         # blocks
    unwritten: bool     # allocated but never written: reads as zeros


def extent_tree(root: bytes, read_block, blocks_count: int, what="inode") -> list[Extent]:
    """Leaf extents of the tree whose root node is ``root`` (the inode's 60-byte i_block)."""
    out: list[Extent] = []
    _node(root, read_block, blocks_count, None, out, what)
    return out


def _node(buf, read_block, blocks_count, want_depth, out, what):
    magic, entries, maximum, depth, _ = abi.EXTENT_HEADER.unpack_from(buf, 0)
    if magic != abi.EXTENT_MAGIC:
        raise Ext4Error(f"{what}: bad extent header magic {magic:#06x}")
    room = (len(buf) - abi.EXTENT_HEADER.size) // abi.EXTENT_ENTRY_SIZE
    if entries > maximum or maximum > room:
        raise Ext4Error(f"{what}: extent node has {entries} entries, max {maximum}, room {room}")
    if depth > abi.MAX_EXTENT_DEPTH or (want_depth is not None and depth != want_depth):
        raise Ext4Error(f"{what}: extent node depth {depth} (expected "
                        f"{'<= ' + str(abi.MAX_EXTENT_DEPTH) if want_depth is None else want_depth})")
    base = abi.EXTENT_HEADER.size
    for k in range(entries):
        at = base + k * abi.EXTENT_ENTRY_SIZE
        if depth == 0:
            lblk, ln, hi, lo = abi.EXTENT_LEAF.unpack_from(buf, at)
            unwritten = ln > abi.EXT_INIT_MAX_LEN
            if unwritten:
                ln -= abi.EXT_INIT_MAX_LEN
            start = hi << 32 | lo
            if ln == 0 or start + ln > blocks_count:
                raise Ext4Error(f"{what}: extent ({lblk}, {start}, {ln}) outside the filesystem")
            out.append(Extent(lblk, start, ln, unwritten))
        else:
            _, leaf_lo, leaf_hi, _ = abi.EXTENT_INDEX.unpack_from(buf, at)
            child = leaf_hi << 32 | leaf_lo
            if child >= blocks_count:
                raise Ext4Error(f"{what}: extent index points at block {child}, outside the "
                                "filesystem")
            _node(read_block(child), read_block, blocks_count, depth - 1, out, what)


def block_map(i_block: bytes, nblocks: int, block_size: int, read_block, blocks_count: int,
              what="inode") -> list[Extent]:
    """Runs of the classic block map (12 direct pointers, then single, double and triple
    indirect blocks) covering the first ``nblocks`` file blocks; holes are left out."""
    ptrs = struct.unpack_from("<15I", i_block, 0)
    per = block_size // 4
    out: list[Extent] = []
    logical = 0

    def add(phys):
        nonlocal logical
        if phys:
            if phys >= blocks_count:
                raise Ext4Error(f"{what}: block pointer {phys} outside the filesystem")
            last = out[-1] if out else None
            if last and last.logical + last.length == logical and \
                    last.physical + last.length == phys:
                out[-1] = last._replace(length=last.length + 1)
            else:
                out.append(Extent(logical, phys, 1, False))
        logical += 1

    def indirect(blk, level):
        nonlocal logical
        span = per ** level
        if not blk:
            logical += span
            return
        if blk >= blocks_count:
            raise Ext4Error(f"{what}: indirect block {blk} outside the filesystem")
        for p in struct.unpack_from(f"<{per}I", read_block(blk), 0):
            if logical >= nblocks:
                return
            if level == 1:
                add(p)
            else:
                indirect(p, level - 1)

    for p in ptrs[:abi.N_DIRECT]:
        if logical >= nblocks:
            return out
        add(p)
    for level, p in enumerate(ptrs[abi.N_DIRECT:], start=1):
        if logical >= nblocks:
            break
        indirect(p, level)
    return out
