"""ZFile compression in several processes (``--compress_threads N``): the same bytes for every
N, the children really compress, and a compression process that dies is a clean error."""

import io
import os
import random
import signal
import subprocess
import time

import psutil
import pytest

from overlaybd import zfile
from overlaybd.abi import zfile as zabi
from overlaybd.errors import OverlaybdError
from overlaybd.io import BytesFile
from overlaybd.zfile import codec
from overlaybd.zfile.parallel import CompressorPool, block_bound, compress_into
from tests.helpers.tools import err_lines, run_tool, script
from tests.helpers.zfile import mixed_data, random_writes

MiB = 1 << 20
DATA = mixed_data(7 * MiB + 12345, seed=11)       # several 1 MiB runs and a short last block


def build(data, seed, **kw):
    out = io.BytesIO()
    with zfile.ZFileWriter(out, **kw) as w:
        random_writes(w, data, random.Random(seed))
    return out.getvalue()


@pytest.mark.parametrize("algo", ["lz4", "zstd"])
def test_process_count_does_not_change_bytes(algo):
    one = build(DATA, 1, algorithm=algo, overwrite_header=True)
    for n in (2, 3):
        assert build(DATA, n, algorithm=algo, overwrite_header=True, threads=n) == one
    z = zfile.ZFile(BytesFile(one))
    assert z.pread(len(DATA), 0) == DATA


def test_children_compress_and_results_come_back_in_order():
    bs = 4096
    runs = [DATA[i:i + MiB] for i in range(0, 6 * MiB, MiB)]
    comp = codec.compressor(zabi.ALGO_LZ4)
    want = []
    for r in runs:
        buf = bytearray(len(r) // bs * block_bound(bs))
        lens = compress_into(comp, r, bs, True, buf, 0)
        want.append((list(lens), bytes(buf[:sum(lens)])))
    got = []
    pool = CompressorPool(2, zabi.ALGO_LZ4, bs, True, MiB)
    try:
        def emit(lens, stored):
            got.append((list(lens), bytes(stored)))
        for r in runs:
            with pool.take(emit) as slot:
                slot[:len(r)] = r
            pool.submit(len(r), emit)
        by_child = sum(run[1] is not None for run in pool.runs)
        pool.drain(emit)
    finally:
        pool.close()
    assert by_child >= 1                    # the first run always goes to the idle child
    assert got == want


def test_killed_compression_process_raises_instead_of_hanging():
    signal.alarm(60)                        # a hang fails the test instead of the suite
    try:
        w = zfile.ZFileWriter(io.BytesIO(), threads=2)
        (kid,) = w._pool.kids
        os.kill(kid.pid, signal.SIGKILL)
        with pytest.raises(OverlaybdError, match=rf"compression process {kid.pid} died"):
            with w:
                for i in range(0, len(DATA), MiB):
                    w.write(DATA[i:i + MiB])
        assert not psutil.pid_exists(kid.pid) or psutil.Process(kid.pid).status() == "zombie"
    finally:
        signal.alarm(0)


def test_zfile_tool_same_bytes_with_processes(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(DATA)
    for n in (1, 2):
        p = run_tool("zfile", "--compress_threads", n, src, tmp_path / f"out{n}")
        assert p.returncode == 0, err_lines(p)
    assert (tmp_path / "out1").read_bytes() == (tmp_path / "out2").read_bytes()
    p = run_tool("zfile", "-x", tmp_path / "out2", tmp_path / "back")
    assert p.returncode == 0 and (tmp_path / "back").read_bytes() == DATA


def test_zfile_tool_child_killed_leaves_no_output(tmp_path):
    dst = tmp_path / "dst"
    proc = subprocess.Popen([script("zfile"), "--compress_threads", "2", str(dst)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(DATA[:2 * MiB])
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        kids = []
        while not kids and time.monotonic() < deadline:
            kids = psutil.Process(proc.pid).children()
            time.sleep(0.05)
        assert kids, "the tool started no compression process"
        kids[0].kill()
        try:
            proc.stdin.write(DATA[2 * MiB:])
            proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = proc.wait(timeout=60)
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc != 0
    assert f"compression process {kids[0].pid} died" in err
    assert not dst.exists() and os.listdir(tmp_path) == []
