"""The systemd unit (conf/overlaybd-tcmu.service) and what scripts/install-service.sh installs.
tests/vm/test_service_vm.py runs the installed unit's commands in a real kernel."""

import inspect
import json
import os
import shutil
import subprocess

import pytest

from overlaybd.tcmu.daemon import Daemon
from overlaybd.workers import Engine
from tests.helpers.env import need
from tests.helpers.install import REPO

UNIT = REPO / "conf" / "overlaybd-tcmu.service"


def unit_settings(path):
    """{section: {key: [values]}} of a unit file (keys may repeat)."""
    out, section = {}, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def one(settings, key):
    (value,) = settings[key]
    return value


def seconds(value):
    assert value.isdigit(), f"give {value!r} in plain seconds"
    return int(value)


def test_unit_starts_after_local_filesystems_not_before_them():
    unit = unit_settings(UNIT)["Unit"]
    after = " ".join(unit.get("After", [])).split()
    assert "local-fs.target" in after and "network.target" not in after
    assert "Before" not in unit and "DefaultDependencies" not in unit   # shutdown ordering stays
    assert set(one(unit, "RequiresMountsFor").split()) == {"/opt/overlaybd", "/var/log"}


def test_unit_restarts_forever_and_stops_workers_with_the_supervisor():
    svc = unit_settings(UNIT)["Service"]
    assert one(svc, "Restart") == "always"
    # systemd's default start limit is 5 starts in 10 s: RestartSec keeps it out of reach
    assert seconds(one(svc, "RestartSec")) * 5 > 10
    assert one(svc, "KillMode") == "mixed"           # SIGTERM to the supervisor, SIGKILL to leftovers
    # the stop timeout covers the supervisor's drain: commands in flight, the engine, the workers
    drain = inspect.signature(Daemon.shutdown).parameters["timeout"].default
    engine = inspect.signature(Engine.stop).parameters["timeout"].default
    assert seconds(one(svc, "TimeoutStopSec")) >= drain + 2 * engine


def test_unit_reload_signals_the_supervisor_and_readiness_is_notified():
    svc = unit_settings(UNIT)["Service"]
    assert one(svc, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(svc, "Type") == "notify" and one(svc, "NotifyAccess") == "main"
    assert int(one(svc, "OOMScoreAdjust")) < 0
    assert one(svc, "ExecStart") == ("/opt/overlaybd/bin/overlaybd-tcmu "
                                     "/etc/overlaybd/overlaybd.json")


def test_install_service_puts_unit_and_config_under_its_root(installed):
    root = str(installed.root)
    svc = unit_settings(installed.unit)["Service"]
    assert one(svc, "ExecStart") == f"{root}/opt/overlaybd/bin/overlaybd-tcmu {installed.config}"
    assert unit_settings(installed.unit)["Unit"]["RequiresMountsFor"] == [
        f"{root}/opt/overlaybd {root}/var/log"]
    shipped = (REPO / "conf/overlaybd.json").read_text()
    assert installed.config.read_text() == shipped.replace(
        '"/opt/overlaybd', f'"{root}/opt/overlaybd').replace('"/var/log', f'"{root}/var/log')
    cfg = json.loads(installed.config.read_text())
    assert cfg["logConfig"]["logPath"].startswith(root + "/var/log/")
    assert (installed.root / "var/log").is_dir()


def test_installed_unit_passes_systemd_analyze_verify(installed):
    need(shutil.which("systemd-analyze"), "systemd-analyze missing: apt-get install systemd "
                                          "(`make deps`)")
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", str(installed.unit)],
                       capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stdout + p.stderr) == (0, "")


def test_systemd_analyze_catches_a_unit_pointing_at_nothing(tmp_path):
    """The check above can fail: the shipped unit, whose /opt paths this host does not have."""
    need(shutil.which("systemd-analyze"), "systemd-analyze missing")
    if os.path.exists("/opt/overlaybd/bin/overlaybd-tcmu"):
        pytest.skip("overlaybd is installed in /opt on this host")
    unit = tmp_path / "overlaybd-tcmu.service"
    unit.write_bytes(UNIT.read_bytes())
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "/opt/overlaybd/bin/overlaybd-tcmu" in p.stderr
