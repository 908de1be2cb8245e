"""The primary (SPC) commands of an overlaybd disk: INQUIRY and its VPD pages, MODE SENSE /
MODE SELECT, REPORT SUPPORTED OPERATION CODES.  Each is ``f(disk, cdb, data_len, data_out)``
returning a :class:`~overlaybd.tcmu.reply.Reply`; ``disk`` is the
:class:`~overlaybd.tcmu.scsi.ScsiDisk` (its geometry, serial, cfgstring and command table)."""

import struct

from ..abi import scsi as S
from .reply import GOOD, HW_ERROR, INVALID_CDB, INVALID_PARAM_LIST, PARAM_LIST_LEN, Reply

VENDOR = b"LIO-ORG "
PRODUCT = b"TCMU device"
REVISION = b"0002"
MAX_WRITE_SAME_LENGTH = 0xFFFFFFFF
MAX_UNMAP_DESCRIPTORS = 4
MAX_UNMAP_LBAS = 0xFFFFFFFF   # no limit (0 would mean UNMAP is not supported)
MAX_COMPARE_AND_WRITE = 1     # blocks: never more than one chunk, so one worker runs it
MAX_PARAM_LIST = 512          # libtcmu reads parameter lists into 512-byte buffers
STANDARD_INQUIRY_LEN = 74     # through the eight version descriptors (bytes 58-73)
VERSIONS = (S.VERSION_SAM_4, S.VERSION_SPC_3, S.VERSION_SBC_3)


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


# ---- INQUIRY ----
def inquiry(disk, cdb, data_len, data_out):
    alloc = alloc_length(cdb)
    if cdb[1] & 0x01:
        data = vpd(disk, cdb[2])
        if data is None or isinstance(data, Reply):
            return data or INVALID_CDB
    elif cdb[2]:
        return INVALID_CDB
    else:
        data = standard_inquiry()
    return Reply(data=data[:alloc])


def standard_inquiry():
    buf = bytearray(STANDARD_INQUIRY_LEN)
    buf[2] = 0x05                   # SPC-3
    buf[3] = 0x02                   # response data format
    buf[4] = STANDARD_INQUIRY_LEN - 5
    buf[5] = 0x08                   # 3PC
    buf[7] = 0x02                   # CmdQue
    buf[8:16] = VENDOR
    buf[16:32] = PRODUCT.ljust(16, b" ")
    buf[32:36] = REVISION
    for i, v in enumerate(VERSIONS):
        struct.pack_into(">H", buf, 58 + 2 * i, v)
    return bytes(buf)


def vpd(disk, page):
    if page == S.VPD_SUPPORTED:
        pages = bytes([S.VPD_SUPPORTED, S.VPD_SERIAL, S.VPD_DEVICE_ID, S.VPD_BLOCK_LIMITS,
                       S.VPD_BLOCK_DEVICE_CHARACTERISTICS, S.VPD_LOGICAL_BLOCK_PROVISIONING])
        return bytes([0, page, 0, len(pages)]) + pages
    if page == S.VPD_SERIAL:
        if disk.serial is None:
            return HW_ERROR
        sn = disk.serial.encode()[:255]
        # page length counts a NUL terminator, as libtcmu's does
        return bytes([0, page, 0, len(sn) + 1]) + sn + b"\0"
    if page == S.VPD_DEVICE_ID:
        return _vpd_device_id(disk)
    if page == S.VPD_BLOCK_LIMITS:
        buf = bytearray(64)
        buf[1] = page
        struct.pack_into(">H", buf, 2, 0x3C)
        buf[4] = 0x01               # WSNZ
        buf[5] = MAX_COMPARE_AND_WRITE
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


def _vpd_device_id(disk):
    if disk.serial is None:
        return HW_ERROR
    sn = disk.serial.encode()[:240]
    out = bytearray([0, S.VPD_DEVICE_ID, 0, 0])
    # 1: T10 vendor identification, ASCII: "LIO-ORG " + serial (+ NUL counted)
    body = VENDOR + sn + b"\0"
    out += bytes([0x02, 0x01, 0, len(body)]) + body
    out += naa_designator(disk.serial)        # 2: NAA
    # 3: vendor specific, ASCII: the cfgstring (+ NUL counted)
    cfg = disk.cfgstring.encode()[:200] + b"\0"
    out += bytes([0x02, 0x00, 0, len(cfg)]) + cfg
    struct.pack_into(">H", out, 2, len(out) - 4)
    return bytes(out)


