"""The supervisor loop over fake kernels: several devices, worker processes, removal,
refusals, signals and a draining shutdown."""

import fcntl
import os
import signal
import struct
import termios
import threading
import time

import pytest

from overlaybd.abi import scsi as S
from overlaybd.tcmu.daemon import Daemon
from overlaybd.tcmu.fakekernel import FakeKernel
from overlaybd.tcmu.uio import UioInfo
from overlaybd.workers import Engine
from overlaybd.workers.rawfile import RawFile, RawFileOpener
from tests.helpers.tcmu import DaemonHarness, file_bytes, read10, sense_of

MiB = 1 << 20


def write10(lba, n):
    return bytes([S.WRITE_10, 0]) + struct.pack(">I", lba) + b"\0" + struct.pack(">H", n) + b"\0"


def test_two_devices_share_one_daemon(tmp_path):
    a = DaemonHarness(tmp_path, content=b"A" * MiB, name="a", dev_id="1", minor=0)
    b = DaemonHarness(tmp_path, content=b"B" * MiB, name="b", dev_id="2", minor=1, daemon=a.daemon)
    assert (a.status, b.status) == (0, 0)
    try:
        assert a.run(read10(0, 8), data_in_len=4096).data == b"A" * 4096
        assert b.run(read10(0, 8), data_in_len=4096).data == b"B" * 4096
    finally:
        a.close()
        b.fk.close()


def test_duplicated_dev_id_and_foreign_subtype_are_refused(tmp_path):
    a = DaemonHarness(tmp_path, name="a", dev_id="5", minor=0)
    refused = []
    a.daemon.refused = lambda config, reason: refused.append((config, reason))
    try:
        dup = DaemonHarness(tmp_path, name="b", dev_id="5", minor=1, daemon=a.daemon)
        assert dup.status < 0
        assert refused == [(f"{tmp_path}/b.json", "duplicated dev_id 5 (already used by a)")]
        dup.fk.close()
        fk = FakeKernel()
        info = UioInfo(2, "tcm-user/1/c/qcow//x.img", "1", "c", "qcow//x.img")
        assert a.daemon.add_device(info, fk.handle()) < 0
        fk.close()
        assert sorted(a.daemon.devices) == [0]
    finally:
        a.close()


def test_commands_queued_before_attach_are_served_at_once(tmp_path):
    """The kernel only wakes a reader for kicks after open(): queued work must not wait."""
    content = os.urandom(MiB)
    path = tmp_path / "d.img"
    path.write_bytes(content)
    d = Daemon(Engine(workers=0), lambda c: RawFile(path), lambda c: RawFileOpener(path),
               use_netlink=False, sys_uio=str(tmp_path / "none"), configfs=str(tmp_path))
    d.start()
    fk = FakeKernel()
    cid = fk.submit(read10(3, 2), data_in_len=1024, notify=False)
    info = UioInfo(0, "tcm-user/1/d/overlaybd/x", "1", "d", "overlaybd/x")
    assert d.add_device(info, fk.handle()) == 0
    [c] = fk.reap()
    assert c.cmd_id == cid and c.data == content[1536:2560]
    assert fk.count_kicks() == 1
    d.shutdown()
    fk.close()


