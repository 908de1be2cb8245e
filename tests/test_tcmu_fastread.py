"""The fused READ(10)/READ(16) paths (overlaybd.tcmu.fastread: run in place when the engine is
inline, handed straight to the engine with workers) against the generic path
(CommandRing.fetch -> ScsiDisk -> Engine -> CommandRing.complete): same commands through the
fake kernel, same status, sense and bytes; everything unusual goes the generic way."""

import os
import struct

import pytest

from overlaybd.abi import scsi as S
from overlaybd.tcmu.daemon import Daemon
from overlaybd.tcmu.fakekernel import FakeKernel
from overlaybd.tcmu.uio import UioInfo
from overlaybd.workers import Engine
from overlaybd.workers.rawfile import RawFile
from tests.helpers.tcmu import DaemonHarness, read10, sense_of

MiB = 1 << 20
SIZE = 8 * MiB
LBAS = SIZE // 512


def read6(lba, n):
    return bytes([S.READ_6, (lba >> 16) & 0x1F, (lba >> 8) & 0xFF, lba & 0xFF, n & 0xFF, 0])


def read16(lba, n, flags=0):
    return bytes([S.READ_16, flags]) + struct.pack(">QI", lba, n) + b"\0\0"


def write10(lba, n):
    return bytes([S.WRITE_10, 0]) + struct.pack(">I", lba) + b"\0" + struct.pack(">H", n) + b"\0"


def inquiry(alloc=36):
    return bytes([S.INQUIRY, 0, 0]) + struct.pack(">H", alloc) + b"\0"


PAYLOAD = bytes(range(256)) * 32          # 8 KiB

# (cdb, data_out, data_in_len, split): one batch, queued before the daemon looks
BATCH = [
    (read10(0, 8), b"", 4096, None),
    (read16(100, 16), b"", 8192, None),
    (read10(LBAS - 8, 8), b"", 4096, None),                 # the last blocks
    (read10(LBAS - 4, 8), b"", 4096, None),                 # past the end
    (read16(LBAS, 1), b"", 512, None),                      # starts past the end
    (read16((1 << 64) - 1, 1), b"", 512, None),             # LBA overflowing 64 bits
    (read10(5, 0), b"", 0, None),                           # zero length: GOOD, no I/O
    (read10(7, 8), b"", 2048, None),                        # buffers shorter than the read
    (read10(1000, 256), b"", 128 * 1024, 4096),             # many iovecs
    (read16(3000, 64), b"", 32 * 1024, 12288),              # a few uneven iovecs
    (read6(40, 8), b"", 4096, None),                        # READ(6): generic, pending...
    (read10(2000, 8), b"", 4096, None),                     # ... while this one completes
    (write10(64, 16), PAYLOAD, 0, None),                    # a write, then a read of it
    (read10(60, 24), b"", 24 * 512, None),
    (inquiry(), b"", 36, None),
    (read10(8, 8, flags=0x18), b"", 4096, None),            # DPO + FUA: served fast
    (read16(8, 8, flags=0x20), b"", 4096, None),            # RDPROTECT: refused
]


def run_batch(h, batch):
    """Queue ``batch`` (one notify), run the daemon until all complete: [(status, sense,
    data)] in submission order.  The sense of a GOOD completion is whatever its slot held
    (the kernel does not look at it): b"" here."""
    ids = [h.fk.submit(cdb, out, n, split=split, notify=False) for cdb, out, n, split in batch]
    h.fk.notify()
    got = {}
    for _ in range(200):
        h.daemon.run_once(0.05)
        for c in h.fk.reap():
            got[c.cmd_id] = c
        if len(got) == len(ids):
            break
    assert len(got) == len(ids)
    return [(got[i].status, got[i].sense if got[i].status else b"", got[i].data)
            for i in ids]


@pytest.fixture(params=[0, 1], ids=["inline", "workers1"])
def pair(tmp_path, request):
    content = os.urandom(SIZE)
    fast = DaemonHarness(tmp_path, size=SIZE, content=content, name="fast", dev_id="1", minor=0,
                         workers=request.param)
    slow = DaemonHarness(tmp_path, size=SIZE, content=content, name="slow", dev_id="2", minor=0,
                         workers=request.param)
    assert (fast.status, slow.status) == (0, 0)
    assert fast.daemon.devices[0].fast is not None
    slow.daemon.devices[0].fast = None            # the generic path only
    yield fast, slow, content
    fast.close()
    slow.close()


