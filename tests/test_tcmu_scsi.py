"""SCSI emulation through the ring: every command of spec §9.2 (+ READ CAPACITY(10), UNMAP),
served by the real daemon and engine over the fake kernel."""

import os
import struct

import pytest

from overlaybd.abi import scsi as S
from tests.helpers.tcmu import SERIAL, file_bytes, sense_of

MiB = 1 << 20


def inquiry(evpd, page, alloc=255):
    return bytes([S.INQUIRY, evpd, page]) + struct.pack(">H", alloc) + b"\0"


def test_inquiry_standard(rw):
    c = rw.run(inquiry(0, 0, 96), data_in_len=96)
    assert c.status == S.GOOD
    d = c.data[:36]
    assert d[:8] == bytes([0, 0, 5, 2, 69, 8, 0, 2])
    assert d[8:16] == b"LIO-ORG "
    assert d[16:32] == b"TCMU device     "
    assert d[32:36] == b"0002"


def test_inquiry_truncated_to_allocation_length(rw):
    c = rw.run(inquiry(0, 0, 5), data_in_len=5)
    assert c.data == bytes([0, 0, 5, 2, 69])


def test_inquiry_page_without_evpd_is_invalid(rw):
    c = rw.run(inquiry(0, 0x80), data_in_len=255)
    assert c.status == S.CHECK_CONDITION
    assert c.sense[:18] == S.fixed_sense(S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)


def test_vpd_supported_pages(rw):
    c = rw.run(inquiry(1, 0), data_in_len=255)
    assert c.data[:10] == bytes([0, 0, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2])


def test_vpd_serial(rw):
    c = rw.run(inquiry(1, 0x80), data_in_len=255)
    sn = SERIAL.encode()
    assert c.data[:4] == bytes([0, 0x80, 0, len(sn) + 1])
    assert c.data[4:4 + len(sn)] == sn


def test_vpd_device_identification(rw):
    c = rw.run(inquiry(1, 0x83), data_in_len=255)
    d = c.data
    assert d[:2] == bytes([0, 0x83])
    total = struct.unpack(">H", d[2:4])[0]
    sn = SERIAL.encode()
    # 1: T10 vendor id, ASCII
    p = 4
    assert d[p:p + 4] == bytes([2, 1, 0, 8 + len(sn) + 1])
    assert d[p + 4:p + 12] == b"LIO-ORG " and d[p + 12:p + 12 + len(sn)] == sn
    p += 4 + d[p + 3]
    # 2: NAA 6, company id 00 14 05, then the serial's hex digits one nibble each
    assert d[p:p + 4] == bytes([1, 3, 0, 16])
    digits = [int(ch, 16) for ch in SERIAL if ch in "0123456789abcdefABCDEF"]
    expect = bytearray(b"\x60\x01\x40\x50" + bytes(12))
    expect[3] |= digits[0]
    i, k = 4, 1
    while i < 16:
        expect[i] = (digits[k] << 4) | digits[k + 1]
        i, k = i + 1, k + 2
    assert d[p + 4:p + 20] == bytes(expect)
    p += 20
    # 3: vendor specific: the cfgstring
    cfg = rw.cfgstring.encode()
    assert d[p:p + 4] == bytes([2, 0, 0, len(cfg) + 1])
    assert d[p + 4:p + 4 + len(cfg)] == cfg
    assert total == p + 4 + len(cfg) + 1 - 4


def test_vpd_block_limits(rw):
    d = rw.run(inquiry(1, 0xB0), data_in_len=64).data
    assert d[:6] == bytes([0, 0xB0, 0, 0x3C, 1, 1])
    assert struct.unpack(">II", d[8:16]) == (0, 0)              # max/optimal transfer
    # UNMAP is advertised, so MAXIMUM UNMAP LBA COUNT is not 0 (0 means unsupported): no limit
    assert struct.unpack(">III", d[20:32]) == (0xFFFFFFFF, 4, 0)  # unmap count, descr., gran
    assert d[32] == 0x80                                        # UGAVALID
    assert struct.unpack(">Q", d[36:44])[0] == 0xFFFFFFFF       # max WRITE SAME length


