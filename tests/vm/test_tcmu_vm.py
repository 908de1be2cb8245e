"""overlaybd-tcmu end to end in a real kernel (User-Mode Linux 6.1 with target_core_user and
tcm_loop): one guest boot runs tests/vm/guest_e2e.sh, each test checks one part of it.  The
daemon is the one users get: installed from the wheel by scripts/install-service.sh (the
``installed`` fixture), not this checkout."""

import hashlib
import json

import pytest

from overlaybd.image import open_image
from overlaybd.lsmt import create_rw
from tests.helpers.env import GOLDEN
from tests.helpers.uml import REPO, guest_record, need_uml, run_in_uml

pytestmark = pytest.mark.vm
MiB = 1 << 20


def _write_json(path, obj):
    path.write_text(json.dumps(obj))


def _image_config(w, name, **extra):
    cfg = {"lowers": [{"file": str(GOLDEN / f"layer{i}.lsmt")} for i in (1, 2, 3)],
           "resultFile": str(w / f"{name}.result")}
    cfg.update(extra)
    _write_json(w / f"{name}.json", cfg)


@pytest.fixture(scope="module")
def guest(tmp_path_factory, installed):
    need_uml()
    w = tmp_path_factory.mktemp("vm-e2e")
    for workers in (0, 2):
        _write_json(w / f"obd-{workers}.json", {
            "logConfig": {"logPath": str(w / "out" / "daemon.log"), "logLevel": 0, "logSizeMB": 64},
            "workerConfig": {"workers": workers}, "enableAudit": False, "enableThread": True,
            "cacheConfig": {"cacheType": "file", "cacheDir": str(w / "cache")}})
    for name in ("golden", "golden2", "dup", "multi3", "multi4", "multi5"):
        _image_config(w, name)
    _image_config(w, "bad", lowers=[{"file": "/nonexistent/layer.lsmt"}])
    _image_config(w, "turbo", lowers=[{"file": str(GOLDEN / f"layer{i}.lsmt")} for i in (1, 2)]
                  + [{"file": str(GOLDEN / "layer3.lsmt"), "targetFile": str(w / "no-such.tar")}])
    create_rw(w / "up.data", w / "up.index", 1 << 30).close()
    _image_config(w, "rw", upper={"data": str(w / "up.data"), "index": str(w / "up.index")})
    p = run_in_uml(["bash", "tests/vm/guest_e2e.sh", w], rw=[w], timeout=420,
                   env={"OBD_TCMU": str(installed.bin / "overlaybd-tcmu")})
    return guest_record(p, w / "out")


@pytest.fixture(scope="module")
def head64():
    """sha256 of the first 64 MiB of the golden image, read on the host."""
    img = open_image(str(GOLDEN / "config.v1.json"), write_result=False)
    try:
        return hashlib.sha256(img.pread(64 * MiB, 0)).hexdigest()
    finally:
        img.close()


def test_golden_image_reads_back_exactly(guest, golden_manifest):
    assert guest["golden_create_rc"] == "0"
    assert guest["golden_result"] == "success"
    assert guest["golden_size"] == str(golden_manifest["virtual_size"])
    assert guest["golden_sha"] == golden_manifest["merged"]["sha256"]


def test_daemon_ran_from_the_installed_wheel(guest, installed):
    started = [line for line in guest["daemon.log"].splitlines() if "starting (package " in line]
    assert len(started) == 2                                     # two daemons, one after another
    site = installed.venv / "lib"
    for line in started:
        package = line.split("starting (package ", 1)[1].split(")", 1)[0]
        assert package.startswith(f"{site}/python3.") and package.endswith("/site-packages/overlaybd")
        assert not package.startswith(str(REPO) + "/overlaybd")


def test_read_only_image_is_write_protected(guest):
    assert guest["golden_ro"] == "1"
    assert "WP=1" in guest["sg_modes.txt"]
    raw = guest["sg_raw_write.txt"]
    assert "Data Protect" in raw
    assert "write protected" in raw.lower()


