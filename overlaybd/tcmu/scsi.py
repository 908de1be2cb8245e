"""SCSI emulation of an overlaybd disk (spec §9.2), like photon-libtcmu except where SBC says
otherwise (libiscsi's conformance suite and the kernel's file backstore are the references):
a write to a read-only disk is DATA PROTECT / WRITE PROTECTED (libtcmu: ILLEGAL REQUEST /
INCOMPATIBLE FORMAT), RDPROTECT/WRPROTECT/VRPROTECT are refused as INVALID FIELD IN CDB (no
protection information), DPO is accepted and FUA honoured (MODE SENSE claims DPOFUA: a FUA
write is followed by a flush before it completes), and Block Limits gives a MAXIMUM UNMAP LBA
COUNT, since UNMAP is advertised.

``ScsiDisk.execute(cdb, data_len, data_out)`` answers non-I/O commands itself with a
:class:`Reply` (status, sense, data-in bytes) and turns block I/O into an :class:`Io` (one
engine operation per range).  Beyond upstream: READ CAPACITY(10), UNMAP, VERIFY, WRITE SAME
without UNMAP, WRITE AND VERIFY, COMPARE AND WRITE, EXTENDED COPY within the disk and REPORT
SUPPORTED OPERATION CODES.
The primary commands (INQUIRY, MODE SENSE/SELECT, REPORT SUPPORTED OPERATION CODES) are in
:mod:`overlaybd.tcmu.spc`, EXTENDED COPY's parameter list in :mod:`overlaybd.tcmu.xcopy`.
"""

import struct
from typing import ClassVar

from ..abi import ops
from ..abi import scsi as S
from ..abi.ops import OP_READ, OP_WRITE, ST_GOOD, ST_WRITE_ERR  # (re-exported for the daemon)
from . import spc, xcopy
from .reply import (
    GOOD,
    HW_ERROR,
    INVALID_CDB,
    INVALID_OPCODE,
    INVALID_PARAM_LIST,
    LBA_OUT_OF_RANGE,
    PARAM_LIST_LEN,
    WRITE_PROTECTED,
    Io,
    Reply,
    status_reply,
)

__all__ = ["GOOD", "HW_ERROR", "OP_READ", "OP_WRITE", "ST_GOOD", "ST_WRITE_ERR", "Io", "Reply",
           "ScsiDisk", "lba_and_length", "status_reply"]

_FF4, _FF8 = b"\xff" * 4, b"\xff" * 8


def lba_and_length(cdb):
    """(LBA, transfer length in blocks) of a READ/WRITE/VERIFY/WRITE SAME CDB, by CDB size."""
    n = S.cdb_length(cdb[0])
    if n == 6:
        return ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3], cdb[4] or 256
    if n == 10:
        return struct.unpack_from(">I", cdb, 2)[0], struct.unpack_from(">H", cdb, 7)[0]
    if n == 12:
        return struct.unpack_from(">I", cdb, 2)[0], struct.unpack_from(">I", cdb, 6)[0]
    if n == 16:
        return struct.unpack_from(">Q", cdb, 2)[0], struct.unpack_from(">I", cdb, 10)[0]
    raise ValueError(f"opcode 0x{cdb[0]:02x} has no LBA")


