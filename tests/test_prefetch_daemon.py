"""Record and replay through the real daemon (fake kernel), an ext4 image in two remote layers
behind the loopback registry: the record flow as containerd drives it, replay warming the
cache, acceleration layers, file lists, invalid traces, the priority gate."""

import os
import time

import pytest

from overlaybd.abi import trace as abi
from overlaybd.image import open_image
from overlaybd.prefetch import trace as tr
from overlaybd.prefetch.session import RecordSession, ReplaySession
from tests.helpers.ext4 import need_e2fsprogs
from tests.helpers.prefetch import (
    APP,
    Recorder,
    Served,
    downloads,
    shared_image,
    wait_for,
    workload,
    write_config,
)
from tests.helpers.registry import service_config

pytestmark = pytest.mark.registry

START = APP
OTHER = [f"/app/m{i:03d}.py" for i in range(1, 60, 2)]


@pytest.fixture(scope="module")
def image(tmp_path_factory, registry_none):
    need_e2fsprogs()
    img = dict(shared_image(tmp_path_factory, registry_none))
    img["start"] = workload(img["raw"], START)
    return img


@pytest.fixture
def caplog_loguru():
    """Messages loguru logs during the test (tools' main() reset loguru: call
    ``caplog_loguru.attach()`` again after running one)."""
    from loguru import logger

    class Seen(list):
        hid = None

        def attach(self):
            self.hid = logger.add(lambda m: self.append(str(m)), level="DEBUG")

    seen = Seen()
    seen.attach()
    yield seen
    try:
        logger.remove(seen.hid)
    except ValueError:
        pass


def svc_for(tmp_path, **over):
    return service_config(tmp_path, **over)


def test_record_flow_as_containerd_drives_it(tmp_path, image):
    """Empty trace file, device, reads, delete the lock: .ok while the device is still open
    (the lock is polled every 0.5 s; 5 s of slack for a loaded machine), a valid trace whose
    records are exactly the layer reads the device made, in order."""
    trace = tmp_path / "trace"
    trace.write_bytes(b"")
    cfg = write_config(tmp_path / "c.json", image["base"], image["lowers"],
                       recordTracePath=str(trace), download={"enable": True, "delay": 0})
    srv = Served(tmp_path, svc_for(tmp_path))
    try:
        key = srv.add(cfg)
        assert (tmp_path / "trace.lock").exists()
        img = srv.daemon.engine.inline_device(key).backend
        assert img.download is None                 # background download off while recording
        srv.run(key, image["start"], image["bytes"])
        os.unlink(tmp_path / "trace.lock")
        assert wait_for(lambda: (tmp_path / "trace.ok").exists(), timeout=5.0)
        srv.run(key, workload(image["raw"], OTHER))   # after the lock: not recorded
    finally:
        srv.close()
    kind, records = tr.load(trace)
    assert kind == "trace" and not (tmp_path / "trace.lock").exists()
    assert not (tmp_path / "trace.spool").exists()
    rec = Recorder(image["layers"])
    try:
        want = rec.expect(image["start"])
    finally:
        rec.close()
    assert [(r.layer, r.count, r.offset) for r in records] == want
    assert {r.layer for r in records} == {0, 1} and all(r.op == b"R" for r in records)


def test_record_with_worker_processes_and_close_ends_it(tmp_path, image):
    """workers=2: both worker processes append; closing the device (lock still there) writes
    the trace too.  Order across workers is arrival order, so compare as multisets."""
    trace = tmp_path / "trace"
    trace.write_bytes(b"")
    cfg = write_config(tmp_path / "c.json", image["base"], image["lowers"],
                       recordTracePath=str(trace))
    srv = Served(tmp_path, svc_for(tmp_path), workers=2)
    try:
        key = srv.add(cfg)
        srv.run(key, image["start"], image["bytes"])
        parts = [s["parts_done"] for s in srv.daemon.engine.stats()]
        assert all(p > 0 for p in parts), parts        # both workers served reads
        srv.remove(key)
        assert (tmp_path / "trace.ok").exists() and not (tmp_path / "trace.lock").exists()
    finally:
        srv.close()
    records = tr.load(trace)[1]
    rec = Recorder(image["layers"])
    try:
        want = rec.expect(image["start"])
    finally:
        rec.close()
    # a worker sees its chunk's piece of a read: records are those pieces, same bytes in all
    got = sorted((r.layer, r.offset, r.count) for r in records)
    assert sum(c for _, _, c in got) == sum(n for _, n, _ in want)
    covered = {(r.layer, r.offset + k) for r in records for k in range(0, r.count, 512)}
    assert covered == {(i, off + k) for i, n, off in want for k in range(0, n, 512)}


