"""Two devices, one supervisor or two: what lifts the one-supervisor ceiling (issue 13 item 7).

    python3 -m bench.supervisors_bench [--seconds 3] [--depth 32] [--backend raw,lz4] [--json]

Every configuration serves the same two devices (each its own copy of the backend, random reads
at ``--depth`` per device, bytes checked as in engine_bench) and prints the two devices' summed
cmds/s as a ratio to the first configuration, measured in the same run:

- ``1 supervisor, inline``: one engine, both devices, no workers (the baseline);
- ``1 supervisor, W workers``: one engine, both devices, W = 1, 2;
- ``2 supervisors, inline``: one process per device, each an inline engine (what several
  supervisor processes, one per group of devices, would give);
- ``2 supervisors, 1 worker each``.

With N CPUs, each supervisor process of the last two gets its own share of them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time

import multiprocess

from overlaybd.io import LocalFile
from overlaybd.workers.rawfile import RawFileOpener
from overlaybd.zfile import compress

from .engine_bench import ZFileOpener, measure

MiB = 1 << 20


def serve(openers, size, workers, io_size, depth, seconds, truth, cpus=None, seed=1,
          start_at=None):
    """One engine serving every device of ``openers``: engine_bench's loop, bytes checked."""
    fd = os.open(truth, os.O_RDONLY)
    try:
        return measure(list(openers), size, workers, io_size, depth, seconds, 0, seed, fd, cpus,
                       start_at)
    finally:
        os.close(fd)


def _child(conn, *args):
    try:
        conn.send(serve(*args))
    except Exception as e:  # noqa: BLE001 -- reported by the parent
        conn.send(e)


def split_serve(openers, size, workers, io_size, depth, seconds, truth, cpus):
    """One process per device (each on its share of ``cpus``), all at once; summed rate and
    per-command CPU averaged over the processes."""
    ctx = multiprocess.get_context("fork")
    share = max(len(cpus) // len(openers), 1)
    start_at = time.monotonic() + 1.5        # every process times the same window
    procs = []
    for i, opener in enumerate(openers):
        mine = cpus[(i * share) % len(cpus):][:share] or cpus
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_child, args=(child, [opener], size, workers, io_size, depth,
                                             seconds, truth, mine, i + 1, start_at))
        p.start()
        procs.append((p, parent))
    results = []
    for p, conn in procs:
        r = conn.recv()
        p.join()
        if isinstance(r, Exception):
            raise r
        results.append(r)
    n = len(results)
    return (sum(r[0] for r in results), sum(r[1] for r in results) / n,
            sum(r[2] for r in results) / n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--mib", type=int, default=64, help="size of each device")
    p.add_argument("--backend", default="raw,lz4", help="comma-separated: raw, lz4")
    p.add_argument("--dir", default=None)
    p.add_argument("--json", action="store_true", help="last line: one JSON object, all points")
    args = p.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    d = tempfile.mkdtemp(prefix="supervisors-bench-", dir=args.dir)
    results = []
    try:
        raw = os.path.join(d, "image.raw")
        with open(raw, "wb") as f:           # compressible, like engine_bench's
            rnd = random.Random(7)
            f.writelines(rnd.randbytes(1024) + bytes(3072) for _ in range(args.mib * 256))
        openers = {}
        for name in args.backend.split(","):
            if name == "raw":
                openers[name] = [RawFileOpener(raw), RawFileOpener(raw)]
            else:
                paths = [os.path.join(d, f"image{i}.{name}") for i in (1, 2)]
                for path in paths:
                    with open(path, "wb") as out:
                        compress(LocalFile(raw), out, algorithm=name)
                openers[name] = [ZFileOpener(path) for path in paths]
        print(f"supervisors: 2 devices, random reads, depth {args.depth} each, {len(cpus)} CPUs, "
              f"{args.seconds:.0f}s per point")
        size = args.mib * MiB
        configs = [("1 supervisor, inline", False, 0), ("1 supervisor, 1 worker", False, 1),
                   ("1 supervisor, 2 workers", False, 2), ("2 supervisors, inline", True, 0),
                   ("2 supervisors, 1 worker each", True, 1)]
        for name, ops in openers.items():
            for io_size in (4096, MiB):
                base = None
                for label, split, workers in configs:
                    run = split_serve if split else serve
                    extra = (cpus,) if split else ()
                    rate, sup, wrk = run(ops, size, workers, io_size, args.depth, args.seconds,
                                         raw, *extra)
                    base = base or rate
                    print(f"  {name:4} {io_size // 1024:>5} KiB  {label:29}: {rate:>9.0f} cmds/s "
                          f"{rate * io_size / MiB:>8.1f} MiB/s  x{rate / base:.2f}  CPU/cmd: "
                          f"supervisor {sup:.1f} us, workers {wrk:.1f} us", flush=True)
                    results.append({"backend": name, "size": io_size, "config": label,
                                    "cmds_per_s": round(rate, 1),
                                    "supervisor_cpu_us_per_cmd": round(sup, 2),
                                    "worker_cpu_us_per_cmd": round(wrk, 2)})
        if args.json:
            print(json.dumps({"cpus": len(cpus), "results": results}), flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
