"""Block commands beyond READ/WRITE, through the real daemon and inline engine over the fake
kernel (the references are libiscsi's conformance tests and the kernel's file backstore):
VERIFY, WRITE AND VERIFY, WRITE SAME, COMPARE AND WRITE, FUA, REPORT SUPPORTED OPERATION
CODES and the standard INQUIRY's version descriptors."""

import os
import struct

import pytest

from overlaybd.abi import scsi as S
from overlaybd.tcmu.reply import INVALID_OPCODE
from overlaybd.tcmu.scsi import ScsiDisk
from tests.helpers.tcmu import file_bytes, sense_of

MiB = 1 << 20
BS = 512


def cdb_of(opcode, lba, nblocks, flags=0):
    n = S.cdb_length(opcode)
    if n == 10:
        return bytes([opcode, flags]) + struct.pack(">IxHx", lba, nblocks)
    if n == 12:
        return bytes([opcode, flags]) + struct.pack(">IIxx", lba, nblocks)
    return bytes([opcode, flags]) + struct.pack(">QIxx", lba, nblocks)


def miscompare_at(c):
    """The INFORMATION field of a MISCOMPARE, checking status, key, ASC and VALID."""
    assert c.status == S.CHECK_CONDITION
    assert sense_of(c) == (S.MISCOMPARE, S.ASC_MISCOMPARE_DURING_VERIFY)
    assert c.sense[0] & 0x80, "VALID: the INFORMATION field holds the offset"
    return struct.unpack(">I", c.sense[3:7])[0]


class FsyncSpy:
    """Records, for each fsync, how many commands the ring still had in flight."""

    def __init__(self, h, monkeypatch):
        self.calls = []
        real = os.fsync
        ring = h.daemon.devices[0].ring

        def spy(fd):
            self.calls.append(ring.inflight)
            real(fd)
        monkeypatch.setattr(os, "fsync", spy)


# ---- VERIFY ----
@pytest.mark.parametrize("opcode", S.VERIFIES)
def test_verify_bytchk_compares_with_the_medium(rw, opcode):
    lba, n = 40, 16
    want = rw.content[lba * BS:(lba + n) * BS]
    c = rw.run(cdb_of(opcode, lba, n, 0x02), data_out=want)
    assert c.status == S.GOOD
    bad = bytearray(want)
    bad[3 * BS + 77] ^= ord("X")
    c = rw.run(cdb_of(opcode, lba, n, 0x02), data_out=bytes(bad))
    assert miscompare_at(c) == 3 * BS + 77
    assert file_bytes(rw.path, lba * BS, n * BS) == want          # VERIFY writes nothing


@pytest.mark.parametrize("opcode", S.VERIFIES)
def test_verify_fields(rw, opcode):
    assert rw.run(cdb_of(opcode, 0, 8)).status == S.GOOD                 # BYTCHK 0: range only
    assert rw.run(cdb_of(opcode, 0, 0, 0x02)).status == S.GOOD           # 0 blocks
    assert rw.run(cdb_of(opcode, 0, 1, 0x12), data_out=rw.content[:BS]).status == S.GOOD  # DPO
    for flags in (0x20, 0x40, 0xE0, 0x04, 0x06):                         # VRPROTECT, BYTCHK 2, 3
        c = rw.run(cdb_of(opcode, 0, 1, flags | 0x02), data_out=rw.content[:BS])
        assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB), hex(flags)
    num = 8 * MiB // BS
    for lba, n in ((num, 1), (num + 1, 0), (num - 1, 2)):
        c = rw.run(cdb_of(opcode, lba, n, 0x02), data_out=bytes(n * BS))
        assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_LBA_OUT_OF_RANGE)
    c = rw.run(cdb_of(opcode, 0, 2, 0x02), data_out=rw.content[:BS])   # half the data-out
    assert c.status == S.CHECK_CONDITION


def test_verify_reads_a_read_only_disk(ro):
    c = ro.run(cdb_of(S.VERIFY_16, 8, 2, 0x02), data_out=ro.content[8 * BS:10 * BS])
    assert c.status == S.GOOD


# ---- WRITE AND VERIFY, FUA ----
@pytest.mark.parametrize("opcode", S.WRITE_VERIFIES)
def test_write_and_verify_is_written_and_flushed_before_it_completes(rw, opcode, monkeypatch):
    spy = FsyncSpy(rw, monkeypatch)
    data = os.urandom(4 * BS)
    c = rw.run(cdb_of(opcode, 20, 4, 0x02), data_out=data)
    assert c.status == S.GOOD
    assert file_bytes(rw.path, 20 * BS, 4 * BS) == data
    assert spy.calls == [1]          # one fsync, while the command was still in flight
    c = rw.run(cdb_of(opcode, 20, 1, 0x20), data_out=data[:BS])       # WRPROTECT
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)