def replay_and_start(tmp_path, image, trace_path=None, workers=0, **cfg_extra):
    """Cold cache, a device with ``trace_path`` as recordTracePath; wait for the replay, then
    run the start workload.  Returns (downloads during the start, downloads before it)."""
    extra = dict(cfg_extra)
    if trace_path is not None:
        extra["recordTracePath"] = str(trace_path)
    lowers = extra.pop("lowers", image["lowers"])
    cfg = write_config(tmp_path / "c.json", image["base"], lowers, **extra)
    svc = svc_for(tmp_path)
    srv = Served(tmp_path, svc, workers)
    try:
        key = srv.add(cfg)
        assert srv.prefetch.wait(key, timeout=60)
        before = downloads(svc.audit_path)
        srv.run(key, image["start"], image["bytes"])
        return downloads(svc.audit_path) - before, before, srv.prefetch.sessions(key)
    finally:
        srv.close()


def recorded_trace(tmp_path, image):
    rec = Recorder(image["layers"])
    try:
        log = rec.expect(image["start"])
    finally:
        rec.close()
    p = tmp_path / "recorded"
    p.write_bytes(tr.encode([tr.Record(b"R", i, n, off) for i, n, off in log]))
    return p


def test_without_trace_the_start_goes_to_the_registry(tmp_path, image):
    during, before, sessions = replay_and_start(tmp_path, image)
    assert sessions == [] and during > 10          # (before: the open read indexes)


@pytest.mark.parametrize("workers", [0, 2])
def test_replay_warms_the_cache_before_the_start(tmp_path, image, workers):
    trace = recorded_trace(tmp_path, image)
    during, before, sessions = replay_and_start(tmp_path, image, trace, workers)
    [s] = sessions
    assert isinstance(s, ReplaySession) and s.replayer.failed == 0
    assert s.replayer.done == s.replayer.total > 0
    assert before > 0 and during == 0
    assert trace.read_bytes()[:4] == abi.MAGIC.to_bytes(4, "little")   # replay never writes it


@pytest.mark.parametrize("damage", ["magic", "size", "checksum"])
def test_invalid_trace_is_logged_and_ignored(tmp_path, image, damage, caplog_loguru):
    trace = recorded_trace(tmp_path, image)
    data = bytearray(trace.read_bytes())
    if damage == "magic":
        data[0] ^= 1
    elif damage == "size":
        data += b"\0"
    else:
        data[30] ^= 1
    trace.write_bytes(bytes(data))
    during, before, sessions = replay_and_start(tmp_path, image, trace)
    assert sessions == [] and during > 10
    assert any("ignored" in m and str(trace) in m and damage in m for m in caplog_loguru)


def test_acceleration_layer_trace_is_replayed(tmp_path, image):
    from overlaybd.prefetch.accel import make_layer
    accel_dir = tmp_path / "accel"
    accel_dir.mkdir()
    tar_path = tmp_path / "accel.tar"
    make_layer(recorded_trace(tmp_path, image), tar_path)
    import tarfile
    with tarfile.open(tar_path) as t:                    # as the snapshotter unpacks a layer
        assert t.getnames() == ["trace"]
        t.extractall(accel_dir, filter="data")
    lowers = image["lowers"] + [{"dir": str(accel_dir)}]
    during, before, sessions = replay_and_start(tmp_path, image, None, accelerationLayer=True,
                                                lowers=lowers)
    assert len(sessions) == 1 and sessions[0].replayer.done > 0
    assert before > 0 and during == 0


def test_acceleration_layer_with_record_path_is_refused(tmp_path, image):
    (tmp_path / "t").write_bytes(b"")
    lowers = image["lowers"] + [{"dir": str(tmp_path)}]
    cfg = write_config(tmp_path / "c.json", image["base"], lowers, accelerationLayer=True,
                       recordTracePath=str(tmp_path / "t"))
    srv = Served(tmp_path, svc_for(tmp_path))
    try:
        with pytest.raises(RuntimeError):
            srv.add(cfg)
    finally:
        srv.close()
    assert (tmp_path / "c.json.result").read_text().startswith("failed:")
    assert "recordTracePath" in (tmp_path / "c.json.result").read_text()