def naa_designator(serial):
    """The NAA designation descriptor of VPD page 0x83 (binary, LU, 16 bytes): IEEE registered
    extended (type 6), OpenFabrics company id 00 14 05, then one nibble per hex digit of the
    serial (what the kernel does too).  EXTENDED COPY target descriptors name a disk by it."""
    naa = bytearray(16)
    naa[0:4] = b"\x60\x01\x40\x50"
    i, high = 3, False
    for c in serial:
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
    return bytes([0x01, 0x03, 0, 16]) + naa


# ---- MODE SENSE / SELECT ----
def mode_page(disk, page):
    if page == S.MODE_PAGE_RW_RECOVERY:
        return bytes([0x01, 0x0A]) + bytes(10)
    if page == S.MODE_PAGE_CACHING:
        buf = bytearray(20)
        buf[0], buf[1] = 0x08, 0x12
        if disk.write_cache:
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


PAGES = (S.MODE_PAGE_RW_RECOVERY, S.MODE_PAGE_CACHING, S.MODE_PAGE_CONTROL)


def mode_sense(disk, cdb, data_len, data_out):
    ten = cdb[0] == S.MODE_SENSE_10
    page, subpage = cdb[2] & 0x3F, cdb[3]
    alloc = alloc_length(cdb)
    if not alloc:
        return GOOD
    hdr = 8 if ten else 4
    if hdr > alloc:
        return INVALID_CDB
    if page == S.MODE_PAGE_ALL:
        wanted = PAGES
    elif page in PAGES and subpage == 0:
        wanted = (page,)
    else:
        return INVALID_CDB
    body = bytearray()
    for p in wanted:
        data = mode_page(disk, p)
        if hdr + len(body) + len(data) > alloc:
            break
        if not ten and hdr + len(body) + len(data) >= 255:
            break
        body += data
    buf = bytearray(alloc)
    used = hdr + len(body)
    buf[hdr:used] = body
    # DPOFUA: DPO is a hint we may ignore, FUA writes are flushed before they complete
    param = S.MODE_DPOFUA | (S.MODE_WP if disk.read_only else 0)
    if ten:
        struct.pack_into(">H", buf, 0, used - 2)
        buf[3] = param
    else:
        buf[0] = used - 1
        buf[2] = param
    return Reply(data=bytes(buf))


def mode_select(disk, cdb, data_len, data_out):
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
    page = mode_page(disk, data[hdr] & 0x3F)
    if page is None:
        return INVALID_CDB
    if plen < hdr + len(page) or len(data) < hdr + len(page):
        return PARAM_LIST_LEN
    if data[hdr:hdr + len(page)] != page:
        return INVALID_PARAM_LIST
    return GOOD


# ---- REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN, service action 0x0C) ----
_TIMEOUTS = struct.pack(">HxxII", 10, 0, 0)     # command timeouts descriptor: none stated


def report_supported_opcodes(disk, cdb, data_len, data_out):
    """``disk.COMMANDS`` maps (opcode, service action or None) to the CDB usage data."""
    options, rctd = cdb[2] & 0x07, cdb[2] & 0x80
    opcode, sa = cdb[3], struct.unpack_from(">H", cdb, 4)[0]
    alloc = struct.unpack_from(">I", cdb, 6)[0]
    commands = disk.COMMANDS
    timeouts = _TIMEOUTS if rctd else b""
    if options == 0:
        out = bytearray(4)
        for (op, action), usage in sorted(commands.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            flags = (0x01 if action is not None else 0) | (0x02 if rctd else 0)
            out += struct.pack(">BxHxBH", op, action or 0, flags, len(usage)) + timeouts
        struct.pack_into(">I", out, 0, len(out) - 4)
        return Reply(data=bytes(out[:alloc]))
    if options not in (1, 2, 3):
        return INVALID_CDB
    with_sa = any(op == opcode and action is not None for op, action in commands)
    if options == 1 and with_sa or options == 2 and not with_sa and (opcode, None) in commands:
        return INVALID_CDB
    usage = commands.get((opcode, sa if with_sa else None))
    if usage is None:
        return Reply(data=bytes([0, 0x01, 0, 0])[:alloc])     # SUPPORT 001b: not supported
    out = bytes([0, (0x80 if rctd else 0) | 0x03]) + struct.pack(">H", len(usage)) + usage + timeouts
    return Reply(data=out[:alloc])