@pytest.mark.parametrize("opcode", [S.WRITE_10, S.WRITE_12, S.WRITE_16])
def test_fua_write_is_flushed_before_it_completes_and_plain_is_not(rw, opcode, monkeypatch):
    spy = FsyncSpy(rw, monkeypatch)
    data = os.urandom(2 * BS)
    assert rw.run(cdb_of(opcode, 30, 2), data_out=data).status == S.GOOD
    assert spy.calls == []
    assert rw.run(cdb_of(opcode, 32, 2, S.RW_FUA), data_out=data).status == S.GOOD
    assert spy.calls == [1]
    assert file_bytes(rw.path, 30 * BS, 4 * BS) == data * 2


def test_write_and_verify_on_a_read_only_disk(ro):
    c = ro.run(cdb_of(S.WRITE_VERIFY_10, 0, 1), data_out=bytes(BS))
    assert sense_of(c) == (S.DATA_PROTECT, S.ASC_WRITE_PROTECTED)


# ---- WRITE SAME ----
@pytest.mark.parametrize("opcode", [S.WRITE_SAME_10, S.WRITE_SAME_16])
def test_write_same_fields(rw, opcode):
    block = os.urandom(BS)
    c = rw.run(cdb_of(opcode, 64, 300), data_out=block)
    assert c.status == S.GOOD
    assert file_bytes(rw.path, 64 * BS, 300 * BS) == block * 300
    c = rw.run(cdb_of(opcode, 400, 4, S.WS_UNMAP), data_out=block)     # UNMAP, data not zero
    assert c.status == S.GOOD
    assert file_bytes(rw.path, 400 * BS, 4 * BS) == block * 4          # so it is written
    for flags in (S.WS_ANCHOR, S.WS_ANCHOR | S.WS_UNMAP, 0x20):
        c = rw.run(cdb_of(opcode, 0, 1, flags), data_out=bytes(BS))
        assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB), hex(flags)
    for size in (BS // 2, 2 * BS):                                      # wrong data-out size
        c = rw.run(cdb_of(opcode, 0, 1), data_out=bytes(size))
        assert c.status == S.CHECK_CONDITION
    assert file_bytes(rw.path, 0, BS) == rw.content[:BS]
    if opcode == S.WRITE_SAME_16:
        c = rw.run(cdb_of(opcode, 0, 1, S.WS_NDOB))
        assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)


def test_write_same_on_a_read_only_disk(ro):
    c = ro.run(cdb_of(S.WRITE_SAME_10, 0, 1), data_out=bytes(BS))
    assert sense_of(c) == (S.DATA_PROTECT, S.ASC_WRITE_PROTECTED)


# ---- COMPARE AND WRITE ----
def caw(lba, nblocks, flags=0):
    return bytes([S.COMPARE_AND_WRITE, flags]) + struct.pack(">Q", lba) + bytes(3) + \
        bytes([nblocks, 0, 0])


def test_compare_and_write(rw, monkeypatch):
    lba = 9
    old = rw.content[lba * BS:(lba + 1) * BS]
    new = os.urandom(BS)
    cmp = bytearray(old)
    cmp[BS - 27] ^= 0x02
    c = rw.run(caw(lba, 1), data_out=bytes(cmp) + new)
    assert miscompare_at(c) == BS - 27
    assert file_bytes(rw.path, lba * BS, BS) == old                    # nothing written
    c = rw.run(caw(lba, 1), data_out=old + new)
    assert c.status == S.GOOD
    assert file_bytes(rw.path, lba * BS, BS) == new
    spy = FsyncSpy(rw, monkeypatch)
    c = rw.run(caw(lba, 1, S.RW_DPO | S.RW_FUA), data_out=new + old)  # DPOFUA claimed
    assert c.status == S.GOOD and spy.calls == [1]
    assert file_bytes(rw.path, lba * BS, BS) == old


