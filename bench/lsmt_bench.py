"""LSMT benchmark: merged-view reads against os.pread of a flat copy, commit, big-index open.

Run from the repository root:  python3 -m bench.lsmt_bench [--dir DIR] [--reads N]

Builds a 1 GiB image of 4 layers (random 4 KiB..1 MiB extents, some 512-byte-granular writes
and discards, written through create_rw/pwrite and sealed by commit), writes the merged view
to a flat file, warms the page cache, then prints on one core:
  * random 4 KiB reads/s: os.pread(flat) vs MergedFile.pread / .preadinto
  * sequential 1 MiB MB/s: os.pread(flat) vs MergedFile.pread / .preadinto
  * open time and RSS added by a sealed layer with 1,000,000 index entries (fresh process)
"""

from __future__ import annotations

import argparse
import mmap
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from overlaybd.io import LocalFile  # noqa: E402
from overlaybd.lsmt import commit, create_rw, open_merged, open_ro  # noqa: E402

GiB, MiB, KiB = 1 << 30, 1 << 20, 1 << 10
VSIZE = GiB


SIZES = [4 * KiB] * 50 + [8 * KiB] * 20 + [16 * KiB] * 15 + [32 * KiB] * 10 + \
    [128 * KiB] * 4 + [MiB]


def build_layers(d: pathlib.Path, n_layers=4, per_layer=15000, seed=1):
    rng = random.Random(seed)
    blob = os.urandom(MiB + 4096)
    paths = []
    t0 = time.perf_counter()
    data_bytes = 0
    for k in range(n_layers):
        rw = create_rw(d / f"rw{k}.data", d / f"rw{k}.index", VSIZE)
        for _ in range(per_layer):
            r = rng.random()
            if r < 0.1:      # fine-grained write
                n = rng.randrange(1, 64) * 512
                off = rng.randrange(0, VSIZE // 512 - 64) * 512
            else:
                n = rng.choice(SIZES)
                off = rng.randrange(0, (VSIZE - n) // 4096) * 4096
            s = rng.randrange(0, 4096 // 512) * 512
            rw.pwrite(blob[s:s + n], off)
            if rng.random() < 0.03:
                rw.discard(rng.randrange(0, VSIZE // 4096 - 64) * 4096,
                           rng.randrange(1, 64) * 4096)
        path = d / f"layer{k}.lsmt"
        with open(path, "wb") as f:
            commit(rw, f)
        data_bytes += open_ro(LocalFile(path)).trailer.index_offset - 4096
        rw.close()
        os.unlink(d / f"rw{k}.data")
        os.unlink(d / f"rw{k}.index")
        paths.append(path)
    dt = time.perf_counter() - t0
    print(f"built {n_layers} layers ({data_bytes / MiB:.0f} MiB of data after commit) in "
          f"{dt:.1f} s")
    return paths


def write_flat(merged, path):
    with open(path, "wb") as f:
        for off in range(0, merged.size, 4 * MiB):
            f.write(merged.pread(4 * MiB, off))


def warm(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(8 * MiB):
                pass


def rate(n, dt):
    return n / dt if dt > 0 else float("inf")


def bench_random(merged, flat_fd, n_reads, seed=2):
    rng = random.Random(seed)
    offs = [rng.randrange(0, VSIZE // 4096) * 4096 for _ in range(n_reads)]
    for off in offs[:2000]:
        assert merged.pread(4096, off) == os.pread(flat_fd, 4096, off), off
    pread = os.pread
    t = time.perf_counter()
    for off in offs:
        pread(flat_fd, 4096, off)
    flat = rate(n_reads, time.perf_counter() - t)
    mp = merged.pread
    t = time.perf_counter()
    for off in offs:
        mp(4096, off)
    mrg = rate(n_reads, time.perf_counter() - t)
    buf = memoryview(mmap.mmap(-1, 4096))     # page-aligned, like a TCMU data area
    mi = merged.preadinto
    t = time.perf_counter()
    for off in offs:
        mi(buf, off)
    into = rate(n_reads, time.perf_counter() - t)
    print(f"random 4 KiB reads/s: os.pread flat {flat:,.0f} | merged.pread {mrg:,.0f} "
          f"({mrg / flat:.2f}x) | merged.preadinto {into:,.0f} ({into / flat:.2f}x)")
    return mrg


def bench_seq(merged, flat_fd, step=MiB):
    offs = range(0, VSIZE, step)
    pread = os.pread
    t = time.perf_counter()
    for off in offs:
        pread(flat_fd, step, off)
    flat = rate(VSIZE / MiB, time.perf_counter() - t)
    t = time.perf_counter()
    for off in offs:
        merged.pread(step, off)
    mrg = rate(VSIZE / MiB, time.perf_counter() - t)
    buf = memoryview(mmap.mmap(-1, step))
    fbuf = memoryview(mmap.mmap(-1, step))
    t = time.perf_counter()
    for off in offs:
        os.preadv(flat_fd, [fbuf], off)
    flat_into = rate(VSIZE / MiB, time.perf_counter() - t)
    t = time.perf_counter()
    for off in offs:
        merged.preadinto(buf, off)
    into = rate(VSIZE / MiB, time.perf_counter() - t)
    print(f"sequential 1 MiB MB/s: os.pread flat {flat:,.0f} | merged.pread {mrg:,.0f} "
          f"({mrg / flat:.2f}x) | os.preadv flat {flat_into:,.0f} | merged.preadinto "
          f"{into:,.0f} ({into / flat_into:.2f}x)")


OPEN_SNIPPET = """
import gc, sys, time, psutil
sys.path.insert(0, sys.argv[2])
from overlaybd.io import LocalFile
from overlaybd.lsmt import open_ro
proc = psutil.Process()
gc.collect()
r0 = proc.memory_info().rss
t = time.perf_counter()
layer = open_ro(LocalFile(sys.argv[1]))
dt = time.perf_counter() - t
gc.collect()
r1 = proc.memory_info().rss
print(f"open of a {len(layer.index):,}-entry sealed layer: {dt:.3f} s, "
      f"+{(r1 - r0) / 1e6:.1f} MB RSS, index {layer.index.nbytes() / len(layer.index):.0f} "
      "bytes/entry")
"""


def bench_open(d: pathlib.Path, entries=1_000_000):
    from tests.lsmt_fixtures import write_big_sealed
    path = d / "big.lsmt"
    write_big_sealed(path, entries)
    subprocess.run([sys.executable, "-c", OPEN_SNIPPET, str(path), str(ROOT)], check=True)
    os.unlink(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed)")
    ap.add_argument("--reads", type=int, default=200_000, help="random 4 KiB reads")
    args = ap.parse_args(argv)
    tmp = pathlib.Path(args.dir or tempfile.mkdtemp(prefix="lsmt-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        paths = build_layers(tmp)
        t = time.perf_counter()
        merged = open_merged([LocalFile(p) for p in paths])
        print(f"open_merged of 4 layers: {time.perf_counter() - t:.3f} s, "
              f"{len(merged.index):,} merged entries")
        flat = tmp / "flat.img"
        write_flat(merged, flat)
        warm(paths + [flat])
        fd = os.open(flat, os.O_RDONLY)
        bench_random(merged, fd, args.reads)
        bench_seq(merged, fd)
        os.close(fd)
        merged.close()
        t = time.perf_counter()
        with open(tmp / "flat.lsmt", "wb") as out:
            commit(open_merged([LocalFile(p) for p in paths]), out)
        dt = time.perf_counter() - t
        size = os.path.getsize(tmp / "flat.lsmt")
        print(f"commit (flatten) of the 4 layers: {dt:.2f} s, {size / MiB / dt:,.0f} MB/s "
              "written")
        bench_open(tmp)
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
