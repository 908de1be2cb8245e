"""EXTENDED COPY (LID1) within one disk and RECEIVE COPY RESULTS, through the real daemon over
the fake kernel, inline and with two worker processes; parameter lists built the way
libiscsi's conformance tests build them (identification target descriptor carrying the
disk's NAA designator from VPD page 0x83, block-to-block segment descriptors)."""

import os
import struct

import pytest

from overlaybd.abi import scsi as S
from overlaybd.tcmu.daemon import Daemon
from overlaybd.workers import Engine
from overlaybd.workers.rawfile import RawFile, RawFileOpener
from tests.helpers.tcmu import DISKS, DaemonHarness, file_bytes, sense_of

MiB = 1 << 20
BS = 512
SIZE = 8 * MiB
NUM = SIZE // BS


def daemon_with(workers, tmp_path):
    d = Daemon(Engine(workers=workers, chunk_size=64 * 1024),
               validate=lambda cfg: RawFile(DISKS[cfg][0], not DISKS[cfg][1]),
               opener=lambda cfg: RawFileOpener(DISKS[cfg][0], not DISKS[cfg][1]),
               use_netlink=False, sys_uio=str(tmp_path / "no-uio"),
               configfs=str(tmp_path / "configfs"), module_params=str(tmp_path / "no-params"))
    d.start()
    return d


@pytest.fixture(params=[0, 2], ids=["inline", "workers2"])
def rw(request, tmp_path):
    content = os.urandom(SIZE)
    h = DaemonHarness(tmp_path, size=SIZE, content=content, daemon=daemon_with(request.param, tmp_path))
    assert h.status == 0
    h.content = content
    yield h
    h.close()


def naa_descriptor(h):
    """The NAA designation descriptor from VPD page 0x83, as libiscsi picks it."""
    d = h.run(bytes([S.INQUIRY, 1, S.VPD_DEVICE_ID, 0, 255, 0]), data_in_len=255).data
    p = 4
    while p < len(d):
        code_set, kind, n = d[p] & 0x0F, d[p + 1] & 0x0F, d[p + 3]
        if kind == 3:
            return bytes([code_set, d[p + 1] & 0x3F, 0, n]) + d[p + 4:p + 4 + n]
        p += 4 + n
    raise AssertionError("no NAA designator")


def target(h, kind=S.XCOPY_TARGET_IDENT, byte1=0, designator=None):
    t = bytearray(32)
    t[0], t[1] = kind, byte1
    ident = designator if designator is not None else naa_descriptor(h)
    t[4:4 + len(ident)] = ident
    t[29:32] = BS.to_bytes(3, "big")
    return bytes(t)


def segment(nblocks, src_lba, dst_lba, src=0, dst=0, kind=S.XCOPY_SEG_BLOCK_TO_BLOCK):
    return bytes([kind, 0]) + struct.pack(">HHHxxHQQ", S.XCOPY_SEG_B2B_LEN, src, dst, nblocks,
                                          src_lba, dst_lba)


def plist(targets, segments, list_id=1):
    t, s = b"".join(targets), b"".join(segments)
    return bytes([list_id, 0]) + struct.pack(">H4xII", len(t), len(s), 0) + t + s


def xcopy(data, plen=None):
    return bytes([S.EXTENDED_COPY]) + bytes(9) + struct.pack(">I", len(data) if plen is None else plen) + bytes(2)


def test_extended_copy_copies_within_the_disk(rw):
    n, src, dst = 2048, 0, NUM - 2048                  # 1 MiB: several chunks and scratch loads
    c = rw.run(xcopy(p := plist([target(rw)], [segment(n, src, dst)])), data_out=p)
    assert c.status == S.GOOD, c.sense.hex()
    rw.daemon.shutdown()                               # flushed and closed: the file is final
    assert file_bytes(rw.path, dst * BS, n * BS) == rw.content[:n * BS]
    assert file_bytes(rw.path, 0, dst * BS) == rw.content[:dst * BS]
    rw.daemon.shutdown = lambda: None


