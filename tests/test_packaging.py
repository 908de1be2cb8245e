"""A plain (non-editable) install is complete.  The wheel, built from the sdist as `python -m
build` does, holds every module of the checkout, the C accelerator and the conf files; installed
by scripts/install-service.sh into a fresh venv, every module imports from that venv (not from
this checkout) and every tool runs.  The kernel tests serve devices from the same install."""

import configparser
import importlib
import json
import pathlib
import re
import subprocess
import tarfile
import zipfile

import overlaybd
from tests.helpers.install import REPO, user_env

VERSION = overlaybd.__version__


def source_modules():
    """Every module file of the package in this checkout, as a path inside a wheel."""
    return sorted(p.relative_to(REPO).as_posix() for p in (REPO / "overlaybd").rglob("*.py"))


def tools_in_checkout():
    """overlaybd/tools/<name>.py with a ``main``: the tool overlaybd-<name>."""
    names = [p.stem for p in (REPO / "overlaybd/tools").glob("*.py") if p.stem != "__init__"]
    return {f"overlaybd-{n}": f"overlaybd.tools.{n}:main" for n in names
            if hasattr(importlib.import_module(f"overlaybd.tools.{n}"), "main")}


def console_scripts(wheel):
    with zipfile.ZipFile(wheel) as z:
        text = z.read(f"overlaybd-{VERSION}.dist-info/entry_points.txt").decode()
    cp = configparser.ConfigParser()
    cp.read_string(text)
    return dict(cp["console_scripts"])


def test_every_package_directory_is_a_package():
    dirs = {p.parent for p in (REPO / "overlaybd").rglob("*.py") if "__pycache__" not in p.parts}
    assert [d for d in dirs if not (d / "__init__.py").exists()] == []


def test_wheel_holds_every_module_the_accelerator_and_the_conf(dist):
    with zipfile.ZipFile(dist.wheel) as z:
        names = set(z.namelist())
        conf = {f: z.read(f"overlaybd-{VERSION}.data/data/share/overlaybd/conf/{f}")
                for f in ("overlaybd.json", "overlaybd-tcmu.service")}
    assert [m for m in source_modules() if m not in names] == []
    assert [n for n in names if re.fullmatch(r"overlaybd/zfile/_zfast\.cpython-\d+-.*\.so", n)]
    for f, data in conf.items():
        assert data == (REPO / "conf" / f).read_bytes(), f
    # the package, its metadata and the conf: no tests/, bench/ or stress/
    assert {n.split("/")[0] for n in names} == {
        "overlaybd", f"overlaybd-{VERSION}.dist-info", f"overlaybd-{VERSION}.data"}


def test_wheel_has_a_console_script_for_every_tool(dist):
    assert console_scripts(dist.wheel) == tools_in_checkout()


def test_installed_package_imports_every_module_from_the_venv(installed, tmp_path):
    probe = ("import importlib, json, pkgutil, overlaybd\n"
             "mods = [m.name for m in pkgutil.walk_packages(overlaybd.__path__, 'overlaybd.')]\n"
             "print(json.dumps({m: importlib.import_module(m).__file__ for m in mods}))\n")
    p = subprocess.run([installed.venv / "bin/python", "-c", probe], cwd=tmp_path, env=user_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    files = json.loads(p.stdout)
    expected = {m[:-3].replace("/", ".").removesuffix(".__init__") for m in source_modules()}
    assert expected - {"overlaybd"} <= set(files)
    assert "overlaybd.zfile._zfast" in files
    site = (installed.venv / "lib").resolve()
    assert [f for f in files.values() if not pathlib.Path(f).resolve().is_relative_to(site)] == []


def test_every_tool_of_the_installed_service_runs(installed, dist, tmp_path):
    tools = console_scripts(dist.wheel)
    assert sorted(p.name for p in installed.bin.iterdir()) == sorted(tools)
    for name in tools:
        link = installed.bin / name
        assert link.resolve() == (installed.venv / "bin" / name).resolve()
        p = subprocess.run([link, "--help"], cwd=tmp_path, env=user_env(), capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, f"{name}: {p.stderr}"
        assert p.stdout.startswith(f"usage: {name}"), p.stdout


def test_sdist_holds_the_build_inputs_and_no_half_test_suite(dist):
    with tarfile.open(dist.sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"setup.py", "pyproject.toml", "README.md", "conf/overlaybd.json",
            "conf/overlaybd-tcmu.service", "overlaybd/zfile/_zfast.c"} <= names
    assert [n for n in names if n.startswith(("tests/", "bench/", "stress/", ".venv/", ".cache/"))] == []
