"""Trace prefetch in the real kernel (UML 6.1, target_core_user, tcm_loop, ext4 mounted from
the device): the record flow exactly as containerd's record-trace drives it, replay of that
trace on a new device, and an acceleration layer holding it.  One guest boot runs
tests/vm/guest_prefetch.sh; each test checks one part."""

import os
import pathlib

import pytest

from overlaybd.prefetch import trace as tr
from tests.helpers.ext4 import need_e2fsprogs
from tests.helpers.prefetch import APP, Recorder, build_image, workload
from tests.helpers.uml import need_uml, run_in_uml

pytestmark = [pytest.mark.vm, pytest.mark.registry]


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    need_uml()
    need_e2fsprogs()
    w = tmp_path_factory.mktemp("vm-prefetch")
    img = build_image(str(w / "img"))
    for k, p in enumerate(img["layers"]):
        pathlib.Path(p).rename(w / f"layer{k}.tar")
    (w / "app.txt").write_text("\n".join(APP) + "\n")
    p = run_in_uml(["bash", "tests/vm/guest_prefetch.sh", w], rw=[w], timeout=540)
    out = w / "out"
    if p.returncode != 0:
        log = (out / "daemon.log").read_text()[-3000:] if (out / "daemon.log").exists() else ""
        pytest.fail(f"guest script failed ({p.returncode}):\n{p.stderr[-3000:]}\n{log}")
    return w, out, img


def fact(out, key):
    f = out / key
    assert f.exists(), f"the guest recorded no {key}: " + (
        (out / "steps.err").read_text() if (out / "steps.err").exists() else "")
    return f.read_text()


def expected_shas(img):
    return [img["files"][p] for p in APP]


def test_record_flow_as_containerd_drives_it(guest):
    w, out, img = guest
    assert fact(out, "rec_create_rc") == "0" and fact(out, "rec_result") == "success"
    assert fact(out, "rec_lock_created") == "1"
    assert fact(out, "rec_sha").split() == expected_shas(img)
    assert fact(out, "rec_ok") == "1"
    assert int(fact(out, "rec_ok_ms")) <= 2000
    assert not (w / "rec" / "trace.lock").exists() and not (w / "rec" / "trace.spool").exists()
    # background download stayed off while recording (delay 0, the layers had a dir)
    assert fact(out, "rec_bk_download") == "0" and fact(out, "rec_dl_files") == "0"


def test_recorded_trace_is_valid_and_in_layer_space(guest):
    """The trace holds the layer reads (LSMT address space, after tar and ZFile) behind every
    byte of the files the start read."""
    w, out, img = guest
    kind, records = tr.load(w / "rec" / "trace")
    assert kind == "trace" and len(records) > len(APP)
    assert {r.layer for r in records} == {0, 1} and all(r.op == b"R" for r in records)
    rec = Recorder([w / f"layer{k}.tar" for k in (0, 1)])
    try:
        sizes = [f.size for f in rec.decoded]
        want = rec.expect(workload(img["raw"], APP))
    finally:
        rec.close()
    assert all(r.offset + r.count <= sizes[r.layer] for r in records)
    have = {(r.layer, r.offset + k) for r in records for k in range(0, r.count, 512)}
    need = {(i, off + k) for i, n, off in want for k in range(0, n, 512)}
    assert need <= have


def test_replay_warms_the_cache_before_the_start(guest):
    _, out, img = guest
    assert fact(out, "cold_create_rc") == "0" and fact(out, "replay_create_rc") == "0"
    cold = int(fact(out, "cold_during"))
    assert cold >= 10                                   # without a trace the start fetches
    assert fact(out, "replay_done") == "1"
    assert int(fact(out, "replay_during")) == 0          # with it, nothing is left to fetch
    assert fact(out, "replay_sha").split() == fact(out, "cold_sha").split() == expected_shas(img)


def test_acceleration_layer_is_dropped_and_its_trace_replayed(guest):
    w, out, img = guest
    assert fact(out, "accel_members").split() == ["trace"]
    assert (w / "accel" / "trace").read_bytes() == (w / "rec" / "trace").read_bytes()
    assert fact(out, "accel_create_rc") == "0"
    assert int(fact(out, "accel_size")) == os.path.getsize(img["raw"])   # not a disk layer
    assert fact(out, "accel_done") == "1"
    assert int(fact(out, "accel_during")) == 0
    assert fact(out, "accel_sha").split() == expected_shas(img)
    assert fact(out, "stop_rc") == "0"
