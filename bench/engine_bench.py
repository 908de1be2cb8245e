"""Engine throughput: commands/s for 4 KiB and 1 MiB random reads with workers 0, 1 and 2
against the same backend, each printed as a ratio to workers=0 in the same run.

    python3 -m bench.engine_bench [--seconds 3] [--depth 32] [--mib 128] [--iov-kb 0]
                                  [--backend raw,lz4,zstd] [--json]

Backends: ``raw``, a raw file (cheap reads: what the engine itself costs), and ``lz4`` /
``zstd``, the same bytes as a ZFile of that codec (decompression makes reads CPU-bound: what
workers are for).  Every point also reports the supervisor's CPU per command (this process,
getrusage) and the workers' CPU per command (its child processes, psutil), both over the timed
window.  Bytes are verified: every command during warm-up and every 64th one after it is
compared with the raw file.  ``--json`` adds, as the last line, one JSON object with all points.  The
files are read once beforehand so that they are in the page cache.  A memfd stands in for the
kernel's data area; ``--depth`` commands are kept in flight (closed loop).  ``--iov-kb`` cuts
each command's buffer into iovecs of that size (0: one iovec), like a fragmented data area.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import tempfile
import time

import psutil

from overlaybd.io import LocalFile
from overlaybd.workers import OP_READ, ST_GOOD, Engine
from overlaybd.workers.rawfile import RawFileOpener
from overlaybd.zfile import ZFile, compress

MiB = 1 << 20
DEV = 1


class ZFileOpener:
    """Opens a ZFile read-only in whichever process calls it (picklable)."""

    def __init__(self, path):
        self.path = path

    def __call__(self):
        return ZFile(LocalFile(self.path))


def _cpu_seconds():
    """CPU seconds used so far by this process (the supervisor) and by its children (workers)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    kids = 0.0
    for c in psutil.Process().children(recursive=True):
        try:
            t = c.cpu_times()
            kids += t.user + t.system
        except psutil.Error:            # exited meanwhile
            pass
    return ru.ru_utime + ru.ru_stime, kids