class ScsiDisk:
    """One TCMU disk: 512-byte blocks, unmap enabled, write cache off, WP when read-only."""

    def __init__(self, num_lbas, block_size=512, read_only=False, serial=None, cfgstring="",
                 write_cache=False):
        self.num_lbas = num_lbas
        self.block_size = block_size
        self.read_only = read_only
        self.serial = serial          # configfs wwn/vpd_unit_serial; None: unreadable
        self.cfgstring = cfgstring    # "overlaybd/<config>[;<dev_id>]"
        self.write_cache = write_cache

    # ---- dispatch ----
    def execute(self, cdb, data_len=0, data_out=lambda limit: b""):
        """Handle one CDB.  ``data_out(limit)`` returns the command's data-out bytes."""
        if not cdb:
            return INVALID_OPCODE
        op = cdb[0]
        n = S.cdb_length(op)
        if n == 0 or len(cdb) < n:
            return INVALID_OPCODE
        if op in S.READS or op in S.WRITES:
            return self._rw(cdb, op in S.WRITES)
        handler = self._HANDLERS.get(op)
        if handler is None:
            return INVALID_OPCODE
        return handler(self, cdb, data_len, data_out)

    def _range(self, cdb):
        """(byte offset, byte length) of the CDB's blocks, or the Reply refusing them."""
        lba, nblocks = lba_and_length(cdb)
        if lba + nblocks > self.num_lbas:
            return LBA_OUT_OF_RANGE
        return lba * self.block_size, nblocks * self.block_size

    def _rw(self, cdb, write):
        fua = False
        if S.cdb_length(cdb[0]) > 6:
            if cdb[1] & S.RW_PROTECT:
                return INVALID_CDB
            fua = write and cdb[1] & S.RW_FUA
        if write and self.read_only:
            return WRITE_PROTECTED
        r = self._range(cdb)
        if isinstance(r, Reply) or not r[1]:
            return r if isinstance(r, Reply) else GOOD
        return Io(OP_WRITE if write else OP_READ, [r], r[1], ops.OP_FLUSH if fua else None)

    def _write_verify(self, cdb, data_len, data_out):
        """WRITE AND VERIFY: a write that is on the medium before it completes (a flush
        follows it); BYTCHK's compare of what was just written cannot fail, as in the kernel's
        file backstore."""
        if cdb[1] & S.RW_PROTECT:
            return INVALID_CDB
        if self.read_only:
            return WRITE_PROTECTED
        r = self._range(cdb)
        if isinstance(r, Reply) or not r[1]:
            return r if isinstance(r, Reply) else GOOD
        return Io(OP_WRITE, [r], r[1], ops.OP_FLUSH)

    def _verify(self, cdb, data_len, data_out):
        """VERIFY: BYTCHK 0 checks the range only (the medium is the image: nothing to scan,
        as in the kernel's file backstore); BYTCHK 1 compares the data-out with the medium."""
        if cdb[1] & S.RW_PROTECT:
            return INVALID_CDB
        bytchk = (cdb[1] & S.BYTCHK) >> 1
        if bytchk > 1:
            return INVALID_CDB
        r = self._range(cdb)
        if isinstance(r, Reply) or not r[1] or not bytchk:
            return r if isinstance(r, Reply) else GOOD
        if data_len != r[1]:
            return INVALID_CDB
        return Io(ops.OP_VERIFY, [r], r[1])

    def _test_unit_ready(self, cdb, data_len, data_out):
        return GOOD

    def _sync_cache(self, cdb, data_len, data_out):
        return Io(ops.OP_FLUSH, [(0, 0)])

    def _write_same(self, cdb, data_len, data_out):
        """WRITE SAME(10/16): with UNMAP and a zero block the range is discarded (LBPRZ: it
        reads back as zeros); otherwise the block is written over the range."""
        flags = cdb[1]
        if flags & S.RW_PROTECT or flags & S.WS_ANCHOR or flags & S.WS_NDOB:
            return INVALID_CDB          # no protection information, no anchored LBAs, NDOB
        if self.read_only:
            return WRITE_PROTECTED
        lba, nblocks = lba_and_length(cdb)
        if nblocks == 0:                # WSNZ=1 in the block limits page
            return INVALID_CDB
        r = self._range(cdb)
        if isinstance(r, Reply):
            return r
        if data_len != self.block_size:
            return INVALID_CDB
        if flags & S.WS_UNMAP and not any(data_out(self.block_size)):
            return Io(ops.OP_DISCARD, [r])
        return Io(ops.OP_WRITE_SAME, [r], data_len=self.block_size)

    def _compare_and_write(self, cdb, data_len, data_out):
        """COMPARE AND WRITE: one engine operation in one process (MAXIMUM COMPARE AND WRITE
        LENGTH keeps it inside one chunk), so no write to its blocks runs between the compare
        and the write."""
        if cdb[1] & S.RW_PROTECT:
            return INVALID_CDB
        nblocks = cdb[13]
        if nblocks > spc.MAX_COMPARE_AND_WRITE:
            return INVALID_CDB
        if self.read_only:
            return WRITE_PROTECTED
        lba = struct.unpack_from(">Q", cdb, 2)[0]
        if lba + nblocks > self.num_lbas:
            return LBA_OUT_OF_RANGE
        if not nblocks:
            return GOOD
        length = nblocks * self.block_size
        if data_len != 2 * length:
            return INVALID_CDB
        return Io(ops.OP_COMPARE_WRITE, [(lba * self.block_size, length)], data_len=2 * length,
                  then=ops.OP_FLUSH if cdb[1] & S.RW_FUA else None)

    def _unmap(self, cdb, data_len, data_out):
        if self.read_only:
            return WRITE_PROTECTED
        plen = struct.unpack_from(">H", cdb, 7)[0]
        if plen == 0:
            return GOOD
        if plen < 8:
            return PARAM_LIST_LEN
        data = data_out(min(plen, data_len))
        if len(data) < 8:
            return PARAM_LIST_LEN
        bd_len = struct.unpack_from(">H", data, 2)[0]
        if bd_len % 16 or 8 + bd_len > len(data):
            return PARAM_LIST_LEN
        if bd_len // 16 > spc.MAX_UNMAP_DESCRIPTORS:
            return INVALID_PARAM_LIST
        ranges = []
        for p in range(8, 8 + bd_len, 16):
            lba, nblocks = struct.unpack_from(">QI", data, p)
            if lba + nblocks > self.num_lbas:
                return LBA_OUT_OF_RANGE
            if nblocks:
                ranges.append((lba * self.block_size, nblocks * self.block_size))
        return Io(ops.OP_DISCARD, ranges) if ranges else GOOD

    def _read_capacity_10(self, cdb, data_len, data_out):
        last = min(self.num_lbas - 1, 0xFFFFFFFF)
        return Reply(data=struct.pack(">II", last, self.block_size))

    def naa_designator(self):
        return spc.naa_designator(self.serial) if self.serial is not None else None

    def _extended_copy(self, cdb, data_len, data_out):
        """EXTENDED COPY within this disk: each segment in scratch-sized pieces, read into the
        device's scratch area, then written from it (the daemon runs one copy at a time per
        device, since they share that area)."""
        if self.read_only and xcopy.parameter_length(cdb):
            return WRITE_PROTECTED
        segments = xcopy.parse(self, cdb, data_len, data_out)
        if isinstance(segments, Reply):
            return segments
        steps = []
        for src, dst, n in segments:
            for pos in range(0, n, ops.SCRATCH_SIZE):
                m = min(ops.SCRATCH_SIZE, n - pos)
                steps += [(ops.OP_COPY_IN, src + pos, m, [(0, m)]),
                          (ops.OP_COPY_OUT, dst + pos, m, [(0, m)])]
        if not steps:
            return GOOD
        return Io(ops.OP_COPY_IN, [steps[0][1:3]], steps=steps)

    def _maintenance_in(self, cdb, data_len, data_out):
        if cdb[1] & 0x1F != S.SAI_REPORT_SUPPORTED_OPCODES:
            return INVALID_CDB
        return spc.report_supported_opcodes(self, cdb, data_len, data_out)

    def _service_action_in(self, cdb, data_len, data_out):
        if cdb[1] & 0x1F != S.SAI_READ_CAPACITY_16:
            return INVALID_OPCODE
        buf = bytearray(32)
        struct.pack_into(">QI", buf, 0, self.num_lbas - 1, self.block_size)
        buf[14] = 0xC0                  # LBPME | LBPRZ (unmap enabled)
        alloc = struct.unpack_from(">I", cdb, 10)[0]
        return Reply(data=bytes(buf[:alloc]))

    _HANDLERS: ClassVar[dict] = {
        S.TEST_UNIT_READY: _test_unit_ready,
        S.INQUIRY: spc.inquiry,
        S.SERVICE_ACTION_IN_16: _service_action_in,
        S.MAINTENANCE_IN: _maintenance_in,
        S.READ_CAPACITY_10: _read_capacity_10,
        S.MODE_SENSE_6: spc.mode_sense,
        S.MODE_SENSE_10: spc.mode_sense,
        S.MODE_SELECT_6: spc.mode_select,
        S.MODE_SELECT_10: spc.mode_select,
        S.SYNCHRONIZE_CACHE_10: _sync_cache,
        S.SYNCHRONIZE_CACHE_16: _sync_cache,
        S.WRITE_SAME_10: _write_same,
        S.WRITE_SAME_16: _write_same,
        S.UNMAP: _unmap,
        S.VERIFY_10: _verify,
        S.VERIFY_12: _verify,
        S.VERIFY_16: _verify,
        S.WRITE_VERIFY_10: _write_verify,
        S.WRITE_VERIFY_12: _write_verify,
        S.WRITE_VERIFY_16: _write_verify,
        S.COMPARE_AND_WRITE: _compare_and_write,
        S.EXTENDED_COPY: _extended_copy,
        S.RECEIVE_COPY_RESULTS: xcopy.operating_parameters,
    }

    # REPORT SUPPORTED OPERATION CODES: (opcode, service action or None) -> CDB usage data,
    # the bits of each CDB byte this disk reads (tests check it against _HANDLERS and READS).
    COMMANDS: ClassVar[dict] = {
        (S.TEST_UNIT_READY, None): bytes([S.TEST_UNIT_READY, 0, 0, 0, 0, 0]),
        (S.READ_6, None): bytes([S.READ_6, 0x1F, 0xFF, 0xFF, 0xFF, 0]),
        (S.WRITE_6, None): bytes([S.WRITE_6, 0x1F, 0xFF, 0xFF, 0xFF, 0]),
        (S.INQUIRY, None): bytes([S.INQUIRY, 0x01, 0xFF, 0xFF, 0xFF, 0]),
        (S.MODE_SELECT_6, None): bytes([S.MODE_SELECT_6, 0x11, 0, 0, 0xFF, 0]),
        (S.MODE_SENSE_6, None): bytes([S.MODE_SENSE_6, 0, 0xFF, 0xFF, 0xFF, 0]),
        (S.READ_CAPACITY_10, None): bytes([S.READ_CAPACITY_10]) + bytes(9),
        (S.READ_10, None): bytes([S.READ_10, 0x18]) + _FF4 + bytes([0, 0xFF, 0xFF, 0]),
        (S.WRITE_10, None): bytes([S.WRITE_10, 0x18]) + _FF4 + bytes([0, 0xFF, 0xFF, 0]),
        (S.WRITE_VERIFY_10, None): bytes([S.WRITE_VERIFY_10, 0x12]) + _FF4 + bytes([0, 0xFF, 0xFF, 0]),
        (S.VERIFY_10, None): bytes([S.VERIFY_10, 0x16]) + _FF4 + bytes([0, 0xFF, 0xFF, 0]),
        (S.SYNCHRONIZE_CACHE_10, None): bytes([S.SYNCHRONIZE_CACHE_10]) + bytes(9),
        (S.WRITE_SAME_10, None): bytes([S.WRITE_SAME_10, 0x08]) + _FF4 + bytes([0, 0xFF, 0xFF, 0]),
        (S.UNMAP, None): bytes([S.UNMAP, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
        (S.MODE_SELECT_10, None): bytes([S.MODE_SELECT_10, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
        (S.MODE_SENSE_10, None): bytes([S.MODE_SENSE_10, 0, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0]),
        (S.READ_16, None): bytes([S.READ_16, 0x18]) + _FF8 + _FF4 + bytes(2),
        (S.COMPARE_AND_WRITE, None): bytes([S.COMPARE_AND_WRITE, 0x18]) + _FF8 + bytes([0, 0, 0, 0xFF, 0, 0]),
        (S.WRITE_16, None): bytes([S.WRITE_16, 0x18]) + _FF8 + _FF4 + bytes(2),
        (S.WRITE_VERIFY_16, None): bytes([S.WRITE_VERIFY_16, 0x12]) + _FF8 + _FF4 + bytes(2),
        (S.VERIFY_16, None): bytes([S.VERIFY_16, 0x16]) + _FF8 + _FF4 + bytes(2),
        (S.SYNCHRONIZE_CACHE_16, None): bytes([S.SYNCHRONIZE_CACHE_16]) + bytes(15),
        (S.WRITE_SAME_16, None): bytes([S.WRITE_SAME_16, 0x08]) + _FF8 + _FF4 + bytes(2),
        (S.SERVICE_ACTION_IN_16, S.SAI_READ_CAPACITY_16):
            bytes([S.SERVICE_ACTION_IN_16, S.SAI_READ_CAPACITY_16]) + bytes(8) + _FF4 + bytes(2),
        (S.MAINTENANCE_IN, S.SAI_REPORT_SUPPORTED_OPCODES):
            bytes([S.MAINTENANCE_IN, S.SAI_REPORT_SUPPORTED_OPCODES, 0x87]) + b"\xff" * 7 + bytes(2),
        (S.EXTENDED_COPY, None): bytes([S.EXTENDED_COPY]) + bytes(9) + _FF4 + bytes(2),
        (S.RECEIVE_COPY_RESULTS, S.SAI_COPY_OPERATING_PARAMETERS):
            bytes([S.RECEIVE_COPY_RESULTS, S.SAI_COPY_OPERATING_PARAMETERS]) + bytes(8) + _FF4 + bytes(2),
        (S.READ_12, None): bytes([S.READ_12, 0x18]) + _FF4 + _FF4 + bytes(2),
        (S.WRITE_12, None): bytes([S.WRITE_12, 0x18]) + _FF4 + _FF4 + bytes(2),
        (S.WRITE_VERIFY_12, None): bytes([S.WRITE_VERIFY_12, 0x12]) + _FF4 + _FF4 + bytes(2),
        (S.VERIFY_12, None): bytes([S.VERIFY_12, 0x16]) + _FF4 + _FF4 + bytes(2),
    }
