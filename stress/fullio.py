"""Verifying block I/O against an overlaybd device (used by stress/fullstack.py).

A reader picks random ranges with known contents (the golden manifest's ranges and zeros outside
its nonzero extents) and compares sha256; a writer owns a stripe of the writable layer, writes
64 KiB blocks stamped with (stripe, block, generation), reads each back, and re-verifies every
block it wrote at the end.  Each runs in its own process and prints one JSON line of counts."""
import hashlib
import json
import mmap
import os
import random
import sys
import time

BLK = 64 << 10
STRIPES = (600 << 20, 1000 << 20)        # free of the golden image's data


def _pread(fd, off, n):
    buf = mmap.mmap(-1, n)               # O_DIRECT wants aligned memory
    got = os.preadv(fd, [buf], off)
    return bytes(buf[:got])


def reader(dev, seconds, manifest, seed):
    m = json.load(open(manifest))["merged"]
    ranges = [(r["offset"], r["length"], r["sha256"]) for r in m["ranges"]
              if r["offset"] % 4096 == 0 and r["length"] % 4096 == 0]
    zero_probe = [(64 << 20) + i * BLK for i in range(64)]        # never written, reads as zeros
    rnd, st = random.Random(seed), {"reads": 0, "bytes": 0, "verify_errors": 0, "io_errors": 0, "errors": []}
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if rnd.random() < 0.7:
            off, n, want = rnd.choice(ranges)
        else:
            off, n, want = rnd.choice(zero_probe), BLK, hashlib.sha256(bytes(BLK)).hexdigest()
        try:
            got = _pread(fd, off, n)
        except OSError as e:
            st["io_errors"] += 1
            st["errors"].append(f"read {off}+{n}: {e}")
            continue
        st["reads"] += 1
        st["bytes"] += len(got)
        if hashlib.sha256(got).hexdigest() != want:
            st["verify_errors"] += 1
            st["errors"].append(f"read {off}+{n}: sha mismatch")
    os.close(fd)
    return st


def _stamp(stripe, blk, gen):
    head = f"{stripe}:{blk}:{gen}:".encode()
    return (head * (BLK // len(head) + 1))[:BLK]


def writer(dev, seconds, stripe, nstripes, seed):
    lo, hi = STRIPES
    size = (hi - lo) // nstripes // BLK
    base = lo + stripe * size * BLK
    rnd, gen = random.Random(seed), {}
    st = {"writes": 0, "reads": 0, "bytes": 0, "verify_errors": 0, "io_errors": 0, "errors": []}
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, BLK)

    def check(b):
        try:
            got = _pread(fd, base + b * BLK, BLK)
        except OSError as e:
            st["io_errors"] += 1
            st["errors"].append(f"read-back {b}: {e}")
            return
        st["reads"] += 1
        if got != _stamp(stripe, b, gen[b]):
            st["verify_errors"] += 1
            st["errors"].append(f"stripe {stripe} block {b} gen {gen[b]}: wrong bytes")

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        b = rnd.randrange(min(size, 256))
        g = gen.get(b, 0) + 1
        buf[:] = _stamp(stripe, b, g)
        try:
            os.pwritev(fd, [buf], base + b * BLK)
        except OSError as e:
            st["io_errors"] += 1
            st["errors"].append(f"write {b}: {e}")
            continue
        gen[b] = g
        st["writes"] += 1
        st["bytes"] += BLK
        check(b)
    for b in sorted(gen):
        check(b)
    os.close(fd)
    return st


if __name__ == "__main__":
    kind, dev, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if kind == "read":
        r = reader(dev, seconds, sys.argv[4], int(sys.argv[5]))
    else:
        r = writer(dev, seconds, int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    r["errors"] = r["errors"][:20]
    print(json.dumps(r))
