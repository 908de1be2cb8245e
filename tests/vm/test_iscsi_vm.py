"""An overlaybd device exported over iSCSI (LIO's iscsi_target_mod) and read through a real
initiator (open-iscsi's kernel initiator, iscsid + iscsiadm) on 127.0.0.1:3260, in one UML boot
(tests/vm/guest_iscsi.sh).  The daemon is the installed wheel's overlaybd-tcmu, workers 0 and 2;
the image is the golden lz4 stack, read in full and compared with the manifest's sha256."""

import hashlib
import json

import pytest
from conftest import GOLDEN
from uml import guest_record, need_uml, run_in_uml

from overlaybd.image import open_image

pytestmark = pytest.mark.vm


def _write_json(path, obj):
    path.write_text(json.dumps(obj))


@pytest.fixture(scope="module")
def guest(tmp_path_factory, installed, golden_manifest):
    need_uml()
    w = tmp_path_factory.mktemp("vm-iscsi")
    for workers in (0, 2):
        _write_json(w / f"obd-{workers}.json", {
            "logConfig": {"logPath": str(w / "out" / "daemon.log"), "logLevel": 1, "logSizeMB": 64},
            "workerConfig": {"workers": workers}, "enableAudit": False,
            "cacheConfig": {"cacheType": "file", "cacheDir": str(w / "cache")}})
    _write_json(w / "lz4.json", {
        "lowers": [{"file": str(GOLDEN / name)} for name in golden_manifest["stacks"]["lz4"]],
        "resultFile": str(w / "lz4.result")})
    p = run_in_uml(["bash", "tests/vm/guest_iscsi.sh", w], rw=[w], timeout=420,
                   env={"OBD_TCMU": str(installed.bin / "overlaybd-tcmu")})
    return guest_record(p, w / "out")


def test_guest_has_the_iscsi_target_and_initiator(guest):
    assert guest["modules"].split() == ["iscsi_target_mod", "iscsi_tcp"]


@pytest.mark.parametrize("workers", [0, 2])
def test_golden_lz4_image_reads_byte_exact_over_iscsi(guest, golden_manifest, workers, capsys):
    w = f"w{workers}"
    assert guest[f"{w}_create_rc"] == "0"
    assert guest[f"{w}_export_rc"] == "0"
    iqn = f"iqn.2026-12.org.overlaybd:lz4-{w}"
    assert guest[f"{w}_url"].strip() == f"iscsi://127.0.0.1:3260/{iqn}/0"
    # the TCMU backstore is the LUN
    assert guest[f"{w}_lun_link"] == f"/sys/kernel/config/target/core/user_999999999/dev_{workers}"
    assert guest[f"{w}_login_rc"] == "0"
    assert "/session" in guest[f"{w}_sysfs"]       # the disk hangs off an iSCSI session
    assert guest[f"{w}_vendor"].strip() == "LIO-ORG"
    assert guest[f"{w}_size"] == str(golden_manifest["virtual_size"])
    assert guest[f"{w}_ro"] == "1"                  # no upper layer: write-protected
    got, want = guest[f"{w}_sha"], golden_manifest["merged"]["sha256"]
    with capsys.disabled():
        print(f"\n[iscsi] workers {workers}: 1 GiB read over iSCSI in {guest[f'{w}_secs']} s, "
              f"sha256 {got} {'==' if got == want else '!='} expected {want}")
    assert got == want
    assert guest[f"{w}_logout_sessions"] == "0"
    assert guest[f"{w}_unexport_rc"] == "0"
    assert guest[f"{w}_remove_rc"] == "0"
    assert guest[f"{w}_stop_rc"] == "0"


def test_acl_and_chap_admit_only_the_named_initiator_with_its_secret(guest):
    """scripts/uml/iscsi-export.sh --acl INI --chap USER PASS, checked with libiscsi's iscsi-inq."""
    assert guest["acl_export_rc"] == "0"
    assert guest["acl_nocred_rc"] != "0"          # CHAP required
    assert "Authentication failure" in guest["acl_nocred.txt"]
    assert guest["acl_stranger_rc"] != "0"        # right secret, initiator not in the ACLs
    assert "Authorization failure" in guest["acl_stranger.txt"]
    assert guest["acl_badpass_rc"] != "0"
    assert "Authentication failure" in guest["acl_badpass.txt"]
    assert guest["acl_ok_rc"] == "0", guest["acl_ok.txt"]
    assert "LIO-ORG" in guest["acl_ok.txt"]
    assert guest["acl_unexport_rc"] == "0"


def test_daemon_restart_under_a_logged_in_initiator(guest, golden_manifest):
    """SIGTERM (then SIGKILL) and a new daemon while the initiator reads: the session stays
    logged in, the read in flight completes with every byte right, and later reads work."""
    assert guest["restart_stop_rc"] == "0"
    assert guest["restart_sha"].strip() == golden_manifest["merged"]["sha256"]
    assert guest["restart_session_state"].split() == ["LOGGED_IN"]
    img = open_image(str(GOLDEN / "config.v1.json"), write_result=False)
    try:
        head64 = hashlib.sha256(img.pread(64 << 20, 0)).hexdigest()
    finally:
        img.close()
    assert guest["restart_after_sha"] == head64
    # the same after SIGKILL of the supervisor (a crash): its workers go too, the new daemon
    # takes the device over, the session survives and the read in flight is byte-exact
    assert guest["kill_workers_left"] == "0"
    assert guest["kill_sha"].strip() == golden_manifest["merged"]["sha256"]
    assert guest["kill_session_state"].split() == ["LOGGED_IN"]
    assert guest["kill_after_sha"] == head64


def test_everything_torn_down(guest):
    assert guest["final_targets"].strip() == ""
