"""Output paths of the installed tools (issue 12, must-haves 3 and 8): nothing at an output
path is destroyed.  A new file is created; an existing regular file needs -f and is then
written in place (same inode, O_TRUNC; overlaybd-merge always, as upstream); a symlink is
followed; a character device or FIFO is written as it is (every byte); a block device needs
-f; a directory is refused.  A tool that fails mid-way leaves no partial output: the file it
created is removed, a file it opened in place is left empty, a device or FIFO is left alone."""

import os
import stat
import types

import pytest

from overlaybd import lsmt, zfile
from tests.helpers.env import GOLDEN
from tests.helpers.image import write_config
from tests.helpers.tools import FifoReader, err_lines, loop_device, run_tool
from tests.helpers.zfile import blocks_of, mixed_data

MiB = 1 << 20
EXPORT_LEN = 8 * MiB          # golden image: data in [0, 4M), the next 4 MiB chunk all zero


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    ns = types.SimpleNamespace(dir=d)
    ns.cfg = write_config(d / "golden.json", [GOLDEN / "layer1.zstd.zfile",
                                              GOLDEN / "layer2.lsmt", GOLDEN / "layer3.lz4.zfile"])
    # a committed ZFile layer of 12 MiB whose block at 9 MiB is corrupt: tools fail mid-way
    data, index = str(d / "data"), str(d / "index")
    layer = lsmt.create_rw(data, index, 64 * MiB)
    layer.pwrite(mixed_data(12 * MiB, seed=3), 0)
    layer.close()
    with open(d / "bad.zfile", "w+b") as f:
        w = zfile.ZFileWriter(f, overwrite_header=True)
        lsmt.commit(lsmt.open_rw(data, index), w)
        w.close()
    blob = bytearray((d / "bad.zfile").read_bytes())
    _, blocks = blocks_of(bytes(blob))
    off, n = blocks[(4096 + 9 * MiB) // 4096]
    blob[off + n // 2] ^= 0xFF
    (d / "bad.zfile").write_bytes(bytes(blob))
    ns.bad = d / "bad.zfile"
    ns.bad_cfg = write_config(d / "bad.json", [ns.bad])
    return ns


# tool argv before the output path; every tool takes its output last
def ok_case(name, i):
    return {"zfile": ["zfile", GOLDEN / "layer1.lsmt"],
            "zfile-x": ["zfile", "-x", GOLDEN / "layer1.lz4.zfile"],
            "commit": ["commit", "--commit_sealed", GOLDEN / "layer1.lsmt"],
            "commit-z": ["commit", "-z", "--commit_sealed", GOLDEN / "layer1.lsmt"],
            "export": ["export", "--length", EXPORT_LEN, i.cfg],
            "merge": ["merge", i.cfg]}[name]


def bad_case(name, i):
    return {"zfile-x": ["zfile", "-x", i.bad],
            "commit": ["commit", "--commit_sealed", i.bad],
            "export": ["export", "--length", 16 * MiB, i.bad_cfg],
            "merge": ["merge", i.bad_cfg]}[name]


OK = ["zfile", "zfile-x", "commit", "commit-z", "export", "merge"]
BAD = ["zfile-x", "commit", "export", "merge"]


def run(argv, out, force=False):
    tool, *args = argv
    return run_tool(tool, *(["-f"] if force else []), *args, out)


_FRESH = {}


def fresh(argv, tmp_path):
    """What the tool writes into a new regular file (read back: holes read as zeros); made
    once per argv in this module."""
    key = tuple(map(str, argv))
    if key not in _FRESH:
        p = tmp_path / "fresh.out"
        r = run(argv, p)
        assert r.returncode == 0, r.stderr
        _FRESH[key] = p.read_bytes()
    return _FRESH[key]


def one_error(r, *words):
    assert r.returncode == 1
    lines = err_lines(r)
    assert len(lines) == 1, lines
    for w in words:
        assert str(w) in lines[0], lines
    return lines[0]


@pytest.mark.parametrize("name", OK)
def test_existing_file_needs_force_and_is_written_in_place(tmp_path, inputs, name):
    argv = ok_case(name, inputs)
    expect = fresh(argv, tmp_path)
    out = tmp_path / "out"
    out.write_bytes(b"\xee" * (len(expect) + 5000))      # longer, and never zero
    os.link(out, tmp_path / "hardlink")
    ino = out.stat().st_ino
    if name != "merge":
        one_error(run(argv, out), out, "use -f")
        assert out.read_bytes() == b"\xee" * (len(expect) + 5000)
    r = run(argv, out, force=(name != "merge"))        # merge: O_TRUNC without -f, as upstream
    assert r.returncode == 0, r.stderr
    assert out.stat().st_ino == ino                     # the same file, not a new one
    assert out.read_bytes() == expect
    assert (tmp_path / "hardlink").read_bytes() == expect


@pytest.mark.parametrize("name", ["zfile", "commit-z", "export", "merge"])
def test_symlink_is_followed(tmp_path, inputs, name):
    argv = ok_case(name, inputs)
    expect = fresh(argv, tmp_path)
    target, link = tmp_path / "target", tmp_path / "link"
    target.write_bytes(b"old")
    link.symlink_to(target)
    if name != "merge":
        one_error(run(argv, link), link, "use -f")
        assert target.read_bytes() == b"old"
    assert run(argv, link, force=True).returncode == 0
    assert link.is_symlink() and target.read_bytes() == expect
    # a symlink to nothing: refused without -f (it may point anywhere), followed with -f
    dangling, nothing = tmp_path / "dangling", tmp_path / "nothing"
    dangling.symlink_to(nothing)
    if name != "merge":
        one_error(run(argv, dangling), dangling, "symlink to nothing")
        assert not nothing.exists()
    assert run(argv, dangling, force=True).returncode == 0
    assert dangling.is_symlink() and nothing.read_bytes() == expect


@pytest.mark.parametrize("name", OK)
def test_char_device_stays_a_device(tmp_path, inputs, name):
    """A node made here for /dev/null (1, 3): written without -f, never replaced."""
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs root")
    r = run(ok_case(name, inputs), node)
    assert r.returncode == 0, r.stderr
    st = os.lstat(node)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


@pytest.mark.parametrize("name", ["export", "merge", "zfile", "zfile-x", "commit"])
def test_fifo_gets_every_byte(tmp_path, inputs, name):
    argv = ok_case(name, inputs)
    expect = fresh(argv, tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    r = run(argv, fifo)
    assert r.returncode == 0, r.stderr
    assert reader.result() == expect                   # export: the zero chunk too
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_output_that_must_seek_refuses_a_fifo(tmp_path, inputs):
    """commit -z rewrites the header at the end; -t the tar headers: a FIFO cannot."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for argv in (ok_case("commit-z", inputs), ["zfile", "-t", GOLDEN / "layer1.lsmt"]):
        reader = FifoReader(fifo)
        one_error(run(argv, fifo), fifo, "seekable")
        assert reader.result() == b""
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_block_device_needs_force_and_gets_every_byte(tmp_path, inputs):
    argv = ok_case("export", inputs)
    expect = fresh(argv, tmp_path)
    assert expect[4 * MiB:] == bytes(4 * MiB)          # a chunk a regular file leaves a hole
    backing = tmp_path / "backing"
    backing.write_bytes(b"\xff" * EXPORT_LEN)
    with loop_device(backing) as dev:
        one_error(run(argv, dev), dev, "block device", "use -f")
        with open(dev, "rb") as f:
            assert f.read() == b"\xff" * EXPORT_LEN
        assert run(argv, dev, force=True).returncode == 0
        with open(dev, "rb") as f:
            assert f.read() == expect
        assert stat.S_ISBLK(os.stat(dev).st_mode)


@pytest.mark.parametrize("name", OK)
def test_directory_refused(tmp_path, inputs, name):
    d = tmp_path / "dir"
    d.mkdir()
    one_error(run(ok_case(name, inputs), d, force=True), f"{d}: Is a directory")
    assert d.is_dir() and not list(d.iterdir())


# -- a failed tool leaves nothing half-written ---------------------------------------------

@pytest.mark.parametrize("name", BAD)
def test_failure_removes_the_file_it_created(tmp_path, inputs, name):
    out = tmp_path / "out"
    one_error(run(bad_case(name, inputs), out), inputs.bad, "block crc")
    assert not out.exists()


@pytest.mark.parametrize("name", BAD)
def test_failure_empties_a_file_it_opened_in_place(tmp_path, inputs, name):
    out, target, link = tmp_path / "out", tmp_path / "target", tmp_path / "link"
    out.write_bytes(b"old")
    target.write_bytes(b"old")
    link.symlink_to(target)
    ino = out.stat().st_ino
    one_error(run(bad_case(name, inputs), out, force=True), inputs.bad)
    assert out.stat().st_ino == ino and out.read_bytes() == b""
    one_error(run(bad_case(name, inputs), link, force=True), inputs.bad)
    assert link.is_symlink() and target.read_bytes() == b""


@pytest.mark.parametrize("name", BAD)
def test_failure_leaves_a_fifo_alone(tmp_path, inputs, name):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    one_error(run(bad_case(name, inputs), fifo), inputs.bad)
    assert 0 < len(reader.result())                    # it did fail mid-way
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_failed_compress_and_create_leave_nothing(tmp_path):
    src = tmp_path / "random"
    src.write_bytes(os.urandom(1 << 18))
    out = tmp_path / "out"
    out.write_bytes(b"old")
    one_error(run_tool("zfile", "-f", "--bs", 64, src, out), "use a smaller block size")
    assert out.read_bytes() == b""
    # the index cannot be made: the data file made just before is removed
    data = tmp_path / "data"
    one_error(run_tool("create", data, tmp_path / "missing" / "index", 1),
              tmp_path / "missing" / "index", "No such file")
    assert not data.exists()
    # the sparse data file cannot be that large: both files go
    one_error(run_tool("create", "-s", data, tmp_path / "index", 1 << 29), data)
    assert not data.exists() and not (tmp_path / "index").exists()
    # create never writes over anything
    (tmp_path / "index").write_bytes(b"keep")
    one_error(run_tool("create", data, tmp_path / "index", 1), tmp_path / "index", "exists")
    assert not data.exists() and (tmp_path / "index").read_bytes() == b"keep"