def test_fast_path_matches_generic_path(pair):
    fast, slow, content = pair
    a = run_batch(fast, BATCH)
    b = run_batch(slow, BATCH)
    assert a == b
    # and both are right
    assert (a[0][0], a[0][2]) == (S.GOOD, content[:4096])
    assert a[1][2] == content[100 * 512:116 * 512]
    assert a[2][2] == content[-4096:]
    for i in (3, 4, 5):
        assert a[i][0] == S.CHECK_CONDITION
        assert sense_of_bytes(a[i][1]) == (S.ILLEGAL_REQUEST, S.ASC_LBA_OUT_OF_RANGE)
    assert a[6][0] == S.GOOD
    assert a[7][0] == S.CHECK_CONDITION
    assert sense_of_bytes(a[7][1])[0] == S.HARDWARE_ERROR
    assert a[8][2] == content[1000 * 512:1256 * 512]
    assert a[9][2] == content[3000 * 512:3064 * 512]
    assert a[10][2] == content[40 * 512:48 * 512]
    assert a[11][2] == content[2000 * 512:2008 * 512]
    assert a[13][2] == content[60 * 512:64 * 512] + PAYLOAD + content[80 * 512:84 * 512]
    assert a[15][0] == S.GOOD and a[15][2] == content[8 * 512:16 * 512]
    assert a[16][0] == S.CHECK_CONDITION
    assert sense_of_bytes(a[16][1]) == (S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)
    dev = fast.daemon.devices[0]
    assert dev.fast.fast == 8                     # BATCH[0, 1, 2, 8, 9, 11, 13, 15]
    assert dev.ring.inflight == 0                 # nothing left over in either ring
    assert slow.daemon.devices[0].ring.inflight == 0


def sense_of_bytes(sense):
    return sense[2] & 0xF, (sense[12] << 8) | sense[13]


def test_lone_reads_complete_in_place_and_kick_once(pair):
    fast, slow, content = pair
    for lba in (0, 77, LBAS - 1):
        c = fast.run(read16(lba, 1), data_in_len=512)
        assert (c.status, c.data) == (S.GOOD, content[lba * 512:(lba + 1) * 512])
        assert fast.fk.count_kicks() == 1
    c = fast.run(read10(LBAS, 1), data_in_len=512)
    assert c.status == S.CHECK_CONDITION
    assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_LBA_OUT_OF_RANGE)
    assert fast.daemon.devices[0].fast.fast == 3


def test_ring_wraps_with_pad_entries(tmp_path):
    """Enough commands to wrap a small ring many times (PAD entries at the wrap)."""
    content = os.urandom(SIZE)
    h = DaemonHarness(tmp_path, size=SIZE, content=content, fk_kwargs={"cmdr_size": 8000})
    try:
        for k in range(0, 3000, 30):
            batch = [(read10(k + j, 1 + j % 3), b"", 512 * (1 + j % 3), 512) for j in range(30)]
            for j, (st, _, data) in enumerate(run_batch(h, batch)):
                assert st == S.GOOD
                assert data == content[(k + j) * 512:(k + j + 1 + j % 3) * 512]
        assert h.fk.pads > 0
        assert h.daemon.devices[0].fast.fast == 3000
    finally:
        h.close()


class Flaky(RawFile):
    """Reads fail ``fails`` times (raise), or come back short (``short``)."""

    def __init__(self, path, fails=0, short=False):
        super().__init__(path)
        self.fails = fails
        self.short = short
        self.calls = 0

    def preadinto(self, buf, off):
        self.calls += 1
        if self.fails:
            self.fails -= 1
            raise OSError(5, "injected")
        if self.short:
            return super().preadinto(memoryview(buf)[:len(buf) // 2], off) if self.calls == 1 \
                else 0
        return super().preadinto(buf, off)


def flaky_daemon(tmp_path, backend):
    d = Daemon(Engine(workers=0, read_retry_sec=5), lambda c: RawFile(backend.path),
               lambda c: (lambda: backend), use_netlink=False,
               sys_uio=str(tmp_path / "none"), configfs=str(tmp_path))
    d.start()
    fk = FakeKernel()
    info = UioInfo(0, "tcm-user/1/d/overlaybd/x", "1", "d", "overlaybd/x")
    assert d.add_device(info, fk.handle()) == 0
    return d, fk


def run1(d, fk, cdb, n):
    cid = fk.submit(cdb, data_in_len=n)
    for _ in range(100):
        d.run_once(0.05)
        for c in fk.reap():
            assert c.cmd_id == cid
            return c
    raise AssertionError("no completion")


def test_a_read_that_raises_goes_the_generic_way_and_is_retried(tmp_path):
    content = os.urandom(MiB)
    (tmp_path / "d.img").write_bytes(content)
    backend = Flaky(tmp_path / "d.img", fails=2)
    d, fk = flaky_daemon(tmp_path, backend)
    try:
        c = run1(d, fk, read10(16, 8), 4096)
        assert (c.status, c.data) == (S.GOOD, content[8192:12288])
        assert backend.calls == 3                 # fast try, generic try, generic retry
        assert d.devices[0].fast.fast == 0
    finally:
        d.shutdown()
        fk.close()


def test_a_short_read_gives_the_generic_medium_error(tmp_path):
    content = os.urandom(MiB)
    (tmp_path / "d.img").write_bytes(content)
    backend = Flaky(tmp_path / "d.img", short=True)
    d, fk = flaky_daemon(tmp_path, backend)
    try:
        c = run1(d, fk, read16(0, 8), 4096)
        assert c.status == S.CHECK_CONDITION
        assert sense_of(c) == (S.MEDIUM_ERROR, S.ASC_READ_ERROR)
        assert d.devices[0].fast.fast == 0
    finally:
        d.shutdown()
        fk.close()