def test_worker_processes_map_the_same_data_area(tmp_path):
    """workers=2: the data area (a memfd, like /dev/uioN) is mapped by the worker processes,
    which read into it and write from it directly; out-of-order completions all land."""
    content = os.urandom(4 * MiB)
    path = tmp_path / "d.img"
    path.write_bytes(content)
    d = Daemon(Engine(workers=2, chunk_size=64 << 10), lambda c: RawFile(path, True),
               lambda c: RawFileOpener(path, True), use_netlink=False,
               sys_uio=str(tmp_path / "none"), configfs=str(tmp_path))
    d.start()
    fk = FakeKernel(data_size=8 * MiB)
    info = UioInfo(0, "tcm-user/1/d/overlaybd/x", "1", "d", "overlaybd/x")
    try:
        assert d.add_device(info, fk.handle()) == 0
        want = {}
        for k in range(12):
            lba = k * 300
            want[fk.submit(read10(lba, 256), data_in_len=256 * 512, split=16384)] = \
                content[lba * 512:(lba + 256) * 512]
        payload = os.urandom(128 * 1024)
        wid = fk.submit(write10(5000, 256), data_out=payload, split=8192)
        got = {}
        for _ in range(400):
            d.run_once(0.05)
            for c in fk.reap():
                got[c.cmd_id] = c
            if len(got) == len(want) + 1:
                break
        assert got[wid].status == S.GOOD
        for cid, data in want.items():
            assert got[cid].status == S.GOOD and got[cid].data == data
        assert file_bytes(path, 5000 * 512, len(payload)) == payload
    finally:
        assert d.shutdown() == 0
        fk.close()


def test_removal_waits_for_inflight_and_closes(tmp_path):
    h = DaemonHarness(tmp_path, content=b"x" * MiB)
    fk, d = h.fk, h.daemon
    fk.submit(read10(0, 8), data_in_len=4096)
    d.run_once(0.05)
    assert d.remove_device(0) == 0
    assert fk.reap()[0].data == b"x" * 4096     # completed before the device went away
    assert d.devices == {} and fk.handle().closed is False
    d.shutdown()
    fk.close()


def test_sigterm_drains_and_exits_zero_and_sighup_reopens(tmp_path):
    h = DaemonHarness(tmp_path, content=b"q" * MiB)
    fk, d = h.fk, h.daemon
    cid = fk.submit(read10(0, 16), data_in_len=8192)
    reopened = []
    import overlaybd.log as olog
    orig = olog.reopen
    olog.reopen = lambda: reopened.append(1)
    default_hup = signal.getsignal(signal.SIGHUP)

    def send_signals():           # in order, each once the daemon can take it
        deadline = time.monotonic() + 10
        while signal.getsignal(signal.SIGHUP) == default_hup and time.monotonic() < deadline:
            time.sleep(0.01)      # run() has not installed its handlers yet
        os.kill(os.getpid(), signal.SIGHUP)
        while not reopened and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_signals, daemon=True)
    try:
        sender.start()
        assert d.run() == 0
    finally:
        olog.reopen = orig
        sender.join(15)
    assert reopened == [1]
    [c] = fk.reap()
    assert c.cmd_id == cid and c.data == b"q" * 8192
    assert d.stopping and d.devices == {}
    # nothing queued after the stop is taken
    fk.submit(read10(0, 1), data_in_len=512)
    assert fk.reap() == []
    fk.close()


def test_write_error_and_bad_buffers_give_sense_not_crash(tmp_path):
    h = DaemonHarness(tmp_path, size=MiB)
    try:
        os.chmod(h.path, 0o444)
        c = h.run(read10(2047, 1), data_in_len=512)
        assert c.status == S.GOOD
        c = h.run(read10(2048, 1), data_in_len=512)
        assert sense_of(c) == (S.ILLEGAL_REQUEST, S.ASC_LBA_OUT_OF_RANGE)
        c = h.run(read10(0, 8), data_in_len=512)          # buffers shorter than the command
        assert sense_of(c) == (S.HARDWARE_ERROR, S.ASC_INTERNAL_TARGET_FAILURE)
    finally:
        h.close()


@pytest.mark.parametrize("bad", [b"", b"\x00" * 3])
def test_tiny_mapping_is_refused(tmp_path, bad):
    from overlaybd.errors import FormatError
    from overlaybd.tcmu.ring import CommandRing
    with pytest.raises(FormatError):
        CommandRing(bytearray(bad))


