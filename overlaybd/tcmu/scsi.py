"""SCSI emulation of an overlaybd disk (spec §9.2), like photon-libtcmu except where SBC says
otherwise (libiscsi's conformance suite and the kernel's file backstore are the references):
a write to a read-only disk is DATA PROTECT / WRITE PROTECTED (libtcmu: ILLEGAL REQUEST /
INCOMPATIBLE FORMAT), RDPROTECT/WRPROTECT and DPO/FUA are refused as INVALID FIELD IN CDB
(no protection information; MODE SENSE does not claim DPOFUA), and Block Limits gives a
MAXIMUM UNMAP LBA COUNT, since UNMAP is advertised.

``ScsiDisk.execute(cdb, data_len, data_out)`` answers non-I/O commands itself with a
:class:`Reply` (status, sense, data-in bytes) and turns block I/O into an :class:`Io` (one
engine operation per range).  Beyond upstream, READ CAPACITY(10) and UNMAP are handled.
"""

import struct
from typing import ClassVar

from ..abi import scsi as S
from ..workers.ops import (
    OP_DISCARD,
    OP_FLUSH,
    OP_READ,
    OP_WRITE,
    ST_FLUSH_ERR,
    ST_GOOD,
    ST_READ_ERR,
    ST_WRITE_ERR,
    ST_WRITE_PROTECT,
)

VENDOR = b"LIO-ORG "
PRODUCT = b"TCMU device"
REVISION = b"0002"
MAX_WRITE_SAME_LENGTH = 0xFFFFFFFF
MAX_UNMAP_DESCRIPTORS = 4
MAX_UNMAP_LBAS = 0xFFFFFFFF   # no limit (0 would mean UNMAP is not supported)
MAX_PARAM_LIST = 512     # libtcmu reads parameter lists into 512-byte buffers


class Reply:
    """A command answered without I/O."""

    __slots__ = ("data", "sense", "status")

    def __init__(self, status=S.GOOD, sense=b"", data=b""):
        self.status, self.sense, self.data = status, sense, data

    def __repr__(self):
        return f"Reply(status={self.status}, sense={self.sense.hex()}, data={len(self.data)}B)"


class Io:
    """Block I/O for the engine: ``op`` over ``ranges`` [(byte offset, byte length)]."""

    __slots__ = ("op", "ranges")

    def __init__(self, op, ranges):
        self.op, self.ranges = op, ranges

    def __repr__(self):
        return f"Io(op={self.op}, ranges={self.ranges})"


def check(key, asc):
    return Reply(S.CHECK_CONDITION, S.fixed_sense(key, asc))


GOOD = Reply()
INVALID_OPCODE = check(S.ILLEGAL_REQUEST, S.ASC_INVALID_OPCODE)
INVALID_CDB = check(S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)
INVALID_PARAM_LIST = check(S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_PARAM_LIST)
PARAM_LIST_LEN = check(S.ILLEGAL_REQUEST, S.ASC_PARAM_LIST_LENGTH_ERROR)
LBA_OUT_OF_RANGE = check(S.ILLEGAL_REQUEST, S.ASC_LBA_OUT_OF_RANGE)
WRITE_PROTECTED = check(S.DATA_PROTECT, S.ASC_WRITE_PROTECTED)
READ_ERROR = check(S.MEDIUM_ERROR, S.ASC_READ_ERROR)
WRITE_ERROR = check(S.MEDIUM_ERROR, S.ASC_WRITE_ERROR)
HW_ERROR = check(S.HARDWARE_ERROR, S.ASC_INTERNAL_TARGET_FAILURE)

STATUS_REPLY = {ST_GOOD: GOOD, ST_READ_ERR: READ_ERROR, ST_WRITE_ERR: WRITE_ERROR,
                ST_WRITE_PROTECT: WRITE_PROTECTED, ST_FLUSH_ERR: WRITE_ERROR}


def status_reply(st):
    """The SCSI answer to an engine status (overlaybd.workers.ops.ST_*)."""
    return STATUS_REPLY.get(st, HW_ERROR)


def lba_and_length(cdb):
    """(LBA, transfer length in blocks) of a READ/WRITE/WRITE SAME CDB, by CDB size."""
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


def alloc_length(cdb):
    """Allocation/parameter list length field of INQUIRY, MODE SENSE/SELECT (6/10)."""
    if cdb[0] == S.INQUIRY:
        return struct.unpack_from(">H", cdb, 3)[0]
    if S.cdb_length(cdb[0]) == 6:
        return cdb[4]
    return struct.unpack_from(">H", cdb, 7)[0]