def test_compare_and_write_fields(rw):
    assert rw.run(caw(0, 0)).status == S.GOOD                          # 0 blocks: nothing
    c = rw.run(caw(0, 2), data_out=bytes(4 * BS))                      # beyond the maximum (1)
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)
    c = rw.run(caw(0, 1, 0x20), data_out=bytes(2 * BS))
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)
    c = rw.run(caw(8 * MiB // BS, 1), data_out=bytes(2 * BS))
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_LBA_OUT_OF_RANGE)
    for size in (BS, 4 * BS):                                          # data-out not 2 blocks
        c = rw.run(caw(0, 1), data_out=bytes(size))
        assert c.status == S.CHECK_CONDITION
    assert file_bytes(rw.path, 0, BS) == rw.content[:BS]


def test_compare_and_write_on_a_read_only_disk(ro):
    c = ro.run(caw(0, 1), data_out=ro.content[:BS] * 2)
    assert sense_of(c) == (S.DATA_PROTECT, S.ASC_WRITE_PROTECTED)


def test_block_limits_maximum_compare_and_write_length(rw):
    c = rw.run(bytes([S.INQUIRY, 1, S.VPD_BLOCK_LIMITS, 0, 255, 0]), data_in_len=255)
    assert len(c.data) == 64 and c.data[3] == 0x3C and c.data[5] == 1


# ---- INQUIRY version descriptors ----
def test_standard_inquiry_claims_spc3_and_sbc3(rw):
    c = rw.run(bytes([S.INQUIRY, 0, 0, 1, 4, 0]), data_in_len=260)
    d = c.data
    assert len(d) == d[4] + 5 == 74
    versions = [struct.unpack_from(">H", d, 58 + 2 * i)[0] for i in range(8)]
    assert S.VERSION_SPC_3 in versions and S.VERSION_SBC_3 in versions


# ---- REPORT SUPPORTED OPERATION CODES ----
def rsoc(options, opcode=0, sa=0, alloc=65535, rctd=False):
    return bytes([S.MAINTENANCE_IN, S.SAI_REPORT_SUPPORTED_OPCODES, options | (0x80 if rctd else 0),
                  opcode]) + struct.pack(">HIxx", sa, alloc)


def all_commands(h, rctd=False):
    d = h.run(rsoc(0, rctd=rctd), data_in_len=65535).data
    size = 20 if rctd else 8
    n = struct.unpack(">I", d[:4])[0]
    assert n % size == 0 and len(d) == 4 + n
    out = []
    for p in range(4, 4 + n, size):
        op, sa, flags, cdb_len = struct.unpack_from(">BxHxBH", d, p)
        assert bool(flags & 0x02) == rctd
        out.append((op, sa if flags & 0x01 else None, cdb_len))
    return out


def test_report_supported_opcodes_lists_exactly_what_is_handled(rw):
    listed = all_commands(rw)
    disk = ScsiDisk(1 << 20, serial="x")
    handled = set(ScsiDisk._HANDLERS) | set(S.READS) | set(S.WRITES)
    assert {op for op, _, _ in listed} == handled
    for op, sa, cdb_len in listed:
        assert cdb_len == S.cdb_length(op)
        cdb = bytearray(cdb_len)
        cdb[0] = op
        if sa is not None:
            cdb[1] = sa
        assert disk.execute(bytes(cdb)) is not INVALID_OPCODE, hex(op)
        one = rw.run(rsoc(2 if sa is not None else 1, op, sa or 0), data_in_len=512).data
        assert one[1] & 0x07 == 0x03                                   # SUPPORT: as the standard
        assert struct.unpack_from(">H", one, 2)[0] == cdb_len
        assert one[4] == op                                            # usage data starts with it
        wrong = rw.run(rsoc(1 if sa is not None else 2, op, sa or 0), data_in_len=512)
        assert sense_of(wrong) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)


def test_report_supported_opcodes_usage_matches_dpofua(rw):
    for op in (S.READ_10, S.WRITE_16, S.VERIFY_10, S.WRITE_VERIFY_12, S.COMPARE_AND_WRITE):
        one = rw.run(rsoc(1, op), data_in_len=512).data
        assert one[5] & S.RW_DPO, hex(op)         # MODE SENSE claims DPOFUA: usage says DPO
        assert not one[5] & S.RW_PROTECT, hex(op)


def test_report_supported_opcodes_timeouts_and_unknown(rw):
    assert len(all_commands(rw, rctd=True)) == len(all_commands(rw))
    one = rw.run(rsoc(1, S.READ_10, rctd=True), data_in_len=512).data
    assert one[1] == 0x83 and len(one) == 4 + 10 + 12
    assert rw.run(rsoc(1, 0xC5), data_in_len=512).data == bytes([0, 0x01, 0, 0])
    c = rw.run(rsoc(0, alloc=12), data_in_len=512)
    assert len(c.data) == 12
    c = rw.run(rsoc(5), data_in_len=512)
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)
    c = rw.run(bytes([S.MAINTENANCE_IN, 0x05]) + bytes(10), data_in_len=512)
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)