def test_file_list_prefetches_the_listed_files(tmp_path, image):
    lst = tmp_path / "list"
    lst.write_text("\n".join(["/etc/app.conf", "/app/lib.so", "/app/", "/app/*", "/nope",
                              "bad entry!"]) + "\n")
    during, before, sessions = replay_and_start(tmp_path, image, lst)
    [s] = sessions
    assert s.replayer.failed == 0 and s.replayer.done > 0
    assert all(r.layer == 0 and r.count <= abi.MAX_IO_SIZE for r in s.records)
    assert before > 0 and during == 0


def test_file_list_on_erofs_is_refused_clearly(tmp_path, caplog_loguru):
    """An EROFS disk (superblock magic at 1024) is named, not misread as ext4."""
    from tests.helpers.ext4 import raw_to_layer
    raw = tmp_path / "erofs.raw"
    disk = bytearray(1 << 20)
    disk[1024:1028] = (0xE0F5E1E2).to_bytes(4, "little")
    raw.write_bytes(bytes(disk))
    layer = raw_to_layer(raw, tmp_path / "l.tar", str(tmp_path))
    caplog_loguru.attach()
    lst = tmp_path / "list"
    lst.write_text("/etc/hosts\n")
    svc = svc_for(tmp_path)
    cfg = write_config(tmp_path / "c.json", "", [{"file": str(layer)}], recordTracePath=str(lst))
    srv = Served(tmp_path, svc)
    try:
        key = srv.add(cfg)
        assert srv.prefetch.wait(key, timeout=30)
        assert srv.read(key, 0, 4096) == bytes(disk[:4096])
    finally:
        srv.close()
    assert any("EROFS" in m for m in caplog_loguru)


def test_gate_shut_while_the_device_serves(tmp_path, image):
    """Readers start no piece while the gate is shut; the daemon shuts it from the moment it
    serves a command until none is in flight, whenever a replay runs."""
    trace = recorded_trace(tmp_path, image)
    cfg = write_config(tmp_path / "c.json", image["base"], image["lowers"],
                       recordTracePath=str(trace))
    srv = Served(tmp_path, svc_for(tmp_path))
    seen = []
    try:
        gate = srv.prefetch.gate
        gate.busy()                                   # hold the replay at the start line
        key = srv.add(cfg)
        [s] = srv.prefetch.sessions(key)
        assert wait_for(lambda: s.replayer is not None and gate.waits > 0, timeout=20)
        time.sleep(0.3)
        assert s.replayer.done == 0 and srv.prefetch.replaying   # nothing started while shut
        gate.idle()
        assert srv.prefetch.wait(key, timeout=60)
        assert s.replayer.done == s.replayer.total and not srv.prefetch.replaying
        backend = srv.daemon.engine.inline_device(key).backend
        inner = backend.preadinto

        def spy(buf, off):
            seen.append(gate.is_open)
            return inner(buf, off)
        backend.preadinto = spy
        srv.run(key, image["start"][:3], image["bytes"])
        assert seen and all(seen)                       # no replay: the gate is left alone
        seen.clear()
        srv.prefetch.replay_started()                   # as while a (long) replay runs
        srv.run(key, image["start"][3:8], image["bytes"])
        assert seen and not any(seen)                   # shut during every device read
        assert gate.is_open                             # and open again once none is in flight
        srv.prefetch.replay_ended()
    finally:
        srv.close()


def test_record_session_unit_lock_created_and_ok_after_delete(tmp_path):
    trace = tmp_path / "t"
    trace.write_bytes(b"")
    s = RecordSession.for_trace(str(trace))
    sink = s.spec.sink()
    sink.arm()
    s.start()
    sink.add(1, 4096, 8192)
    sink.add(0, 512, 0)
    os.unlink(tmp_path / "t.lock")
    assert wait_for(lambda: (tmp_path / "t.ok").exists(), timeout=10.0)
    sink.add(0, 512, 512)                              # too late: not in the trace
    assert tr.load(trace)[1] == [tr.Record(b"R", 1, 4096, 8192), tr.Record(b"R", 0, 512, 0)]
    s.close()


def test_open_image_records_only_after_open(tmp_path, image):
    """Index reads of the open are not recorded; a read after is, in the layer's space."""
    from overlaybd.prefetch.recorder import RecordSpec
    spool = tmp_path / "spool"
    spool.write_bytes(b"")
    cfg = write_config(tmp_path / "c.json", "", [{"file": p} for p in image["layers"]])
    img = open_image(cfg, svc_for(tmp_path), write_result=False, record=RecordSpec(str(spool)))
    try:
        assert spool.stat().st_size == 0
        img.pread(4096, 0)
    finally:
        img.close()
    recs = tr.decode_records(spool.read_bytes())
    assert len(recs) == 1 and recs[0].layer == 0 and recs[0].count == 4096