def _hexval(c):
    try:
        return int(c, 16)
    except ValueError:
        return None


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

    def _rw(self, cdb, write):
        if S.cdb_length(cdb[0]) > 6 and cdb[1] & S.RW_PROTECT_DPO_FUA:
            return INVALID_CDB
        if write and self.read_only:
            return WRITE_PROTECTED
        lba, nblocks = lba_and_length(cdb)
        if lba + nblocks > self.num_lbas:
            return LBA_OUT_OF_RANGE
        if nblocks == 0:
            return GOOD
        return Io(OP_WRITE if write else OP_READ,
                  [(lba * self.block_size, nblocks * self.block_size)])

    def _test_unit_ready(self, cdb, data_len, data_out):
        return GOOD

    def _sync_cache(self, cdb, data_len, data_out):
        return Io(OP_FLUSH, [(0, 0)])

    def _write_same(self, cdb, data_len, data_out):
        if not cdb[1] & 0x08:           # only WRITE SAME with UNMAP
            return INVALID_OPCODE
        if self.read_only:
            return WRITE_PROTECTED
        lba, nblocks = lba_and_length(cdb)
        if nblocks == 0:                # WSNZ=1 in the block limits page
            return INVALID_CDB
        if lba + nblocks > self.num_lbas:
            return LBA_OUT_OF_RANGE
        return Io(OP_DISCARD, [(lba * self.block_size, nblocks * self.block_size)])

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
        if bd_len // 16 > MAX_UNMAP_DESCRIPTORS:
            return INVALID_PARAM_LIST
        ranges = []
        for p in range(8, 8 + bd_len, 16):
            lba, nblocks = struct.unpack_from(">QI", data, p)
            if lba + nblocks > self.num_lbas:
                return LBA_OUT_OF_RANGE
            if nblocks:
                ranges.append((lba * self.block_size, nblocks * self.block_size))
        return Io(OP_DISCARD, ranges) if ranges else GOOD

    def _read_capacity_10(self, cdb, data_len, data_out):
        last = min(self.num_lbas - 1, 0xFFFFFFFF)
        return Reply(data=struct.pack(">II", last, self.block_size))

    def _service_action_in(self, cdb, data_len, data_out):
        if cdb[1] & 0x1F != S.SAI_READ_CAPACITY_16:
            return INVALID_OPCODE
        buf = bytearray(32)
        struct.pack_into(">QI", buf, 0, self.num_lbas - 1, self.block_size)
        buf[14] = 0xC0                  # LBPME | LBPRZ (unmap enabled)
        alloc = struct.unpack_from(">I", cdb, 10)[0]
        return Reply(data=bytes(buf[:alloc]))

    # ---- INQUIRY ----
    def _inquiry(self, cdb, data_len, data_out):
        alloc = alloc_length(cdb)
        if cdb[1] & 0x01:
            data = self._vpd(cdb[2])
            if data is None or isinstance(data, Reply):
                return data or INVALID_CDB
        elif cdb[2]:
            return INVALID_CDB
        else:
            data = self.standard_inquiry()
        return Reply(data=data[:alloc])

    def standard_inquiry(self):
        buf = bytearray(36)
        buf[2] = 0x05                   # SPC-3
        buf[3] = 0x02                   # response data format
        buf[4] = 31                     # additional length
        buf[5] = 0x08                   # 3PC
        buf[7] = 0x02                   # CmdQue
        buf[8:16] = VENDOR
        buf[16:32] = PRODUCT.ljust(16, b" ")
        buf[32:36] = REVISION
        return bytes(buf)

    def _vpd(self, page):
        if page == S.VPD_SUPPORTED:
            pages = bytes([S.VPD_SUPPORTED, S.VPD_SERIAL, S.VPD_DEVICE_ID, S.VPD_BLOCK_LIMITS,
                           S.VPD_BLOCK_DEVICE_CHARACTERISTICS, S.VPD_LOGICAL_BLOCK_PROVISIONING])
            return bytes([0, page, 0, len(pages)]) + pages
        if page == S.VPD_SERIAL:
            if self.serial is None:
                return HW_ERROR
            sn = self.serial.encode()[:255]
            # page length counts a NUL terminator, as libtcmu's does
            return bytes([0, page, 0, len(sn) + 1]) + sn + b"\0"
        if page == S.VPD_DEVICE_ID:
            return self._vpd_device_id()
        if page == S.VPD_BLOCK_LIMITS:
            buf = bytearray(64)
            buf[1] = page
            struct.pack_into(">H", buf, 2, 0x3C)
            buf[4] = 0x01               # WSNZ
            buf[5] = 0x01               # maximum COMPARE AND WRITE length
            # max / optimal transfer length: 0 (no limit); unmap enabled:
            struct.pack_into(">IIII", buf, 20, MAX_UNMAP_LBAS, MAX_UNMAP_DESCRIPTORS, 0, 0)
            buf[32] |= 0x80             # UGAVALID
            struct.pack_into(">Q", buf, 36, MAX_WRITE_SAME_LENGTH)
            return bytes(buf)
        if page == S.VPD_BLOCK_DEVICE_CHARACTERISTICS:
            buf = bytearray(64)
            buf[1] = page
            struct.pack_into(">H", buf, 2, 0x3C)
            return bytes(buf)
        if page == S.VPD_LOGICAL_BLOCK_PROVISIONING:
            return bytes([0, page, 0, 4, 0, 0xE4, 0, 0])    # LBPU|LBPWS|LBPWS10|LBPRZ
        return None

    def _vpd_device_id(self):
        if self.serial is None:
            return HW_ERROR
        sn = self.serial.encode()[:240]
        out = bytearray([0, S.VPD_DEVICE_ID, 0, 0])
        # 1: T10 vendor identification, ASCII: "LIO-ORG " + serial (+ NUL counted)
        body = VENDOR + sn + b"\0"
        out += bytes([0x02, 0x01, 0, len(body)]) + body
        # 2: NAA IEEE registered extended (type 6), OpenFabrics company id 00 14 05, then one
        #    nibble per hex digit of the serial (what the kernel does too)
        naa = bytearray(16)
        naa[0:4] = b"\x60\x01\x40\x50"
        i, high = 3, False
        for c in self.serial:
            if i >= 16:
                break
            v = _hexval(c)
            if v is None:
                continue
            if not high:
                naa[i] |= v
                i += 1
                high = True
            else:
                naa[i] = v << 4
                high = False
        out += bytes([0x01, 0x03, 0, 16]) + naa
        # 3: vendor specific, ASCII: the cfgstring (+ NUL counted)
        cfg = self.cfgstring.encode()[:200] + b"\0"
        out += bytes([0x02, 0x00, 0, len(cfg)]) + cfg
        struct.pack_into(">H", out, 2, len(out) - 4)
        return bytes(out)

    # ---- MODE SENSE / SELECT ----
    def _mode_page(self, page):
        if page == S.MODE_PAGE_RW_RECOVERY:
            return bytes([0x01, 0x0A]) + bytes(10)
        if page == S.MODE_PAGE_CACHING:
            buf = bytearray(20)
            buf[0], buf[1] = 0x08, 0x12
            if self.write_cache:
                buf[2] = 0x04           # WCE
            return bytes(buf)
        if page == S.MODE_PAGE_CONTROL:
            buf = bytearray(12)
            buf[0], buf[1] = 0x0A, 0x0A
            buf[2] = 0x02               # GLTSD
            buf[5] = 0x40               # TAS
            buf[8], buf[9] = 0xFF, 0xFF  # busy timeout: unlimited
            return bytes(buf)
        return None

    _PAGES = (S.MODE_PAGE_RW_RECOVERY, S.MODE_PAGE_CACHING, S.MODE_PAGE_CONTROL)

    def _mode_sense(self, cdb, data_len, data_out):
        ten = cdb[0] == S.MODE_SENSE_10
        page, subpage = cdb[2] & 0x3F, cdb[3]
        alloc = alloc_length(cdb)
        if not alloc:
            return GOOD
        hdr = 8 if ten else 4
        if hdr > alloc:
            return INVALID_CDB
        if page == S.MODE_PAGE_ALL:
            wanted = self._PAGES
        elif page in self._PAGES and subpage == 0:
            wanted = (page,)
        else:
            return INVALID_CDB
        body = bytearray()
        for p in wanted:
            data = self._mode_page(p)
            if hdr + len(body) + len(data) > alloc:
                break
            if not ten and hdr + len(body) + len(data) >= 255:
                break
            body += data
        buf = bytearray(alloc)
        used = hdr + len(body)
        buf[hdr:used] = body
        wp = 0x80 if self.read_only else 0
        if ten:
            struct.pack_into(">H", buf, 0, used - 2)
            buf[3] = wp
        else:
            buf[0] = used - 1
            buf[2] = wp
        return Reply(data=bytes(buf))

    def _mode_select(self, cdb, data_len, data_out):
        ten = cdb[0] == S.MODE_SELECT_10
        hdr = 8 if ten else 4
        plen = alloc_length(cdb)
        if not plen:
            return GOOD
        data = data_out(min(plen, data_len))
        if len(data) >= MAX_PARAM_LIST:
            return PARAM_LIST_LEN
        if not cdb[1] & 0x10 or cdb[1] & 0x01:      # PF must be 1, SP 0
            return INVALID_CDB
        if len(data) <= hdr:
            return PARAM_LIST_LEN
        page = self._mode_page(data[hdr] & 0x3F)
        if page is None:
            return INVALID_CDB
        if plen < hdr + len(page) or len(data) < hdr + len(page):
            return PARAM_LIST_LEN
        if data[hdr:hdr + len(page)] != page:
            return INVALID_PARAM_LIST
        return GOOD

    _HANDLERS: ClassVar[dict] = {
        S.TEST_UNIT_READY: _test_unit_ready,
        S.INQUIRY: _inquiry,
        S.SERVICE_ACTION_IN_16: _service_action_in,
        S.READ_CAPACITY_10: _read_capacity_10,
        S.MODE_SENSE_6: _mode_sense,
        S.MODE_SENSE_10: _mode_sense,
        S.MODE_SELECT_6: _mode_select,
        S.MODE_SELECT_10: _mode_select,
        S.SYNCHRONIZE_CACHE_10: _sync_cache,
        S.SYNCHRONIZE_CACHE_16: _sync_cache,
        S.WRITE_SAME_10: _write_same,
        S.WRITE_SAME_16: _write_same,
        S.UNMAP: _unmap,
    }
