"""The package as users get it (the ``dist`` and ``installed`` fixtures in conftest.py).

``build_dist``: the sdist and the wheel built from it, the way ``python -m build`` makes them.
``install_service``: scripts/install-service.sh --root ROOT --wheel WHEEL, i.e. a fresh venv with
that wheel (not the checkout) and the unit and config pointing into ROOT.  The installed root
is kept under .cache/install (or $OVERLAYBD_TEST_CACHE), named by the wheel's contents and the
installer's, so a session installs again only when one of them changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass

import pytest

from tests.helpers.env import REPO

CACHE = pathlib.Path(os.environ.get("OVERLAYBD_TEST_CACHE", REPO / ".cache" / "install"))
INSTALLER = REPO / "scripts" / "install-service.sh"
KEEP_UNUSED_SEC = 86400


@dataclass
class Dist:
    sdist: pathlib.Path
    wheel: pathlib.Path


@dataclass
class Installed:
    root: pathlib.Path

    @property
    def venv(self):
        return self.root / "opt/overlaybd/venv"

    @property
    def bin(self):
        return self.root / "opt/overlaybd/bin"

    @property
    def config(self):
        return self.root / "etc/overlaybd/overlaybd.json"

    @property
    def unit(self):
        return self.root / "etc/systemd/system/overlaybd-tcmu.service"


def user_env():
    """The environment of a user's shell: nothing that points Python at this checkout."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}


def _run(cmd, what, timeout):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       env=user_env())
    if p.returncode != 0:
        pytest.fail(f"{what} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def build_dist(out: pathlib.Path) -> Dist:
    """sdist, then a wheel from that sdist (as `python -m build`), without network access."""
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPO],
         "python -m build", 600)
    (sdist,) = out.glob("overlaybd-*.tar.gz")
    (wheel,) = out.glob("overlaybd-*.whl")
    return Dist(sdist, wheel)


def install_key(wheel: pathlib.Path) -> str:
    """What the installed root depends on: the wheel's files (its RECORD; the compiled
    accelerator differs from build to build, so its source stands for it) and the installer."""
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as z:
        record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        for line in z.read(record).decode().splitlines():
            if not line.split(",", 1)[0].endswith(".so"):
                h.update(line.encode() + b"\n")
    for f in ("overlaybd/zfile/_zfast.c", "scripts/install-service.sh", "scripts/make-venv.sh"):
        h.update((REPO / f).read_bytes())
    return h.hexdigest()[:16]


def install_service(wheel: pathlib.Path) -> Installed:
    CACHE.mkdir(parents=True, exist_ok=True)
    root = CACHE / f"service-{install_key(wheel)}"
    done = root / ".installed"
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # one installer at a time, never half a root
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            p = _run(["bash", INSTALLER, "--root", root, "--wheel", wheel],
                     "scripts/install-service.sh", 900)
            done.write_text(p.stdout + p.stderr)
        os.utime(done)
        for old in CACHE.glob("service-*"):
            marker = old / ".installed"
            if old != root and (not marker.exists()
                                or marker.stat().st_mtime < time.time() - KEEP_UNUSED_SEC):
                shutil.rmtree(old, ignore_errors=True)
    return Installed(root)
