"""Fixed-size descriptors exchanged through the rings (packed with ``struct``, no pickling).

Part descriptor, ``PART_SIZE`` (128) bytes, little-endian::

    0   u64  tag        engine-wide id of this part (the key of the in-flight table)
    8   u64  offset     byte offset in the device
    16  u32  dev        device number
    20  u32  length     bytes
    24  u8   op         overlaybd.abi.ops.OP_*
    25  u8   niov       iovecs that follow (0..MAX_IOVS)
    26  u16  reserved
    28  u32  reserved
    32  MAX_IOVS x {u64 offset_in_mapping, u32 length}

Completion descriptor, ``COMPLETION_SIZE`` (16) bytes: ``u64 tag, u32 status, u32 reserved``,
packed and unpacked with the :data:`COMPLETION` struct itself.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ..errors import FormatError

PART_SIZE = 128
COMPLETION_SIZE = 16
MAX_IOVS = 8

_HEAD_FMT = "<QQIIBBHI"
_HEAD = struct.Struct(_HEAD_FMT)
_PARTS = [struct.Struct(_HEAD_FMT + "QI" * n) for n in range(MAX_IOVS + 1)]
_PART1 = _PARTS[1]
COMPLETION = struct.Struct("<QII")
assert _PARTS[MAX_IOVS].size == PART_SIZE


class Part(NamedTuple):
    """One piece of a command, executed by one worker."""
    tag: int
    dev: int
    op: int
    offset: int
    length: int
    iovs: tuple  # ((offset_in_mapping, length), ...)


def pack_part(buf, off: int, tag: int, dev: int, op: int, offset: int, length: int, iovs) -> None:
    """Write a part descriptor into ``buf`` at ``off`` (a ring slot)."""
    n = len(iovs)
    if n == 1:
        (moff, ln), = iovs
        _PART1.pack_into(buf, off, tag, offset, dev, length, op, 1, 0, 0, moff, ln)
        return
    if n > MAX_IOVS:
        raise ValueError(f"part {tag}: {n} iovecs, at most {MAX_IOVS} fit a descriptor")
    _PARTS[n].pack_into(buf, off, tag, offset, dev, length, op, n, 0, 0, *[x for iov in iovs for x in iov])


def unpack_part(buf, off: int) -> tuple:
    """``(tag, dev, op, offset, length, iovs)`` of the part descriptor at ``off``: the fields of
    :class:`Part` in order, as a plain tuple (the hot loop unpacks it at once; ``Part(*...)``
    where a named one is wanted).  A bad iovec count raises FormatError."""
    niov = buf[off + 25]
    if niov == 1:
        tag, offset, dev, length, op, _, _, _, moff, ln = _PART1.unpack_from(buf, off)
        return tag, dev, op, offset, length, ((moff, ln),)
    if niov > MAX_IOVS:
        raise FormatError(f"{niov} iovecs (max {MAX_IOVS})", path="part descriptor", field="niov")
    v = _PARTS[niov].unpack_from(buf, off)
    return v[0], v[2], v[4], v[1], v[3], tuple((v[8 + 2 * i], v[9 + 2 * i]) for i in range(niov))
