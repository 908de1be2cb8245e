"""The Debian package as an administrator meets it, on this machine's real root (as root; CI):
`make deb` builds it twice (the second time with a higher version), apt-get installs it, its
files and its conffile are checked, the INSTALLED /opt/overlaybd/bin/overlaybd-tcmu serves the
golden image in the kernel guest (tests/vm/guest_service.sh, run the way the package's unit
says), the administrator changes the conffile and adds files of their own, the upgrade keeps
the change, then remove and purge leave nothing but the administrator's files.

The whole life runs once, in the ``life`` fixture, which records what it saw for the tests to
assert on; it refuses to start on a machine where any path the package owns already exists, and
whatever happens it purges the package and removes the files it made itself, nothing else.
Every step is written to the test log (pytest's terminal, also with -q)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from tests.helpers.env import GOLDEN, need
from tests.helpers.install import user_env
from tests.helpers.uml import REPO, need_uml, run_in_uml

pytestmark = [pytest.mark.vm, pytest.mark.slow]

PKG = "overlaybd"
OPT, ETC = pathlib.Path("/opt/overlaybd"), pathlib.Path("/etc/overlaybd")
CONF = ETC / "overlaybd.json"
UNIT = pathlib.Path("/lib/systemd/system/overlaybd-tcmu.service")
DOC = pathlib.Path("/usr/share/doc/overlaybd")
# What the service makes at the shipped config's default paths (purge removes them).
RUNTIME = [OPT / "registry_cache/sha256/0a/blob", pathlib.Path("/var/log/overlaybd.log"),
           pathlib.Path("/var/log/overlaybd.log.1"), pathlib.Path("/var/log/overlaybd-audit.log")]
# The administrator's own files (purge keeps them).
USER = [OPT / "cred.json", ETC / "images/app.config.v1.json"]
TOOLS = ["overlaybd-tcmu", "overlaybd-create", "overlaybd-commit", "overlaybd-zfile",
         "overlaybd-merge", "overlaybd-export", "overlaybd-info", "overlaybd-logstat"]
GONE = ("not-known", "not-installed")          # dpkg-query's status of a package never or no more there
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C"}


def sh(*cmd, timeout=900, check=True, cwd="/", env=ENV):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       env=env, cwd=cwd, stdin=subprocess.DEVNULL)    # (a dpkg prompt fails, never waits)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n"
                             f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def status():
    p = sh("dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}", PKG, check=False)
    return p.stdout.strip() if p.returncode == 0 else "not-known"


def tree(*roots):
    """Every path under roots (and the roots), as strings."""
    out = set()
    for r in roots:
        if os.path.lexists(r):
            out.add(str(r))
            out.update(str(p) for p in pathlib.Path(r).rglob("*"))
    return out


class Life(dict):
    """What the fixture saw, by step; a step that failed raises its error where it is used."""

    def __getitem__(self, key):
        if key in self.errors:
            pytest.fail(f"step {key!r} failed: {self.errors[key]}")
        assert key in self, f"step of {key!r} did not run: {self.errors}"
        return dict.__getitem__(self, key)


@pytest.fixture(scope="module")
def life(tmp_path_factory, golden_manifest, say):
    need_uml()
    need(shutil.which("dpkg-deb") and shutil.which("apt-get"), "dpkg-deb and apt-get (Debian)")
    taken = [str(p) for p in [OPT, ETC, UNIT, DOC, *RUNTIME] if os.path.lexists(p)]
    need(status() in GONE and not taken,
         f"this test installs the package into / and needs it absent: found {taken} "
         f"(package status {status()!r}; `dpkg --purge overlaybd` if a killed run left it)")
    terminal = say

    def say(msg):
        terminal(f"[deb {time.strftime('%H:%M:%S')}] {msg}")

    w = tmp_path_factory.mktemp("deb")
    rec = Life()
    rec.errors = {}
    made = []                                   # what this test created outside the package

    def step(name, fn):
        try:
            rec[name] = fn()
        except (Exception, pytest.fail.Exception) as e:     # recorded; the tests needing it fail
            rec.errors[name] = f"{type(e).__name__}: {e}"
            say(f"{name}: FAILED: {rec.errors[name][:2000]}")

    def build(out, version=None, wheels=None):
        t = time.monotonic()
        args = ["make", "-C", REPO, "deb", f"DEB_OUT={out}"] + ([f"DEB_VERSION={version}"] if version else [])
        env = user_env()                            # (pip's settings and proxies carry over)
        if wheels:                                  # offline: no index, proxies that refuse
            args.append(f"DEB_WHEELS={wheels}")
            env.update({k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy",
                                                         "HTTP_PROXY", "HTTPS_PROXY")})
        say(f"build: {' '.join(map(str, args))}" + (" (network proxies refused)" if wheels else ""))
        sh(*args, timeout=1200, env=env)
        (deb,) = pathlib.Path(out).glob("overlaybd_*.deb")
        fields = {k: sh("dpkg-deb", "-f", deb, k).stdout.strip()
                  for k in ("Package", "Version", "Depends", "Architecture")}
        say(f"built {deb.name}: {deb.stat().st_size / 2**20:.1f} MiB in {time.monotonic() - t:.0f} s; "
            f"Depends: {fields['Depends']}")
        return {"deb": deb, **fields,
                "conffiles": sh("dpkg-deb", "-I", deb, "conffiles").stdout.split(),
                "contents": sh("dpkg-deb", "-c", deb).stdout}

    def collect_wheels(d):
        """What an offline build needs, fetched beforehand: the dependencies' wheels, setuptools."""
        say(f"wheels for an offline build: pip wheel -w {d} <checkout> setuptools wheel")
        sh(sys.executable, "-m", "pip", "wheel", "-q", "-w", d, REPO, "setuptools", "wheel",
           env=user_env())
        for f in d.glob("overlaybd-*.whl"):     # the build makes its own from the checkout
            f.unlink()
        return d

    def install(deb):
        say(f"install: apt-get install -y ./{deb.name}")
        p = sh("apt-get", "install", "-y", f"./{deb.name}", cwd=deb.parent)
        for line in (p.stdout + p.stderr).splitlines():
            if line.startswith(("Setting up", "Unpacking", "overlaybd:")):
                say(f"  {line}")
        say(f"  dpkg status: {status()}")
        return {"out": p.stdout + p.stderr, "status": status()}

    def inspect():
        tools = {}
        for t in TOOLS:         # each one starts from the installed venv, in a clean environment
            p = sh(OPT / "bin" / t, "--version", check=False)
            tools[t] = (p.returncode, (p.stdout + p.stderr).strip())
        owned = set(sh("dpkg-query", "-L", PKG).stdout.split())
        r = {"tools": tools, "conf": CONF.read_bytes(),
             "conffiles": sh("dpkg-query", "-W", "-f", "${Conffiles}", PKG).stdout.split(),
             "verify": sh("dpkg", "--verify", PKG, check=False).stdout,
             "python": os.path.realpath(OPT / "venv/bin/python"),
             "pyvenv": (OPT / "venv/pyvenv.cfg").read_text(),
             "unowned": sorted(tree(OPT, ETC) - owned),
             "unit": UNIT.read_text() if UNIT.exists() else None,
             "wants": sorted(str(p) for p in pathlib.Path("/etc/systemd/system").glob("*.wants/overlaybd*"))}
        say(f"  files: {len(owned)} owned; tools: " + ", ".join(f"{t} rc={rc}" for t, (rc, _) in tools.items()))
        return r

    def serve():
        g = w / "guest"
        g.mkdir()
        cfg = json.loads(CONF.read_text())      # the installed settings, with the test's paths
        cfg["logConfig"]["logPath"] = str(g / "log" / "overlaybd.log")
        cfg["auditPath"] = str(g / "log" / "audit.log")
        cfg["cacheConfig"]["cacheDir"] = str(g / "cache")
        (g / "obd.json").write_text(json.dumps(cfg))
        (g / "golden.json").write_text(json.dumps({
            "lowers": [{"file": str(GOLDEN / f"layer{i}.lz4.zfile")} for i in (1, 2, 3)],
            "resultFile": str(g / "golden.result")}))
        say(f"serve: in the kernel guest, ExecStart of {UNIT} (config bind-mounted over {CONF})")
        p = run_in_uml(["bash", "tests/vm/guest_service.sh", g, "/"], rw=[g], timeout=420,
                       env={"OBD_UNIT": str(UNIT)})
        assert p.returncode == 0, f"guest script failed ({p.returncode}):\n{p.stderr[-4000:]}"
        out = {f.name: f.read_text() for f in (g / "out").iterdir()}
        logf = g / "log" / "overlaybd.log"
        out["log"] = logf.read_text() if logf.exists() else ""
        say(f"  golden device: result {out.get('result')!r}, sha256 {out.get('sha', '')[:16]}... "
            f"(expected {golden_manifest['merged']['sha256'][:16]}...)")
        return out

    def administrator():
        """Change the conffile; add files of one's own; simulate the service's runtime files."""
        cfg = json.loads(CONF.read_text())
        cfg["logConfig"]["logLevel"] = 0
        cfg["workerConfig"]["cacheSizeMB"] = 64
        text = json.dumps(cfg, indent=4) + "\n"
        CONF.write_text(text)
        for p in USER + RUNTIME:
            made.append(p)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"made by {__name__}\n")
        say(f"administrator: changed {CONF} (logLevel 0, cacheSizeMB 64); added {', '.join(map(str, USER))}; "
            f"service files {', '.join(map(str, RUNTIME))}")
        return text.encode()

    def remove(how):
        say(f"{how}: apt-get {how} -y {PKG}")
        p = sh("apt-get", how, "-y", PKG)
        for line in (p.stdout + p.stderr).splitlines():
            if line.startswith(("Removing", "Purging", "dpkg:")):
                say(f"  {line}")
        left = sorted(tree(OPT, ETC, UNIT, DOC, *RUNTIME))
        say(f"  dpkg status: {status()}; left: {left}")
        return {"status": status(), "left": left,
                "conf": CONF.read_bytes() if CONF.exists() else None,
                "wants": sorted(str(p) for p in pathlib.Path("/etc/systemd/system").glob("*.wants/overlaybd*"))}

    try:
        step("v1", lambda: build(w / "v1"))
        step("wheels", lambda: collect_wheels(w / "wheels"))
        step("v2", lambda: build(w / "v2", rec["v1"]["Version"] + "+upgrade1", rec["wheels"]))
        step("install", lambda: install(rec["v1"]["deb"]))
        step("installed", inspect)
        step("serve", serve)
        step("changed", administrator)
        step("upgrade", lambda: install(rec["v2"]["deb"]))
        step("upgraded", inspect)
        step("remove", lambda: remove("remove"))
        step("purge", lambda: remove("purge"))
        yield rec
    finally:
        if status() not in GONE:
            say(f"cleanup: dpkg --purge {PKG} (status {status()})")
            sh("dpkg", "--purge", PKG, check=False)
        for p in made:
            if p.exists():
                p.unlink()
            for d in p.parents:
                if d in (OPT.parent, ETC.parent, pathlib.Path("/var/log")) or not d.exists() or any(d.iterdir()):
                    break
                d.rmdir()


