"""Merged-view reads of a 1 GiB, 4-layer image through the whole image stack (issue #2).

    python3 -m bench.image_bench [--gib 1] [--seconds 2] [--dir bench/out]

The image: layer 1 fills the whole disk with real file content of this machine (what
container layers hold), layers 2-4 each overwrite ~10% in 64 KiB - 1 MiB extents and discard a
few ranges.  Built once with our own tools (create -> write -> commit, plain and `-z` lz4
4 KiB) and kept under --dir.  A flat file of the merged content is the baseline.

Measured on one core (the process is pinned), printed next to os.pread of the flat file:
sequential 1 MiB reads (MB/s) and random 4 KiB reads (reads/s), for the plain and the lz4
stacks.  Targets: plain sequential >= 0.5x flat; lz4 sequential >= 1,000 MB/s;
random 4 KiB >= 100,000/s plain and >= 50,000/s lz4.
"""

import argparse
import json
import os
import random
import time

from overlaybd import lsmt
from overlaybd.image import open_image
from overlaybd.io import LocalFile
from overlaybd.zfile import decode as zdecode

from .zfile_bench import make_image

MiB = 1 << 20
VERSION = 1


def build(d, gib):
    """Create the layers, configs and flat file under ``d`` (skipped if already there)."""
    stamp = os.path.join(d, f"built-v{VERSION}-{gib}g")
    if os.path.exists(stamp):
        return
    os.makedirs(d, exist_ok=True)
    vsize = gib << 30
    content = os.path.join(d, "content.raw")
    make_image(content, vsize // MiB)
    rng = random.Random(42)
    src = LocalFile(content)
    model = os.open(os.path.join(d, "flat.raw"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(model, vsize)
    for n in range(4):
        data, index = os.path.join(d, f"l{n}.data"), os.path.join(d, f"l{n}.index")
        for p in (data, index):
            if os.path.exists(p):
                os.unlink(p)
        layer = lsmt.create_rw(data, index, vsize)
        if n == 0:
            extents = [(off, 4 * MiB, False) for off in range(0, vsize, 4 * MiB)]
        else:
            extents = []
            for _ in range(int(vsize * 0.1 / (512 << 10))):
                ln = rng.randrange(16, 257) * 4096
                extents.append((rng.randrange(0, (vsize - ln) // 4096) * 4096, ln, False))
            for _ in range(20):
                extents.append((rng.randrange(0, vsize // 4096 - 64) * 4096, 64 * 4096, True))
        for off, ln, discard in extents:
            if discard:
                layer.discard(off, ln)
                os.pwrite(model, bytes(ln), off)
            else:
                buf = src.pread(ln, rng.randrange(0, (vsize - ln) // 4096) * 4096 if n else off)
                layer.pwrite(buf, off)
                os.pwrite(model, buf, off)
        layer.close()
        for kind, extra in (("plain", []), ("lz4", ["-z"])):
            out = os.path.join(d, f"l{n}.{kind}")
            from overlaybd.tools import commit as tool
            if tool.main([*extra, "-f", data, index, out]) != 0:
                raise SystemExit("commit failed")
        os.unlink(data)
        os.unlink(index)
    os.close(model)
    src.close()
    os.unlink(content)
    for kind in ("plain", "lz4"):
        with open(os.path.join(d, f"{kind}.json"), "w") as f:
            json.dump({"lowers": [{"file": f"l{n}.{kind}"} for n in range(4)]}, f)
    open(stamp, "w").close()


def seq(read, size, seconds, chunk=MiB):
    n, t0, off = 0, time.perf_counter(), 0
    while True:
        read(chunk, off)
        n += chunk
        off = (off + chunk) % size
        if n % (64 * MiB) == 0 and time.perf_counter() - t0 >= seconds:
            break
    return n / (time.perf_counter() - t0) / 1e6


def rand(read, size, seconds, chunk=4096):
    rng = random.Random(7)
    offs = [rng.randrange(0, size // chunk) * chunk for _ in range(1 << 16)]
    n, t0 = 0, time.perf_counter()
    while True:
        for off in offs[:8192]:
            read(chunk, off)
        n += 8192
        offs = offs[8192:] + offs[:8192]
        if time.perf_counter() - t0 >= seconds:
            break
    return n / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gib", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), "out", "image"))
    a = ap.parse_args(argv)
    build(a.dir, a.gib)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    flat = LocalFile(os.path.join(a.dir, "flat.raw"))
    size = flat.size
    # warm the page cache for every file, so that all contenders read from memory
    for name in sorted(os.listdir(a.dir)):
        with open(os.path.join(a.dir, name), "rb") as f:
            while f.read(16 * MiB):
                pass
    base_seq = seq(lambda n, o: os.pread(flat.fd, n, o), size, a.seconds)
    base_rand = rand(lambda n, o: os.pread(flat.fd, n, o), size, a.seconds)
    print(f"image_bench: {a.gib} GiB, 4 layers, one core; baseline os.pread of the flat file: "
          f"seq 1 MiB {base_seq:,.0f} MB/s, random 4 KiB {base_rand:,.0f} reads/s")
    targets = {"plain": (0.5 * base_seq, 100_000), "lz4": (1000.0, 50_000)}
    ok = True
    for kind in ("plain", "lz4"):
        img = open_image(os.path.join(a.dir, f"{kind}.json"), write_result=False)
        check = img.pread(4 * MiB, size // 2) == os.pread(flat.fd, 4 * MiB, size // 2)
        s = seq(img.pread, size, a.seconds)
        r = rand(img.pread, size, a.seconds)
        img.close()
        ts, tr = targets[kind]
        met = check and s >= ts and r >= tr
        ok &= met
        print(f"  {kind:5s} seq 1 MiB {s:8,.0f} MB/s ({s / base_seq:.2f}x flat, target "
              f"{ts:,.0f})  random 4 KiB {r:9,.0f} reads/s ({r / base_rand:.2f}x flat, target "
              f"{tr:,})  bytes {'equal' if check else 'DIFFER'}  {'OK' if met else 'MISSED'}")
    # for the record: the lz4 stack without the C accelerator (overlaybd/zfile/_zfast.c)
    saved, zdecode._zfast = zdecode._zfast, None
    try:
        img = open_image(os.path.join(a.dir, "lz4.json"), write_result=False)
        s = seq(img.pread, size, a.seconds)
        img.close()
    finally:
        zdecode._zfast = saved
    print(f"  lz4 without the C accelerator: seq 1 MiB {s:8,.0f} MB/s (no target)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
