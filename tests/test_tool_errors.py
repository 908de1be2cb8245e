"""What the installed tools say when things go wrong (issue 12, must-have 6, tools' side): each
error once, every OSError naming its file, overlaybd-info failing on what it cannot recognise,
a closed standard output ending a tool quietly, and --version everywhere."""

import os
import subprocess
from importlib import metadata

import pytest

import overlaybd
from overlaybd.tools import common
from tests.helpers.env import GOLDEN
from tests.helpers.image import write_config
from tests.helpers.tools import err_lines, fill, run_tool, script, tmpfs

CONSOLE_SCRIPTS = sorted(ep.name for ep in metadata.distribution("overlaybd").entry_points
                         if ep.group == "console_scripts")


def one_line(r, *words, rc=1):
    assert r.returncode == rc, r.stderr
    lines = err_lines(r)
    assert len(lines) == 1, lines
    for w in words:
        assert str(w) in lines[0], lines
    assert "::" not in lines[0] and "Traceback" not in lines[0]
    return lines[0]


def test_every_installed_tool_has_version():
    assert "overlaybd-tcmu" in CONSOLE_SCRIPTS and len(CONSOLE_SCRIPTS) >= 7
    version = metadata.version("overlaybd")
    assert version == overlaybd.__version__             # the two sources agree
    for name in CONSOLE_SCRIPTS:
        r = run_tool(name.removeprefix("overlaybd-"), "--version")
        assert r.returncode == 0 and r.stdout.decode() == f"{name} {version}\n", r


def test_version_falls_back_to_the_source_tree(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "version", missing)
    assert common.package_version() == overlaybd.__version__


def test_open_error_printed_once(tmp_path):
    missing = tmp_path / "missing.json"
    for tool in ("export", "merge"):
        one_line(run_tool(tool, missing, tmp_path / "out"), missing, "No such file")
        assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad.zfile"
    bad.write_bytes(b"\0" * 100)            # not a layer: an open error from deep down
    cfg = write_config(tmp_path / "c.json", [bad])
    for tool in ("export", "merge"):
        one_line(run_tool(tool, cfg, tmp_path / "out"), bad)


def test_oserrors_name_their_file(tmp_path):
    one_line(run_tool("info", tmp_path), tmp_path, "directory")
    one_line(run_tool("zfile", "--verify", tmp_path), tmp_path, "directory")
    cfg = write_config(tmp_path / "c.json", [GOLDEN / "layer1.lsmt"])
    one_line(run_tool("export", cfg, tmp_path), f"{tmp_path}: Is a directory")
    out = tmp_path / "no" / "such" / "dir"
    one_line(run_tool("zfile", "-x", GOLDEN / "layer1.lz4.zfile", out), out, "No such file")
    one_line(run_tool("create", tmp_path / "no" / "d", tmp_path / "i", 1), tmp_path / "no" / "d")
    # writes to standard output that fail name it too
    with open("/dev/full", "wb") as full:
        one_line(run_tool("info", GOLDEN / "layer1.lsmt", stdout=full),
                 "standard output: No space left on device")
        one_line(run_tool("export", "--length", 1 << 20, cfg, "-", stdout=full),
                 "standard output: No space left on device")


def test_full_disk_names_the_output_and_leaves_nothing(tmp_path):
    cfg = write_config(tmp_path / "c.json", [GOLDEN / "layer1.lsmt"])
    with tmpfs(tmp_path / "small", "256k") as small:
        out = small / "disk.raw"
        one_line(run_tool("export", "--length", 1 << 20, cfg, out),
                 f"{out}: No space left on device")
        assert not out.exists()
        fill(small)
        one_line(run_tool("zfile", GOLDEN / "layer1.lsmt", small / "z"),
                 small / "z", "No space left on device")
        assert not (small / "z").exists()


@pytest.mark.parametrize("content", [b"", os.urandom(10000), bytes(8192)])
def test_info_refuses_what_it_cannot_recognise(tmp_path, content):
    f = tmp_path / "blob"
    f.write_bytes(content)
    r = run_tool("info", f)
    one_line(r, f, "not an overlaybd blob")
    assert r.stdout == b""


@pytest.mark.parametrize("name,cut", [("layer1.lsmt", 100000), ("layer1.lsmt", 4096),
                                      ("layer1.lz4.zfile", 3000), ("merged.lz4.zfile", 700)])
