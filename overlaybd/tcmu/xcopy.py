"""EXTENDED COPY (LID1) within one disk, and RECEIVE COPY RESULTS' operating parameters.

:func:`parse` checks a parameter list the way the kernel's own copy manager does and turns it
into block-to-block segments [(source byte offset, destination byte offset, bytes)], or the
:class:`~overlaybd.tcmu.reply.Reply` refusing it.  Every target descriptor must name this
disk (its NAA designator of VPD page 0x83): a copy to or from another device is COPY ABORTED,
COPY TARGET DEVICE NOT REACHABLE.  The copying itself is the engine's (OP_COPY_IN/OP_COPY_OUT
through the device's scratch area, one chunk at a time, see daemon.py).
"""

import struct

from ..abi import scsi as S
from .reply import (
    COPY_ABORTED,
    COPY_TARGET_NOT_REACHABLE,
    GOOD,
    INVALID_CDB,
    INVALID_PARAM_LIST,
    PARAM_LIST_LEN,
    TOO_MANY_SEGMENTS,
    TOO_MANY_TARGETS,
    UNSUPPORTED_SEGMENT,
    UNSUPPORTED_TARGET,
    Reply,
)

MAX_TARGET_DESCRIPTORS = 2
MAX_SEGMENT_DESCRIPTORS = 1
MAX_DESCRIPTOR_LIST = 1024
MAX_SEGMENT_BLOCKS = 0xFFFF            # NUMBER OF BLOCKS is 16 bits in a block-to-block segment


def parameter_length(cdb):
    return struct.unpack_from(">I", cdb, 10)[0]


def parse(disk, cdb, data_len, data_out):
    """The segments of an EXTENDED COPY, [] for an empty parameter list, or a Reply."""
    if cdb[1] & 0x1F:                   # LID4 and the other service actions: not supported
        return INVALID_CDB
    plen = parameter_length(cdb)
    if plen == 0:
        return []
    if plen < S.XCOPY_HEADER:
        return PARAM_LIST_LEN
    data = data_out(min(plen, data_len))
    if len(data) < S.XCOPY_HEADER:
        return PARAM_LIST_LEN
    if data[1] & 0x18 == 0x18 and data[0]:      # LIST ID USAGE 11b needs LIST IDENTIFIER 0
        return INVALID_PARAM_LIST
    tdll = struct.unpack_from(">H", data, 2)[0]
    sdll, inline = struct.unpack_from(">II", data, 8)
    if tdll + sdll > MAX_DESCRIPTOR_LIST or S.XCOPY_HEADER + tdll + sdll + inline > len(data):
        return PARAM_LIST_LEN
    if inline:
        return INVALID_PARAM_LIST           # no inline or held data
    if tdll % S.XCOPY_TARGET_DESC:
        return PARAM_LIST_LEN
    if tdll // S.XCOPY_TARGET_DESC > MAX_TARGET_DESCRIPTORS:
        return TOO_MANY_TARGETS
    targets = []
    for p in range(S.XCOPY_HEADER, S.XCOPY_HEADER + tdll, S.XCOPY_TARGET_DESC):
        r = _target(disk, data[p:p + S.XCOPY_TARGET_DESC])
        if isinstance(r, Reply):
            return r
        targets.append(r)
    segments = []
    p, end = S.XCOPY_HEADER + tdll, S.XCOPY_HEADER + tdll + sdll
    while p < end:
        if end - p < 4:
            return PARAM_LIST_LEN
        kind, desc_len = data[p], struct.unpack_from(">H", data, p + 2)[0]
        if len(segments) == MAX_SEGMENT_DESCRIPTORS:
            return TOO_MANY_SEGMENTS
        if kind != S.XCOPY_SEG_BLOCK_TO_BLOCK:
            return UNSUPPORTED_SEGMENT
        if desc_len != S.XCOPY_SEG_B2B_LEN or p + 4 + desc_len > end:
            return PARAM_LIST_LEN
        r = _segment(disk, data[p:p + 4 + desc_len], len(targets))
        if isinstance(r, Reply):
            return r
        if r[2]:
            segments.append(r)
        p += 4 + desc_len
    return segments


def _target(disk, d):
    if d[0] != S.XCOPY_TARGET_IDENT:
        return UNSUPPORTED_TARGET
    if d[1] >> 6:                        # LU ID TYPE: only LUN (SPC-3 reserves the others)
        return INVALID_PARAM_LIST
    if d[1] & 0x20 or d[1] & 0x1F:       # NUL; a peripheral type other than a block device
        return COPY_ABORTED
    n = d[7]
    if n > 20 or bytes(d[4:8 + n]) != disk.naa_designator():
        return COPY_TARGET_NOT_REACHABLE
    if int.from_bytes(d[29:32], "big") != disk.block_size:
        return COPY_ABORTED
    return True


def _segment(disk, d, ntargets):
    src, dst = struct.unpack_from(">HH", d, 4)
    if src >= ntargets or dst >= ntargets:
        return COPY_TARGET_NOT_REACHABLE
    nblocks = struct.unpack_from(">H", d, 10)[0]
    src_lba, dst_lba = struct.unpack_from(">QQ", d, 12)
    if src_lba + nblocks > disk.num_lbas or dst_lba + nblocks > disk.num_lbas:
        return COPY_ABORTED
    bs = disk.block_size
    return src_lba * bs, dst_lba * bs, nblocks * bs


def operating_parameters(disk, cdb, data_len, data_out):
    """RECEIVE COPY RESULTS, OPERATING PARAMETERS (SPC-4 6.18.4)."""
    if cdb[1] & 0x1F != S.SAI_COPY_OPERATING_PARAMETERS:
        return INVALID_CDB
    alloc = struct.unpack_from(">I", cdb, 10)[0]
    kinds = bytes([S.XCOPY_SEG_BLOCK_TO_BLOCK, S.XCOPY_TARGET_IDENT])
    out = bytearray(44) + kinds
    struct.pack_into(">I", out, 0, len(out) - 4)
    out[4] = 0x01                        # SNLID: list identifiers are not held
    struct.pack_into(">HHIIII", out, 8, MAX_TARGET_DESCRIPTORS, MAX_SEGMENT_DESCRIPTORS,
                     MAX_DESCRIPTOR_LIST, MAX_SEGMENT_BLOCKS * disk.block_size, 0, 0)
    struct.pack_into(">HB", out, 34, 1, 1)   # total / maximum concurrent copies
    out[37] = disk.block_size.bit_length() - 1   # data segment granularity (log2)
    out[43] = len(kinds)
    return Reply(data=bytes(out[:alloc]))


__all__ = ["GOOD", "operating_parameters", "parameter_length", "parse"]
