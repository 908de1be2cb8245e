"""The decompressed-block cache on sequential and random reads of an lz4 image.

    python3 -m bench blockcache_bench [--mib 1024]
    scripts/uml/run-in-uml.sh -m 4096 -- python3 -m bench blockcache_bench   (in the guest)

image_bench's 4-layer 1 GiB lz4 image, opened as the engine opens it in a worker (a 256 MiB
decompressed-block cache, the default `workerConfig.cacheSizeMB`), read with ``preadinto``
into a mapped buffer: sequential 128 KiB reads over ``--mib`` twice (a first pass fills the
cache's memory), then, from an empty cache, 20,000 random 4 KiB reads twice (the second
pass re-reads the same blocks), each without the cache, with the cache as it is (it keeps
only the blocks a read cuts: these aligned reads of 4 KiB blocks go around it, as reads of
BYPASS_BYTES or more do), and with every read through it (the behaviour before both rules).
Bytes are checked against the flat file.  Ratios are to "no cache" in the same run.
"""

import argparse
import mmap
import os
import pathlib
import random
import resource
import time

from overlaybd.cache import blockcache
from overlaybd.image import open_image

from .image_bench import build

REPO = pathlib.Path(__file__).resolve().parent.parent

MiB = 1 << 20


def _pass(img, view, flat, offsets, size):
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for i, off in enumerate(offsets):
        slot = (i % 16) * size
        assert img.preadinto(view[slot:slot + size], off) == size
    dt = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
    slot = (len(offsets) - 1) % 16 * size
    assert bytes(view[slot:slot + size]) == os.pread(flat, size, offsets[-1]), "bytes differ"
    return len(offsets) * size / dt / MiB, faults / max(1, len(offsets) * size // MiB)


def _through_the_cache(cache, buf, off):
    n = min(len(buf), cache.size - off)
    return cache._cached(memoryview(buf)[:n], off) if n > 0 else 0


def run(mode, d, mib, cache_mb):
    cache_bytes = 0 if mode == "none" else cache_mb * MiB
    saved = blockcache.BlockCache.preadinto
    blockcache._process_slice = None
    if mode == "all":                   # every read through the LRU, whole blocks kept too
        blockcache.BlockCache.preadinto = _through_the_cache
    try:
        img = open_image(os.path.join(d, "lz4.json"), None, write_result=False, download=False,
                         cache_bytes=cache_bytes)
        area = mmap.mmap(-1, 16 * 128 * 1024)
        view = memoryview(area)
        flat = os.open(os.path.join(d, "flat.raw"), os.O_RDONLY)
        seq = [(i * 128 * 1024) % img.size for i in range(mib * 8)]
        rnd = random.Random(7)
        rand = [rnd.randrange(img.size // 4096) * 4096 for _ in range(20000)]
        out = [_pass(img, view, flat, seq, 128 * 1024), _pass(img, view, flat, seq, 128 * 1024)]
        blockcache._process_slice = None        # random reads start from an empty cache
        img.close()
        img = open_image(os.path.join(d, "lz4.json"), None, write_result=False, download=False,
                         cache_bytes=cache_bytes)
        out += [_pass(img, view, flat, rand, 4096), _pass(img, view, flat, rand, 4096)]
        os.close(flat)
        view.release()
        area.close()
        img.close()
        return out
    finally:
        blockcache.BlockCache.preadinto = saved


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="MiB per sequential pass")
    ap.add_argument("--cache-mb", type=int, default=256)
    a = ap.parse_args(argv)
    d = str(REPO / "bench" / "out" / "image")
    build(d, 1)
    res = {m: run(m, d, a.mib, a.cache_mb) for m in ("none", "now", "all")}
    base = res["none"]
    names = ("seq 128K pass 1", "seq 128K pass 2", "rand 4K pass 1", "rand 4K pass 2")
    labels = {"none": "no block cache", "now": f"{a.cache_mb} MiB cache as it is",
              "all": f"{a.cache_mb} MiB cache, every read through it"}
    for m, rows in res.items():
        cells = [f"{n} {v:,.0f} MiB/s ({v / base[i][0]:.2f}x, {f:.0f} faults/MiB)"
                 for i, (n, (v, f)) in enumerate(zip(names, rows))]
        print(f"  {labels[m]}: " + "; ".join(cells) + "; bytes equal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