def test_info_refuses_truncated_layers(tmp_path, name, cut):
    f = tmp_path / name
    f.write_bytes((GOLDEN / name).read_bytes()[:cut])
    r = run_tool("info", f)
    one_line(r, f)
    assert r.stdout == b""


def test_info_accepts_layers_and_writable_files(tmp_path):
    for name in ("layer1.lsmt", "layer1.lz4.zfile", "merged.lz4.zfile"):
        assert run_tool("info", GOLDEN / name).returncode == 0
    data, index = tmp_path / "data", tmp_path / "index"
    assert run_tool("create", data, index, 1).returncode == 0
    for f in (data, index):         # a writable layer's files are not committed: still known
        r = run_tool("info", f)
        assert r.returncode == 0 and b'"sealed": false' in r.stdout, r


def _closed_pipe():
    r, w = os.pipe()
    os.close(r)
    return w


@pytest.mark.parametrize("argv", [
    ["info", GOLDEN / "layer1.lsmt"],
    ["zfile", "--verify", GOLDEN / "layer1.lz4.zfile"],
    ["zfile", "-x", GOLDEN / "layer1.lz4.zfile", "-"],
    ["export", "CFG", "-"],
    ["commit", "--commit_sealed", GOLDEN / "layer1.lsmt", "OUT"],
    ["merge", "CFG", "-"],
])
def test_closed_stdout_ends_quietly(tmp_path, argv):
    """A reader that has gone (``tool | head``): exit 141, as a C tool killed by SIGPIPE, and
    nothing on stderr."""
    cfg = write_config(tmp_path / "c.json", [GOLDEN / "layer1.lsmt"])
    argv = [cfg if a == "CFG" else tmp_path / "out" if a == "OUT" else a for a in argv]
    w = _closed_pipe()
    try:
        r = run_tool(*argv, stdout=w)
    finally:
        os.close(w)
    # commit prints upstream's (empty) uploaded-digest line on stderr, nothing else
    assert r.returncode == common.EXIT_PIPE and r.stderr.strip() == b"", r.stderr


def test_head_closing_the_pipe(tmp_path):
    cfg = write_config(tmp_path / "c.json", [GOLDEN / "layer1.lsmt"])
    p = subprocess.Popen([script("export"), cfg, "-"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert len(p.stdout.read(1000)) == 1000
    p.stdout.close()
    assert p.wait(60) == common.EXIT_PIPE
    assert p.stderr.read() == b""
    p.stderr.close()


def test_daemon_logs_a_failed_device_open_once(tmp_path):
    """The daemon's side of "each error once": the failed open is one log line naming the
    device, its config and the cause (open_image no longer logs it as well), and the
    resultFile says failed:<cause>."""
    from loguru import logger

    from overlaybd.image import load_service_config
    from overlaybd.tcmu.daemon import Daemon
    from overlaybd.tcmu.fakekernel import FakeKernel
    from overlaybd.tcmu.uio import UioInfo
    from overlaybd.tools.tcmu import image_backend
    from overlaybd.workers import Engine

    svc_path = tmp_path / "overlaybd.json"
    svc_path.write_text('{"logConfig": {"logLevel": 1}, "cacheConfig": {"cacheDir": "%s"}}'
                        % (tmp_path / "cache"))
    missing = tmp_path / "missing.lsmt"
    cfg = write_config(tmp_path / "c.json", [missing], resultFile=str(tmp_path / "result"))
    lines = []
    sink = logger.add(lambda m: lines.append(m.record), level="DEBUG")
    daemon = Daemon(Engine(workers=0), *image_backend(load_service_config(str(svc_path))),
                    use_netlink=False, sys_uio=str(tmp_path / "no-uio"),
                    configfs=str(tmp_path / "configfs"), module_params=str(tmp_path / "np"))
    daemon.start()
    fk = FakeKernel()
    try:
        cs = f"overlaybd/{cfg}"
        assert daemon.add_device(UioInfo(0, f"tcm-user/1/d0/{cs}", "1", "d0", cs),
                                 fk.handle()) < 0
    finally:
        daemon.shutdown()
        fk.close()
        logger.remove(sink)
    errors = [r["message"] for r in lines if r["level"].name == "ERROR"]
    assert len(errors) == 1 and "d0" in errors[0] and str(cfg) in errors[0], errors
    assert str(missing) in errors[0]
    assert (tmp_path / "result").read_text().startswith("failed:")
    assert str(missing) in (tmp_path / "result").read_text()