def test_make_deb_builds_a_package_of_debians_python3(life):
    v1 = life["v1"]
    assert v1["Package"] == PKG
    assert "python3 (>= 3.11~)" in v1["Depends"] and "python3 (<< 3.12)" in v1["Depends"]
    assert "libc6 (>= " in v1["Depends"]         # what the compiled modules link (dpkg-shlibdeps)
    assert v1["conffiles"] == [str(CONF)]
    for t in TOOLS:
        assert f"./opt/overlaybd/bin/{t} -> ../venv/bin/{t}" in v1["contents"]
    assert "./lib/systemd/system/overlaybd-tcmu.service" in v1["contents"]
    assert life["v2"]["Version"] == v1["Version"] + "+upgrade1"
    assert sh("dpkg", "--compare-versions", life["v2"]["Version"], "gt", v1["Version"],
              check=False).returncode == 0


def test_installed_tools_run_from_the_venv_of_usr_bin_python3(life):
    assert life["install"]["status"].startswith("installed ")
    got = life["installed"]
    for t in TOOLS:
        rc, out = got["tools"][t]
        assert rc == 0 and out.startswith(f"{t} "), (t, rc, out)
    assert got["python"].startswith("/usr/bin/python3")
    assert "home = /usr/bin\n" in got["pyvenv"]
    assert got["verify"] == ""                                  # every file as shipped
    assert got["unowned"] == []     # running the tools wrote nothing (bytecode shipped valid)