def test_vpd_block_characteristics_and_provisioning(rw):
    d = rw.run(inquiry(1, 0xB1), data_in_len=255).data
    assert d[:64] == bytes([0, 0xB1, 0, 0x3C]) + bytes(60)
    d = rw.run(inquiry(1, 0xB2), data_in_len=255).data
    assert d[:8] == bytes([0, 0xB2, 0, 4, 0, 0xE4, 0, 0])


def test_vpd_unknown_page(rw):
    c = rw.run(inquiry(1, 0x86), data_in_len=255)
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)


def test_test_unit_ready(rw):
    assert rw.run(bytes(6)).status == S.GOOD


def test_read_capacity_16_and_10(rw):
    c = rw.run(bytes([0x9E, 0x10]) + bytes(8) + struct.pack(">I", 32) + bytes(2), data_in_len=32)
    assert c.data == struct.pack(">QI", 8 * MiB // 512 - 1, 512) + bytes([0, 0, 0xC0]) + bytes(17)
    c = rw.run(bytes([0x25]) + bytes(9), data_in_len=8)
    assert c.data == struct.pack(">II", 8 * MiB // 512 - 1, 512)
    c = rw.run(bytes([0x9E, 0x11]) + bytes(14), data_in_len=32)
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_OPCODE)


def mode_sense6(page, alloc=255, sub=0):
    return bytes([S.MODE_SENSE_6, 0, page, sub, alloc, 0])


def mode_sense10(page, alloc=255):
    return bytes([S.MODE_SENSE_10, 0, page, 0, 0, 0, 0]) + struct.pack(">H", alloc) + b"\0"


RW_RECOVERY = bytes([1, 0x0A]) + bytes(10)
CACHING = bytes([8, 0x12]) + bytes(18)
CONTROL = bytes([0x0A, 0x0A, 2, 0, 0, 0x40, 0, 0, 0xFF, 0xFF, 0, 0])


def test_mode_sense_6_all_pages(rw):
    d = rw.run(mode_sense6(0x3F), data_in_len=255).data
    body = RW_RECOVERY + CACHING + CONTROL
    assert d[:4] == bytes([3 + len(body), 0, S.MODE_DPOFUA, 0])
    assert d[4:4 + len(body)] == body
    assert d[4 + len(body):] == bytes(255 - 4 - len(body))


def test_mode_sense_10_single_page(rw):
    d = rw.run(mode_sense10(0x08, 64), data_in_len=64).data
    assert struct.unpack(">H", d[:2])[0] == 6 + 20
    assert d[2:8] == bytes([0, S.MODE_DPOFUA, 0, 0, 0, 0])
    assert d[8:28] == CACHING


def test_mode_sense_write_protect_bit(ro):
    d6 = ro.run(mode_sense6(0x3F, 4), data_in_len=4).data
    assert d6 == bytes([3, 0, 0x80 | S.MODE_DPOFUA, 0])
    d10 = ro.run(mode_sense10(0x0A), data_in_len=255).data
    assert d10[3] == 0x80 | S.MODE_DPOFUA and d10[8:20] == CONTROL


def test_mode_sense_unknown_page(rw):
    c = rw.run(mode_sense6(0x1C), data_in_len=255)
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)


def test_mode_select(rw):
    good = bytes(4) + CONTROL
    ok = rw.run(bytes([S.MODE_SELECT_6, 0x10, 0, 0, len(good), 0]), data_out=good)
    assert ok.status == S.GOOD
    changed = bytes(4) + CONTROL[:2] + b"\x06" + CONTROL[3:]
    c = rw.run(bytes([S.MODE_SELECT_6, 0x10, 0, 0, len(changed), 0]), data_out=changed)
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_PARAM_LIST)
    c = rw.run(bytes([S.MODE_SELECT_6, 0x00, 0, 0, len(good), 0]), data_out=good)   # PF=0
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)


