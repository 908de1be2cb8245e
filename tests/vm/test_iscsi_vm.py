"""An overlaybd device exported over iSCSI (LIO's iSCSI fabric on loopback) and read byte for
byte through a real initiator (open-iscsi's iscsid + iscsiadm, the kernel's iscsi_tcp), with
workers 0 and 2, in the UML 6.1 kernel; the daemon is restarted under the logged-in session.
The daemon is the installed one (wheel), as in test_tcmu_vm.py.  docs/iscsi.md says how."""

import hashlib
import json
import shutil

import pytest

from overlaybd.image import open_image
from tests.helpers.env import GOLDEN
from tests.helpers.uml import need_uml, run_in_uml

pytestmark = pytest.mark.vm
MiB = 1 << 20


@pytest.fixture(scope="module")
def guest(tmp_path_factory, installed):
    need_uml()
    for tool in ("iscsid", "iscsiadm"):
        assert shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin"), \
            f"{tool} missing: `make deps` installs open-iscsi"
    w = tmp_path_factory.mktemp("vm-iscsi")
    for n in (0, 2):
        (w / f"obd-{n}.json").write_text(json.dumps({
            "logConfig": {"logPath": str(w / "out" / f"daemon-w{n}.log"), "logLevel": 1},
            "workerConfig": {"workers": n}, "enableAudit": False}))
    (w / "lz4.json").write_text(json.dumps({
        "lowers": [{"file": str(GOLDEN / f"layer{i}.lz4.zfile")} for i in (1, 2, 3)],
        "resultFile": str(w / "lz4.result")}))
    p = run_in_uml(["bash", "tests/vm/guest_iscsi.sh", w], rw=[w], timeout=600,
                   mods="iscsi_target_mod,iscsi_tcp",
                   env={"OBD_TCMU": str(installed.bin / "overlaybd-tcmu")})
    out = w / "out"
    if p.returncode != 0 or not (out / "done").exists():
        logs = "".join(f.read_text()[-2000:] for f in sorted(out.glob("*.txt")) + sorted(out.glob("*.log")))
        pytest.fail(f"guest script failed ({p.returncode}):\n{p.stderr[-3000:]}\n{logs}")
    return {f.name: f.read_text() for f in out.iterdir() if f.is_file()}


@pytest.mark.parametrize("workers", [0, 2])
def test_whole_disk_reads_byte_exact_through_the_initiator(guest, golden_manifest, workers, say):
    assert guest[f"login-w{workers}.rc"] == "0", guest.get(f"login-w{workers}.txt")
    assert guest[f"size-w{workers}"] == str(golden_manifest["virtual_size"])
    assert guest[f"sha-w{workers}"] == golden_manifest["merged"]["sha256"]
    mib_s = golden_manifest["virtual_size"] / MiB / float(guest[f"secs-w{workers}"])
    say(f"[iscsi] workers={workers}: {golden_manifest['virtual_size'] >> 20} MiB read through "
          f"{guest[f'disk-w{workers}']}, sha256 {guest[f'sha-w{workers}'][:16]}... equals the "
          f"golden image's ({mib_s:.0f} MiB/s)")
    assert guest[f"logout-w{workers}.rc"] == "0"
    assert guest[f"daemon-w{workers}.rc"] == "0"


def test_daemon_restart_under_a_logged_in_initiator(guest, say):
    img = open_image(str(GOLDEN / "config.v1.json"), write_result=False)
    try:
        head = hashlib.sha256(img.pread(64 * MiB, 0)).hexdigest()
    finally:
        img.close()
    assert guest["stop-w0.rc"] == "0"
    assert guest["restart-head-sha"] == head
    say(f"[iscsi] daemon restarted under the logged-in session: first 64 MiB sha256 {head[:16]}... equal")


def test_restart_and_crash_under_a_read_in_flight(guest, golden_manifest, say):
    """Workers 2: SIGTERM, then SIGKILL of the supervisor, each while a whole-disk read runs
    through the initiator.  The workers go with it, the new daemon takes the device over, the
    session stays logged in and the read in flight is byte-exact."""
    want = golden_manifest["merged"]["sha256"]
    assert guest["inflight-TERM-rc"] == "0"
    assert guest["inflight-KILL-rc"] == str(128 + 9)
    for sig in ("TERM", "KILL"):
        assert guest[f"inflight-{sig}-workers-left"] == "0"
        assert guest[f"inflight-{sig}-session"].split() == ["LOGGED_IN"]
        assert guest[f"inflight-{sig}-sha"].strip() == want
    say(f"[iscsi] SIGTERM and SIGKILL under a read in flight: sha256 {want[:16]}... both times")


def test_acl_and_chap_admit_only_the_named_initiator_with_its_secret(guest):
    assert guest["acl-nocred.rc"] != "0"
    assert "Authentication failure" in guest["acl-nocred.txt"]
    assert guest["acl-stranger.rc"] != "0"        # right secret, initiator not in the ACLs
    assert "Authorization failure" in guest["acl-stranger.txt"]
    assert guest["acl-badpass.rc"] != "0"
    assert "Authentication failure" in guest["acl-badpass.txt"]
    assert guest["acl-ok.rc"] == "0", guest["acl-ok.txt"]
    assert "LIO-ORG" in guest["acl-ok.txt"]
    assert guest["acl-unexport.rc"] == "0"