def test_extended_copy_of_more_than_the_scratch_area_and_two_at_once(rw):
    """A 3 MiB copy (three scratch loads) and a second copy queued behind it: one scratch
    area per device, so the second waits, and both land."""
    a = plist([target(rw)], [segment(6144, 100, 7000)])
    b = plist([target(rw)], [segment(64, 14000, 16000)], list_id=2)
    ids = [rw.fk.submit(xcopy(a), a, 0, notify=False), rw.fk.submit(xcopy(b), b, 0, notify=False)]
    rw.fk.notify()
    got = {}
    for _ in range(400):
        rw.daemon.run_once(0.05)
        got.update({c.cmd_id: c for c in rw.fk.reap()})
        if len(got) == 2:
            break
    assert [got[i].status for i in ids] == [S.GOOD, S.GOOD]
    r = rw.run(bytes([S.READ_16, 0]) + struct.pack(">QI", 7000, 6144) + bytes(2), data_in_len=6144 * BS)
    assert r.data == rw.content[100 * BS:6244 * BS]
    r = rw.run(bytes([S.READ_16, 0]) + struct.pack(">QI", 16000, 64) + bytes(2), data_in_len=64 * BS)
    assert r.data == rw.content[14000 * BS:14064 * BS]


def test_extended_copy_parameter_list_errors(rw):
    def run(data, plen=None):
        c = rw.run(xcopy(data, plen), data_out=data)
        return sense_of(c) if c.status else "GOOD"
    t, seg = target(rw), segment(8, 0, 100)
    assert run(b"") == "GOOD"                                           # empty list
    full = plist([t], [seg])
    assert run(full[:16 + 31]) == (S.ILLEGAL_REQUEST, S.ASC_PARAM_LIST_LENGTH_ERROR)
    assert run(full[:-1]) == (S.ILLEGAL_REQUEST, S.ASC_PARAM_LIST_LENGTH_ERROR)
    assert run(plist([t, t, t], [seg])) == (S.ILLEGAL_REQUEST, S.ASC_TOO_MANY_TARGET_DESCRIPTORS)
    assert run(plist([t], [seg, seg])) == (S.ILLEGAL_REQUEST, S.ASC_TOO_MANY_SEGMENT_DESCRIPTORS)
    assert run(plist([t] * 3, [seg] * 40)) == (S.ILLEGAL_REQUEST, S.ASC_PARAM_LIST_LENGTH_ERROR)
    assert run(plist([target(rw, kind=0xE0)], [seg])) == \
        (S.ILLEGAL_REQUEST, S.ASC_UNSUPPORTED_TARGET_DESCRIPTOR_TYPE)
    assert run(plist([t], [segment(8, 0, 100, kind=0x03)])) == \
        (S.ILLEGAL_REQUEST, S.ASC_UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE)
    assert run(plist([target(rw, byte1=0xC0)], [seg])) == \
        (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_PARAM_LIST)          # reserved LU ID TYPE
    other = bytearray(naa_descriptor(rw))
    other[-1] ^= 0xFF                                                   # another device
    assert run(plist([target(rw, designator=bytes(other))], [seg])) == \
        (S.COPY_ABORTED, S.ASC_COPY_TARGET_NOT_REACHABLE)
    assert run(plist([target(rw, byte1=0x20)], [seg]))[0] == S.COPY_ABORTED          # NUL
    assert run(plist([t], [segment(8, 0, 100, dst=1)])) == \
        (S.COPY_ABORTED, S.ASC_COPY_TARGET_NOT_REACHABLE)               # no such descriptor
    assert run(plist([t], [segment(2048, 0, NUM - 1)]))[0] == S.COPY_ABORTED         # beyond EOL
    assert file_bytes(rw.path, 0, SIZE) == rw.content                   # nothing was copied


def test_receive_copy_results_operating_parameters(rw):
    c = rw.run(bytes([S.RECEIVE_COPY_RESULTS, S.SAI_COPY_OPERATING_PARAMETERS]) + bytes(8) +
               struct.pack(">I", 1024) + bytes(2), data_in_len=1024)
    d = c.data
    assert c.status == S.GOOD and struct.unpack(">I", d[:4])[0] == len(d) - 4
    max_targets, max_segments, max_list = struct.unpack_from(">HHI", d, 8)
    assert (max_targets, max_segments, max_list) == (2, 1, 1024)
    assert d[43] == 2 and set(d[44:46]) == {S.XCOPY_SEG_BLOCK_TO_BLOCK, S.XCOPY_TARGET_IDENT}
    c = rw.run(bytes([S.RECEIVE_COPY_RESULTS, 0x00]) + bytes(8) + struct.pack(">I", 64) + bytes(2),
               data_in_len=64)
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)


def test_extended_copy_to_a_read_only_disk_is_write_protected(tmp_path):
    h = DaemonHarness(tmp_path, size=SIZE, read_only=True, content=bytes(SIZE))
    try:
        data = plist([target(h)], [segment(8, 0, 100)])
        assert sense_of(h.run(xcopy(data), data_out=data)) == (S.DATA_PROTECT, S.ASC_WRITE_PROTECTED)
    finally:
        h.close()