def rw_cdb(op, lba, n):
    if op in (S.READ_6, S.WRITE_6):
        return bytes([op, (lba >> 16) & 0x1F, (lba >> 8) & 0xFF, lba & 0xFF, n & 0xFF, 0])
    if op in (S.READ_10, S.WRITE_10):
        return bytes([op, 0]) + struct.pack(">I", lba) + b"\0" + struct.pack(">H", n) + b"\0"
    if op in (S.READ_12, S.WRITE_12):
        return bytes([op, 0]) + struct.pack(">II", lba, n) + b"\0\0"
    return bytes([op, 0]) + struct.pack(">QI", lba, n) + b"\0\0"


@pytest.mark.parametrize("op", [S.READ_6, S.READ_10, S.READ_12, S.READ_16])
def test_reads_decode_lba_and_length(rw, op):
    lba, n = 0x123, 9
    c = rw.run(rw_cdb(op, lba, n), data_in_len=n * 512, split=1536)
    assert c.status == S.GOOD
    assert c.data == rw.content[lba * 512:(lba + n) * 512]


def test_read6_length_zero_means_256_blocks(rw):
    c = rw.run(rw_cdb(S.READ_6, 1, 0), data_in_len=256 * 512)
    assert c.data == rw.content[512:257 * 512]


@pytest.mark.parametrize("op", [S.WRITE_6, S.WRITE_10, S.WRITE_12, S.WRITE_16])
def test_writes_decode_lba_and_length(rw, op):
    lba, n = 0x1F0 + op, 5
    payload = os.urandom(n * 512)
    c = rw.run(rw_cdb(op, lba, n), data_out=payload, split=1024)
    assert c.status == S.GOOD
    assert file_bytes(rw.path, lba * 512, n * 512) == payload


def test_read16_high_lba_beyond_capacity(rw):
    c = rw.run(rw_cdb(S.READ_16, (1 << 40) + 1, 1), data_in_len=512)
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_LBA_OUT_OF_RANGE)


def test_write_to_read_only_is_write_protected(ro):
    c = ro.run(rw_cdb(S.WRITE_10, 0, 1), data_out=bytes(512))
    assert c.status == S.CHECK_CONDITION
    assert c.sense[:18] == S.fixed_sense(S.DATA_PROTECT, S.ASC_WRITE_PROTECTED)
    assert sense_of(c) == (0x07, 0x2700)
    assert file_bytes(ro.path, 0, 512) == ro.content[:512]
    c = ro.run(bytes([S.WRITE_SAME_16, 0x08]) + struct.pack(">QI", 0, 8) + b"\0\0",
               data_out=bytes(512))
    assert sense_of(c) == (0x07, 0x2700)
    for op in (S.WRITE_12, S.WRITE_16):
        c = ro.run(rw_cdb(op, 0, 1), data_out=bytes(512))
        assert sense_of(c) == (0x07, 0x2700)
    assert file_bytes(ro.path, 0, 512) == ro.content[:512]


@pytest.mark.parametrize("op", ["READ_10", "READ_12", "READ_16", "WRITE_10", "WRITE_12",
                                "WRITE_16"])
@pytest.mark.parametrize("bits", [0x20, 0x40, 0xE0, 0xF8])   # RDPROTECT / WRPROTECT
def test_protect_fields_are_invalid(rw, op, bits):
    opcode = getattr(S, op)
    cdb = bytearray(rw_cdb(opcode, 3, 1))
    cdb[1] |= bits
    write = op.startswith("WRITE")
    c = rw.run(bytes(cdb), **({"data_out": b"\xAA" * 512} if write else {"data_in_len": 512}))
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)
    assert file_bytes(rw.path, 3 * 512, 512) == rw.content[3 * 512:4 * 512]   # nothing written


@pytest.mark.parametrize("op", ["READ_10", "READ_12", "READ_16", "WRITE_10", "WRITE_12",
                                "WRITE_16"])