def measure(opener, file_size, workers, io_size, depth, seconds, iov, seed=1, truth_fd=None,
            cpus=None, start_at=None):
    """``(cmds/s, supervisor CPU µs/cmd, worker CPU µs/cmd)``, closed loop with ``depth`` in
    flight per device, after a short warm-up; bytes checked against ``truth_fd`` (see the
    module doc).  ``opener``: one, or a list (one device each, all in this engine, the rate
    summed).  ``cpus``: run this process (and its workers) there.  ``start_at``: start the
    timed window then (CLOCK_MONOTONIC: the same window in several processes)."""
    openers = opener if isinstance(opener, list) else [opener]
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    rnd = random.Random(seed)
    map_size = depth * io_size
    fds, offs, free = {}, {}, []
    counts = [0]
    bad = []
    verify_every = [1]

    def on_complete(dev, cmd_id, status):
        if status != ST_GOOD:
            bad.append((dev, cmd_id))
        elif truth_fd is not None and counts[0] % verify_every[0] == 0:
            got = os.pread(fds[dev], io_size, cmd_id * io_size)
            if got != os.pread(truth_fd, io_size, offs[dev, cmd_id]):
                bad.append((dev, cmd_id))
        free.append((dev, cmd_id))
        counts[0] += 1

    engine = Engine(workers=workers, on_complete=on_complete,
                    **({"cpus": cpus} if cpus is not None and workers else {}))
    if hasattr(engine, "watch_edge"):   # wait() as the daemon sleeps (a tree before it: select)
        engine.watch_edge()
    engine.start()
    step = iov or io_size
    t0 = time.monotonic()
    warm_end = start_at if start_at is not None else t0 + min(0.5, seconds / 4)
    start_count = None
    end = warm_end + seconds
    try:
        for dev, op in enumerate(openers, DEV):
            fds[dev] = os.memfd_create(f"bench-data-area-{dev}", os.MFD_CLOEXEC)
            os.ftruncate(fds[dev], map_size)
            engine.add_device(dev, op, fds[dev], map_size)
            free.extend((dev, slot) for slot in range(depth))
        while True:
            now = time.monotonic()
            if start_count is None and now >= warm_end:
                start_count, t_start = counts[0], now
                cpu0 = _cpu_seconds()
                verify_every[0] = 64
            if now >= end:
                break
            while free:
                dev, slot = free.pop()       # its command completed: its id is free again
                off = rnd.randrange(0, (file_size - io_size) // 4096 + 1) * 4096
                offs[dev, slot] = off
                base = slot * io_size
                iovs = [(base + p, min(step, io_size - p)) for p in range(0, io_size, step)]
                engine.submit(dev, slot, OP_READ, off, io_size, iovs)
            engine.wait(0.05)
        done = counts[0] - start_count
        rate = done / (time.monotonic() - t_start)
        cpu1 = _cpu_seconds()
    finally:
        engine.stop(drain=True)
        for fd in fds.values():
            os.close(fd)
    if bad:
        raise RuntimeError(f"{len(bad)} reads failed or returned wrong bytes")
    sup_us = (cpu1[0] - cpu0[0]) * 1e6 / max(done, 1)
    wrk_us = (cpu1[1] - cpu0[1]) * 1e6 / max(done, 1)
    return rate, sup_us, wrk_us


def write_source(path, mib):
    """The benchmarks' raw image: compressible, random 1 KiB then 3 KiB of zeros, ``mib`` MiB."""
    with open(path, "wb") as f:
        rnd = random.Random(7)
        f.writelines(rnd.randbytes(1024) + bytes(3072) for _ in range(mib * 256))


def report(label, io_size, rate, base, sup_us, wrk_us, **key):
    """Print one point (rate, ratio to ``base``, CPU per command); its JSON record."""
    print(f"  {label}: {rate:>9.0f} cmds/s {rate * io_size / MiB:>8.1f} MiB/s   "
          f"x{rate / base:.2f}   CPU/cmd: supervisor {sup_us:.1f} us, workers {wrk_us:.1f} us",
          flush=True)
    return {**key, "size": io_size, "cmds_per_s": round(rate, 1),
            "supervisor_cpu_us_per_cmd": round(sup_us, 2), "worker_cpu_us_per_cmd": round(wrk_us, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--mib", type=int, default=128, help="backend size")
    p.add_argument("--iov-kb", type=int, default=0)
    p.add_argument("--backend", default="raw,lz4,zstd", help="comma-separated: raw, lz4, zstd")
    p.add_argument("--dir", default=None)
    p.add_argument("--json", action="store_true", help="last line: one JSON object, all points")
    args = p.parse_args(argv)
    backends = args.backend.split(",")
    d = tempfile.mkdtemp(prefix="engine-bench-", dir=args.dir)
    raw = os.path.join(d, "image.raw")
    results = []
    try:
        write_source(raw, args.mib)
        openers = {"raw": RawFileOpener(raw)}
        for algo in ("lz4", "zstd"):
            if algo in backends:
                zpath = os.path.join(d, f"image.{algo}")
                with open(zpath, "wb") as out:
                    compress(LocalFile(raw), out, algorithm=algo)
                openers[algo] = ZFileOpener(zpath)
        for path in os.listdir(d):
            with open(os.path.join(d, path), "rb") as f:          # warm the page cache
                while f.read(16 * MiB):
                    pass
        truth_fd = os.open(raw, os.O_RDONLY)
        cpus = len(os.sched_getaffinity(0))
        print(f"engine: random reads, depth {args.depth}, {args.mib} MiB in page cache, "
              f"{cpus} CPUs, {args.seconds:.0f}s per point")
        for name in backends:
            for io_size in (4096, MiB):
                base = None
                for workers in (0, 1, 2):
                    rate, sup_us, wrk_us = measure(openers[name], args.mib * MiB, workers,
                                                   io_size, args.depth, args.seconds,
                                                   args.iov_kb << 10, truth_fd=truth_fd)
                    base = base or rate
                    results.append(report(f"{name:5} {io_size // 1024:>5} KiB reads  workers={workers}",
                                          io_size, rate, base, sup_us, wrk_us, backend=name,
                                          workers=workers))
        os.close(truth_fd)
        if args.json:
            print(json.dumps({"cpus": cpus, "results": results}), flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
