"""The .deb's maintainer scripts (scripts/deb/) where systemd runs and where it does not, in the
kernel guest (its /run, /etc and /var are its own; systemctl and modprobe are recording
stand-ins): tests/vm/guest_deb_scripts.sh.  The package itself, installed on a machine without
a running systemd, is tests/vm/test_deb_vm.py."""

import pytest

from tests.helpers.uml import need_uml, run_in_uml

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    need_uml()
    w = tmp_path_factory.mktemp("deb-scripts")
    p = run_in_uml(["bash", "tests/vm/guest_deb_scripts.sh", w], rw=[w], timeout=300)
    if p.returncode != 0:
        pytest.fail(f"guest script failed ({p.returncode}):\n{p.stderr[-4000:]}")

    def get(key):
        f = w / "out" / key
        assert f.exists(), f"the guest recorded no {key}"
        return f.read_text()
    return get


def calls(cases, name):
    """The commands the script NAME ran; it must succeed (never fail the dpkg run)."""
    assert cases(f"{name}.rc") == "0", cases(f"{name}.err")
    return cases(f"{name}.calls").splitlines()


def test_without_systemd_nothing_is_enabled_or_started(cases):
    assert calls(cases, "nosd-install") == []
    assert "systemd is not running here" in cases("nosd-install.err")
    assert calls(cases, "nosd-remove") == [] and calls(cases, "nosd-postrm") == []


def test_first_install_enables_and_starts_where_the_kernel_has_target_core_user(cases):
    unit = "overlaybd-tcmu.service"
    assert calls(cases, "install") == ["systemctl daemon-reload", f"systemctl enable {unit}",
                                       "modprobe -q target_core_user", f"systemctl start {unit}"]
    assert calls(cases, "install-nomod") == ["systemctl daemon-reload", f"systemctl enable {unit}",
                                             "modprobe -q target_core_user"]
    assert "not started: this kernel has no target_core_user" in cases("install-nomod.err")


def test_upgrade_restarts_only_a_running_service_and_remove_stops_it(cases):
    assert calls(cases, "upgrade") == ["systemctl daemon-reload",
                                       "systemctl try-restart overlaybd-tcmu.service"]
    assert calls(cases, "prerm-upgrade") == []
    assert calls(cases, "prerm-remove") == ["systemctl disable --now overlaybd-tcmu.service"]


def test_purge_removes_the_link_to_the_packages_unit_only(cases):
    assert calls(cases, "purge") == ["systemctl daemon-reload"]
    assert cases("wants_left") == "0"
    assert cases("other_left") == "/etc/systemd/system/my-overlaybd-tcmu.service"
