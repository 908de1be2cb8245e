"""Running commands in the User-Mode-Linux fixture (scripts/uml) from tests."""

import os
import pathlib
import subprocess
import sys

from tests.helpers.env import REPO, need

RUN = REPO / "scripts" / "uml" / "run-in-uml.sh"
UML_DIR = pathlib.Path(os.environ.get("OVERLAYBD_UML_DIR", "/var/cache/overlaybd-uml"))


def need_uml():
    """Skip (fail in CI) unless the UML kernel is installed and we are root."""
    need(os.geteuid() == 0, "the UML fixture needs root (configfs, modules)")
    need((UML_DIR / "pkg/usr/bin/linux.uml").exists(),
         f"UML kernel not installed in {UML_DIR}: run `sudo make deps` (scripts/uml/install.sh)")


def run_in_uml(args, rw=(), timeout=600, mem_mb=2048, env=None, mods=None):
    """Run ``args`` in a fresh guest from the repository root (``env``: more environment;
    ``mods``: more kernel modules, comma-separated); returns CompletedProcess."""
    cmd = [str(RUN), "-t", str(timeout), "-m", str(mem_mb)]
    if mods:
        cmd += ["--mods", mods]
    for d in rw:
        cmd += ["--rw", str(d)]
    env = dict(os.environ, OBD_PYTHON=sys.executable, **(env or {}))
    return subprocess.run(cmd + ["--"] + [str(a) for a in args], cwd=REPO, env=env,
                          check=False, capture_output=True, text=True, timeout=timeout + 60)


class GuestRecord:
    """What a guest script recorded with ``rec KEY VALUE`` (one file per fact in OUT)."""

    def __init__(self, out):
        self.out = pathlib.Path(out)

    def __getitem__(self, key):
        f = self.out / key
        assert f.exists(), f"the guest recorded no '{key}' (see {self.out}/daemon.log)"
        return f.read_text()


def guest_record(p, out):
    """Fail the test with the guest's stderr and the daemon log's tail unless ``p`` (a
    run_in_uml result) succeeded; else the GuestRecord of ``out``."""
    import pytest
    out = pathlib.Path(out)
    if p.returncode != 0:
        log = (out / "daemon.log").read_text()[-4000:] if (out / "daemon.log").exists() else ""
        pytest.fail(f"guest script failed ({p.returncode}):\n{p.stderr[-4000:]}\n{log}")
    return GuestRecord(out)