def test_scsi_identity_seen_by_sg3_utils(guest):
    inq = guest["sg_inq.txt"]
    assert "LIO-ORG" in inq and "TCMU device" in inq and "0002" in inq
    assert "Hardware Error" not in inq
    assert "Maximum unmap block descriptor count: 4" in guest["sg_inq_b0.txt"]
    assert "00 b2 00 04 00 e4 00 00" in guest["sg_inq_b2.txt"]
    assert "Last LBA=2097151" in guest["sg_readcap16.txt"]
    assert "Last LBA=2097151" in guest["sg_readcap10.txt"]


def test_reconfigure_is_refused_and_device_keeps_serving(guest, head64):
    assert guest["reconfig_rc"] != "0"
    assert "Operation not supported" in guest["reconfig.err"]      # our -EOPNOTSUPP reply
    assert guest["golden_head_sha"] == head64


def test_device_without_netlink_reply(guest, head64):
    assert guest["nlreply_create_rc"] == "0"
    assert guest["nlreply_head_sha"] == head64


def test_duplicated_dev_id_is_refused(guest):
    assert guest["dup_rc"] == "1"
    assert guest["dup_result"].startswith("failed:duplicated dev_id 1")


def test_bad_config_fails_enable_with_reason(guest):
    assert guest["bad_rc"] == "1"
    assert guest["bad_result"] == "failed:failed to open local file /nonexistent/layer.lsmt"
    assert "/nonexistent/layer.lsmt" in guest["bad.err"]


def test_turbooci_layer_is_refused_not_served_plain(guest):
    assert guest["turbo_rc"] == "1"
    assert guest["turbo_result"] == ("failed:lowers[2].targetFile is set: TurboOCI layers are "
                                     "not implemented")


def test_inert_field_warned_once_per_daemon_start(guest):
    lines = guest["daemon.log"].splitlines()
    starts = [x for x in lines if "starting (package " in x]
    warned = [x for x in lines if "enableThread = true is not implemented" in x]
    assert len(starts) == 2 and len(warned) == len(starts)    # not once per worker or device


def test_three_devices_at_once_and_removal(guest, head64):
    for i in (3, 4, 5):
        assert guest[f"multi{i}_rc"] == "0"
        assert guest[f"multi{i}_sha"] == head64
    before, after = map(int, guest["multi_remove_uio"].split())
    assert before - after == 3
    assert "dev_3" not in guest["multi_remove_list"]


def test_writable_image_survives_remove_and_reopen(guest):
    assert guest["rw_create_rc"] == "0"
    assert guest["rw_ro"] == "0"
    assert guest["rw_mkfs_rc"] == "0"
    assert guest["rw_removed"] == "gone"
    assert guest["rw_recreate_rc"] == "0"
    written = guest["rw_written.sha"]
    assert len(written.splitlines()) == 3
    assert guest["rw_read.sha"] == written


def test_restart_reattaches_live_devices(guest, head64, golden_manifest):
    assert guest["stop1_rc"] == "0"
    # a read that spanned the restart got every byte right
    assert guest["restart_busy_sha"].strip() == golden_manifest["merged"]["sha256"]
    assert guest["restart_head_sha1"] == head64
    assert guest["restart_head_sha2"] == head64
    assert guest["restart_new_rc"] == "0"
    assert guest["restart_new_sha"] == head64
    assert guest["final_list"].strip() == ""
    assert guest["final_uio"] == "0"
    assert guest["stop2_rc"] == "0"


def test_daemon_log_format(guest):
    lines = guest["daemon.log"].splitlines()
    assert lines
    import re
    alog = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}\|(DEBUG|INFO |WARN |ERROR|FATAL)\|"
                      r"th=[0-9A-F]{16}\|[^|]+:\d+\|[^:|]+:")
    assert all(alog.match(line) for line in lines if not line.startswith((" ", "Traceback")))
    # the SIGHUP near the end reached the supervisor and both workers, and killed none of them
    assert any("SIGHUP: log and audit files reopened; passed on to 2 worker(s)" in line for line in lines)
    hup = next(i for i, line in enumerate(lines) if "SIGHUP:" in line)
    assert not [line for line in lines[hup:] if "exited (exit code" in line]
    assert str(REPO)  # the checkout the guest ran