def test_slow_image_open_does_not_stall_other_devices(tmp_path):
    """Netlink ADDED opens the image in a thread: I/O of live devices keeps flowing, and
    two devices opening at once with one dev_id are told apart."""
    import time
    live = DaemonHarness(tmp_path, content=b"L" * MiB, name="live", dev_id="1", minor=0)
    d = live.daemon
    gate = threading.Event()
    slow = tmp_path / "slow.img"
    slow.write_bytes(b"S" * MiB)
    orig_validate = d.validate

    def validate(cfg):
        if cfg.endswith("slow.json"):
            assert gate.wait(10)
            return RawFile(slow)
        return orig_validate(cfg)

    d.validate = validate
    orig_opener = d.opener
    d.opener = lambda cfg: RawFileOpener(slow) if cfg.endswith("slow.json") else orig_opener(cfg)
    fk = FakeKernel()
    replies = []
    cfg = f"overlaybd/{tmp_path}/slow.json;2"
    info = UioInfo(1, f"tcm-user/1/slow/{cfg}", "1", "slow", cfg)
    d._open_async(info, fk.handle(), replies.append)
    dup = UioInfo(2, f"tcm-user/1/dup/{cfg}", "1", "dup", cfg)
    d._open_async(dup, FakeKernel().handle(), replies.append)
    assert replies == [-2]                         # same dev_id as the device being opened
    t0 = time.monotonic()
    assert live.run(read10(0, 1), data_in_len=512).data == b"L" * 512
    assert time.monotonic() - t0 < 5 and replies == [-2]
    gate.set()
    for _ in range(100):
        d.run_once(0.05)
        if len(replies) == 2:
            break
    assert replies == [-2, 0] and sorted(d.devices) == [0, 1]
    fk.submit(read10(0, 1), data_in_len=512)
    d.run_once(0.05)
    assert fk.reap()[0].data == b"S" * 512
    live.close()
    fk.close()


def test_open_in_progress_at_shutdown_is_refused(tmp_path):
    live = DaemonHarness(tmp_path, name="live", minor=0)
    d = live.daemon
    gate = threading.Event()
    d.validate = lambda cfg: (gate.wait(10), RawFile(live.path))[1]
    replies = []
    cfg = "overlaybd/x.json;9"
    fk = FakeKernel()
    d._open_async(UioInfo(1, f"tcm-user/1/x/{cfg}", "1", "x", cfg), fk.handle(), replies.append)
    threading.Timer(0.2, gate.set).start()
    assert d.shutdown() == 0
    assert replies == [-108]                      # -ESHUTDOWN: the kernel's enable fails
    assert fk.handle().closed is False and 1 not in d.devices
    live.fk.close()
    fk.close()


def test_with_workers_the_completion_fd_is_edge_triggered_and_never_read(tmp_path):
    """With workers the daemon watches the engine's completion eventfd edge-triggered, as it
    does uio fds, and never reads it; sleeping without a timeout, it still wakes for every
    completion (a lost edge would leave it asleep until the ticker, 30 s here)."""
    content = os.urandom(4 * MiB)
    path = tmp_path / "d.img"
    path.write_bytes(content)
    d = Daemon(Engine(workers=2, chunk_size=64 << 10, heartbeat_sec=120),
               lambda c: RawFile(path), lambda c: RawFileOpener(path), use_netlink=False,
               sys_uio=str(tmp_path / "none"), configfs=str(tmp_path))
    d.start()
    fk = FakeKernel(data_size=8 * MiB)
    info = UioInfo(0, "tcm-user/1/d/overlaybd/x", "1", "d", "overlaybd/x")
    pool = d.engine.pool
    reads = []
    real_clear = pool.comp_event.clear
    pool.comp_event.clear = lambda: reads.append(1) or real_clear()

    def hung(signum, frame):
        raise AssertionError("the daemon slept through a completion")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        assert d.add_device(info, fk.handle()) == 0
        for batch in range(300):
            want = {}
            for i in range(1 + batch % 3):
                lba = (batch * 37 + i * 1031) % 8000
                want[fk.submit(read10(lba, 8), data_in_len=8 * 512)] = \
                    content[lba * 512:(lba + 8) * 512]
            got = {}
            while len(got) < len(want):
                d.run_once(None)
                got.update((c.cmd_id, c) for c in fk.reap())
            assert {k: (c.status, c.data) for k, c in got.items()} == \
                {k: (S.GOOD, v) for k, v in want.items()}, f"batch {batch}"
        assert pool.edge and reads == [], "the engine read its edge-triggered fd"
        assert pool.wakeups > 0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        assert d.shutdown() == 0
        fk.close()