def test_config_is_a_conffile_and_the_unit_is_installed_not_started(life):
    got = life["installed"]
    assert got["conf"] == (REPO / "conf/overlaybd.json").read_bytes()
    assert got["conffiles"][0] == str(CONF)
    assert "ExecStart=/opt/overlaybd/bin/overlaybd-tcmu /etc/overlaybd/overlaybd.json" in got["unit"]
    if not os.path.isdir("/run/systemd/system"):                # a container without systemd
        assert "systemd is not running here" in life["install"]["out"]
        assert got["wants"] == []


def test_installed_overlaybd_tcmu_serves_the_golden_image_in_the_kernel(life, golden_manifest):
    got = life["serve"]
    assert got["pre_rc"] == "0" and got["ready"] == "1"
    assert got["create_rc"] == "0" and got["result"] == "success"
    assert got["sha"] == golden_manifest["merged"]["sha256"]
    started = [x for x in got["log"].splitlines() if "starting (package " in x]
    assert len(started) == 1 and "(package /opt/overlaybd/venv/lib/python3." in started[0]
    assert got["stop_rc"] == "0"


def test_upgrade_keeps_the_changed_conffile(life):
    assert life["upgrade"]["status"] == f"installed {life['v2']['Version']}"
    got = life["upgraded"]
    assert got["conf"] == life["changed"]
    assert "c /etc/overlaybd/overlaybd.json" in got["verify"]   # dpkg knows it was changed
    assert set(got["unowned"]) == {*map(str, USER), str(RUNTIME[0]), str(ETC / "images"),
                                   *(str(OPT / d) for d in ("registry_cache", "registry_cache/sha256",
                                                            "registry_cache/sha256/0a"))}
    assert not any(p.endswith((".dpkg-dist", ".dpkg-new", ".dpkg-old")) for p in got["unowned"])


def test_remove_keeps_the_configuration_and_purge_leaves_only_the_administrators_files(life):
    removed = life["remove"]
    assert removed["status"] == f"config-files {life['v2']['Version']}"
    assert removed["conf"] == life["changed"]                   # remove keeps conffiles
    purged = life["purge"]
    assert purged["status"] in GONE
    assert purged["conf"] is None           # purge deletes the conffile, changed or not (dpkg)
    assert set(purged["left"]) == {str(OPT), str(ETC), str(ETC / "images"), *map(str, USER)}
    assert purged["wants"] == []
