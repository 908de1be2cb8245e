"""The service `make install-service` installs, run the way its systemd unit says, in a real
kernel: tests/vm/guest_service.sh runs the unit's ExecStartPre, ExecStart (with its
OOMScoreAdjust, a NOTIFY_SOCKET and an empty environment), ExecReload and KillMode=mixed stop,
serving the golden image (lz4 ZFile layers) from the wheel-installed venv."""

import json
import pathlib

import pytest

from tests.helpers.env import GOLDEN
from tests.helpers.uml import need_uml, run_in_uml

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def guest(tmp_path_factory, installed):
    need_uml()
    w = tmp_path_factory.mktemp("vm-service")
    cfg = json.loads(installed.config.read_text())      # the shipped settings, but ...
    cfg.setdefault("logConfig", {})["logPath"] = str(w / "log" / "overlaybd.log")
    cfg["auditPath"] = str(w / "log" / "audit.log")
    cfg.setdefault("cacheConfig", {})["cacheDir"] = str(w / "cache")
    cfg.setdefault("workerConfig", {})["workers"] = 2  # (the guest has 1 CPU: 0 by default)
    (w / "obd.json").write_text(json.dumps(cfg))
    (w / "golden.json").write_text(json.dumps({
        "lowers": [{"file": str(GOLDEN / f"layer{i}.lz4.zfile")} for i in (1, 2, 3)],
        "resultFile": str(w / "golden.result")}))
    p = run_in_uml(["bash", "tests/vm/guest_service.sh", w, installed.root], rw=[w], timeout=420)
    if p.returncode != 0:
        pytest.fail(f"guest script failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return Record(w)


class Record:
    def __init__(self, w):
        self.w = pathlib.Path(w)

    def __getitem__(self, key):
        f = self.w / "out" / key
        assert f.exists(), f"the guest recorded no '{key}': {self.log[-3000:]}"
        return f.read_text()

    @property
    def log(self):
        f = self.w / "log" / "overlaybd.log"
        return f.read_text() if f.exists() else ""


def test_installed_service_serves_the_golden_image(guest, golden_manifest):
    assert guest["pre_rc"] == "0"                   # ExecStartPre: modprobe target_core_user
    assert guest["ready"] == "1"
    assert guest["create_rc"] == "0" and guest["result"] == "success"
    assert guest["sha"] == golden_manifest["merged"]["sha256"]


def test_service_ran_the_installed_package(guest, installed):
    started = [line for line in guest.log.splitlines() if "starting (package " in line]
    assert len(started) == 1
    assert f"(package {installed.venv}/lib/python3." in started[0]
    assert f"config {installed.config}," in started[0]


def test_readiness_and_stopping_are_notified(guest):
    lines = guest["notify"].splitlines()
    assert lines == ["READY=1 STATUS=serving 0 device(s)", "STOPPING=1"]


def test_only_the_supervisor_is_protected_from_the_oom_killer(guest):
    assert guest["main_oom"] == "-999"
    workers = [line.split() for line in guest["workers"].splitlines()]
    assert len(workers) == 2
    assert [w[1] for w in workers] == ["0", "0"]


def test_reload_reopens_the_log(guest):
    assert guest["reload_rc"] == "0"
    assert "SIGHUP" in guest.log


def test_sigterm_to_the_supervisor_stops_the_workers_too(guest):
    assert guest["stop_rc"] == "0"
    assert guest["left"] == ""          # nothing left for KillMode=mixed's SIGKILL
    assert "overlaybd-tcmu stopped" in guest.log