@pytest.mark.parametrize("bits", [0x10, 0x08, 0x18])          # DPO, FUA (MODE SENSE: DPOFUA)
def test_dpo_fua_are_served(rw, op, bits):
    opcode = getattr(S, op)
    cdb = bytearray(rw_cdb(opcode, 3, 1))
    cdb[1] |= bits
    if op.startswith("WRITE"):
        c = rw.run(bytes(cdb), data_out=b"\xAA" * 512)
        assert c.status == S.GOOD
        assert file_bytes(rw.path, 3 * 512, 512) == b"\xAA" * 512
    else:
        c = rw.run(bytes(cdb), data_in_len=512)
        assert c.status == S.GOOD and c.data == rw.content[3 * 512:4 * 512]


def test_write_same_with_unmap_discards(rw):
    c = rw.run(bytes([S.WRITE_SAME_16, 0x08]) + struct.pack(">QI", 16, 8) + b"\0\0",
               data_out=bytes(512))
    assert c.status == S.GOOD
    assert file_bytes(rw.path, 16 * 512, 8 * 512) == bytes(8 * 512)
    assert file_bytes(rw.path, 24 * 512, 512) == rw.content[24 * 512:25 * 512]
    c = rw.run(bytes([S.WRITE_SAME_10, 0x08, 0, 0, 0, 40, 0, 0, 8, 0]), data_out=bytes(512))
    assert c.status == S.GOOD
    assert file_bytes(rw.path, 40 * 512, 8 * 512) == bytes(8 * 512)


def test_write_same_without_unmap_writes_the_block(rw):
    block = os.urandom(512)
    c = rw.run(bytes([S.WRITE_SAME_16, 0]) + struct.pack(">QI", 16, 8) + b"\0\0", data_out=block)
    assert c.status == S.GOOD
    assert file_bytes(rw.path, 16 * 512, 8 * 512) == block * 8
    assert file_bytes(rw.path, 24 * 512, 512) == rw.content[24 * 512:25 * 512]


def test_unmap_several_descriptors(rw):
    descs = struct.pack(">QI4x", 100, 4) + struct.pack(">QI4x", 300, 2)
    params = struct.pack(">HH4x", 6 + len(descs), len(descs)) + descs
    c = rw.run(bytes([S.UNMAP, 0, 0, 0, 0, 0, 0]) + struct.pack(">H", len(params)) + b"\0",
               data_out=params)
    assert c.status == S.GOOD
    assert file_bytes(rw.path, 100 * 512, 4 * 512) == bytes(4 * 512)
    assert file_bytes(rw.path, 300 * 512, 2 * 512) == bytes(2 * 512)
    assert file_bytes(rw.path, 104 * 512, 512) == rw.content[104 * 512:105 * 512]
    assert file_bytes(rw.path, 299 * 512, 512) == rw.content[299 * 512:300 * 512]


def test_synchronize_cache(rw):
    assert rw.run(bytes([S.SYNCHRONIZE_CACHE_10]) + bytes(9)).status == S.GOOD
    assert rw.run(bytes([S.SYNCHRONIZE_CACHE_16]) + bytes(15)).status == S.GOOD


@pytest.mark.parametrize("op", [0xA4, 0x42 + 0x20, 0x03, 0xC0, 0x7E])
def test_unknown_opcode_sense_bytes(rw, op):
    c = rw.run(bytes([op]) + bytes(15), data_in_len=64)
    assert c.status == S.CHECK_CONDITION
    assert c.sense[:18] == bytes([0x70, 0, 5, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0])
    assert c.sense[18:] == bytes(96 - 18)


def test_empty_serial_and_unreadable_serial(tmp_path):
    from overlaybd.tcmu.scsi import ScsiDisk
    d = ScsiDisk(100, serial="", cfgstring="overlaybd/x")
    r = d.execute(inquiry(1, 0x80), 255)
    assert r.status == S.GOOD and r.data == bytes([0, 0x80, 0, 1, 0])
    r = d.execute(inquiry(1, 0x83), 255)
    assert r.status == S.GOOD and r.data[4:8] == bytes([2, 1, 0, 9])
    r = ScsiDisk(100, serial=None).execute(inquiry(1, 0x80), 255)
    assert r.sense[:18] == S.fixed_sense(S.HARDWARE_ERROR, S.ASC_INTERNAL_TARGET_FAILURE)