def test_edge_triggered_device_is_served_without_reading_its_events(tmp_path):
    """A real uio fd is watched edge-triggered and never read: each notify must still be
    served, batch after batch, with the event bytes left where they are."""
    content = os.urandom(MiB)
    h = DaemonHarness(tmp_path, content=content, fk_kwargs={"edge": True})
    fk, d = h.fk, h.daemon
    try:
        for batch in range(50):
            ids = {}
            for i in range(4):
                lba = (batch * 4 + i) % 2000
                ids[fk.submit(read10(lba, 1), data_in_len=512)] = content[lba * 512:lba * 512 + 512]
            got = {}
            for _ in range(20):
                d.run_once(0.05)
                got.update((c.cmd_id, c) for c in fk.reap())
                if len(got) == len(ids):
                    break
            assert {k: c.data for k, c in got.items()} == ids, f"batch {batch}"
        pending = struct.unpack("i", fcntl.ioctl(fk.uio_fd, termios.FIONREAD, b"\0" * 4))[0]
        assert pending == 50 * 4 * 4, "the daemon read the events: the edge-triggered path was not taken"
    finally:
        h.close()


def test_a_new_device_on_a_reused_fd_number_is_watched(tmp_path):
    """A later device that gets a removed device's descriptor number is watched and served
    (epoll registrations follow open files, not numbers)."""
    a = DaemonHarness(tmp_path, content=b"A" * MiB, name="a", dev_id="1", minor=0)
    try:
        fd = a.fk.uio_fd
        assert a.daemon.remove_device(0) == 0
        a.fk.close()                          # frees the descriptor numbers
        b = DaemonHarness(tmp_path, content=b"B" * MiB, name="b", dev_id="2", minor=1, daemon=a.daemon)
        assert b.fk.uio_fd == fd, "the test needs the descriptor number to be reused"
        assert b.run(read10(0, 8), data_in_len=4096).data == b"B" * 4096
        b.fk.close()
    finally:
        a.daemon.shutdown()


@pytest.mark.parametrize("cap_read_len", [True, False])
def test_short_reply_after_long_one_sends_nothing_stale(tmp_path, cap_read_len):
    """INQUIRY's 36 bytes land in the data-area block a 4 KiB READ has just filled: the reply
    says its length (read_len, where the kernel offers it) and the rest of the buffer is zero,
    so no byte of the earlier command reaches the initiator (libiscsi Inquiry.Standard)."""
    from overlaybd.abi import tcmu as T
    flags = T.MB_FLAG_CAP_OOOC | (T.MB_FLAG_CAP_READ_LEN if cap_read_len else 0)
    h = DaemonHarness(tmp_path, content=b"\xee" * MiB, fk_kwargs={"flags": flags})
    try:
        assert h.run(read10(0, 8), data_in_len=4096).data == b"\xee" * 4096
        c = h.run(bytes([S.INQUIRY, 0, 0, 0x10, 0x00, 0]), data_in_len=4096)
        assert c.status == 0
        if cap_read_len:
            assert c.uflags & T.UFLAG_READ_LEN and len(c.data) == c.data[4] + 5
        else:
            assert not c.uflags & T.UFLAG_READ_LEN and len(c.data) == 4096
        n = c.data[4] + 5                                    # ADDITIONAL LENGTH + 5
        assert c.data[n:] == bytes(len(c.data) - n)          # nothing left over
        assert b"\xee" not in c.data
    finally:
        h.close()
