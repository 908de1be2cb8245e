"""Stress the worker engine: high queue depth, random SIGKILLs (and SIGSTOPs) of workers.

A memfd stands in for the kernel's data area; the backend is a raw file of random bytes.  Every
completed read is checked byte for byte against the file, every command must complete exactly
once with GOOD status.  Prints commands/s, then CPU seconds and peak RSS (sampled with psutil)
of every process that took part.  Exit status 1 on any lost, duplicated, failed or wrong read.

    python3 -m stress.engine_stress --workers 2 --seconds 20 --depth 64 --kill-every 0.5
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import signal
import sys
import tempfile
import time

import psutil

from overlaybd.abi.ops import STATUSES
from overlaybd.workers import OP_READ, ST_GOOD, Engine
from overlaybd.workers.rawfile import RawFileOpener

DEV = 1
BLOCK = 4096


class Sampler:
    """CPU seconds and peak RSS of the supervisor and of every worker generation (psutil)."""

    def __init__(self):
        self.stats: dict[int, list] = {}          # pid -> [role, cpu seconds, peak rss]

    def sample(self, pid: int, role: str) -> None:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                t = p.cpu_times()
                rss = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return
        s = self.stats.setdefault(pid, [role, 0.0, 0])
        s[1] = t.user + t.system
        s[2] = max(s[2], rss)

    def report(self) -> None:
        print(f"{'pid':>8} {'role':<12} {'cpu s':>8} {'peak rss MiB':>13}")
        for pid, (role, cpu, rss) in self.stats.items():
            print(f"{pid:>8} {role:<12} {cpu:>8.2f} {rss / 2**20:>13.1f}")


def live_pids(engine) -> list[int]:
    """Worker pids, without positions waiting out a crash-loop delay (no pid to signal)."""
    return [pid for pid in engine.worker_pids() if pid]


def run(args) -> int:
    rnd = random.Random(args.seed)
    size = args.size_mb << 20
    max_io = args.max_io_kb << 10
    with tempfile.NamedTemporaryFile(prefix="engine-stress-", delete=False) as f:
        src = rnd.randbytes(size)
        f.write(src)
        path = f.name
    map_size = args.depth * max_io
    map_fd = os.memfd_create("stress-data-area", os.MFD_CLOEXEC)
    os.ftruncate(map_fd, map_size)
    mm = mmap.mmap(map_fd, map_size)
    free_slots = list(range(args.depth))
    inflight: dict[int, tuple] = {}                # cmd_id -> (slot, offset, length)
    errors: list[str] = []
    done = [0, 0]                                  # commands, bytes

    def on_complete(dev, cmd_id, status):
        entry = inflight.pop(cmd_id, None)
        if entry is None:
            errors.append(f"command {cmd_id} completed twice or was never submitted")
            return
        slot, off, n = entry
        if status != ST_GOOD:
            errors.append(f"command {cmd_id} ({off}+{n}) status {STATUSES.get(status, status)}")
        elif mm[slot * max_io:slot * max_io + n] != src[off:off + n]:
            errors.append(f"command {cmd_id} ({off}+{n}): wrong bytes")
        free_slots.append(slot)
        done[0] += 1
        done[1] += n

    engine = Engine(workers=args.workers, chunk_size=args.chunk_kb << 10, on_complete=on_complete,
                    heartbeat_sec=args.heartbeat)
    engine.start()
    engine.add_device(DEV, RawFileOpener(path), map_fd, map_size)
    sampler = Sampler()
    me = os.getpid()
    kills = stalls = 0
    next_id = 1
    start = time.monotonic()
    end = start + args.seconds
    next_kill = start + rnd.expovariate(1 / args.kill_every) if args.kill_every else float("inf")
    next_stall = start + rnd.expovariate(1 / args.stall_every) if args.stall_every else float("inf")
    next_sample = start
    try:
        while True:
            now = time.monotonic()
            if now >= end and not inflight:
                break
            while free_slots and now < end:
                slot = free_slots.pop()
                n = rnd.randrange(1, max_io // BLOCK + 1) * BLOCK
                off = rnd.randrange(0, (size - n) // 512 + 1) * 512
                step = rnd.choice([BLOCK, 16 * BLOCK, n])
                base = slot * max_io
                iovs = [(base + p, min(step, n - p)) for p in range(0, n, step)]
                inflight[next_id] = (slot, off, n)
                engine.submit(DEV, next_id, OP_READ, off, n, iovs)
                next_id += 1
            engine.wait(0.01)
            if args.workers and now >= next_kill and now < end and live_pids(engine):
                os.kill(rnd.choice(live_pids(engine)), signal.SIGKILL)
                kills += 1
                next_kill = now + rnd.expovariate(1 / args.kill_every)
            if args.workers and now >= next_stall and now < end and live_pids(engine):
                os.kill(rnd.choice(live_pids(engine)), signal.SIGSTOP)
                stalls += 1
                next_stall = now + rnd.expovariate(1 / args.stall_every)
            if now >= next_sample:
                sampler.sample(me, "supervisor")
                for i, pid in enumerate(engine.worker_pids()):
                    if pid:
                        sampler.sample(pid, f"worker {i}")
                next_sample = now + 0.25
            if now > end + max(30.0, 3 * args.heartbeat):
                errors.append(f"{len(inflight)} commands never completed")
                break
        elapsed = time.monotonic() - start
        sampler.sample(me, "supervisor")
        for i, pid in enumerate(engine.worker_pids()):
            if pid:
                sampler.sample(pid, f"worker {i}")
        restarts = engine.restarts
        for w in engine.stats():
            print(f"worker {w['index']} (cpu {w['cpu']}, pid {w['pid']}): {w['restarts']} restarts, "
                  f"{w['parts_done']} parts done by the current process")
        codes = engine.stop(drain=True, timeout=30)
    finally:
        mm.close()
        os.close(map_fd)
        os.unlink(path)
    print(f"workers={args.workers} depth={args.depth} max_io={args.max_io_kb}KiB "
          f"chunk={args.chunk_kb}KiB seconds={elapsed:.1f}")
    print(f"commands={done[0]} ({done[0] / elapsed:.0f}/s, {done[1] / elapsed / 2**20:.1f} MiB/s) "
          f"kills={kills} stalls={stalls} restarts={restarts} exit codes={codes}")
    sampler.report()
    for e in errors[:20]:
        print("ERROR:", e)
    if errors:
        print(f"FAILED: {len(errors)} error(s)")
        return 1
    print("OK: every command completed exactly once, GOOD, with the right bytes")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--depth", type=int, default=64, help="commands in flight")
    p.add_argument("--size-mb", type=int, default=64, help="backend file size")
    p.add_argument("--max-io-kb", type=int, default=1024)
    p.add_argument("--chunk-kb", type=int, default=1024)
    p.add_argument("--kill-every", type=float, default=0.5, help="mean seconds between SIGKILLs (0: none)")
    p.add_argument("--stall-every", type=float, default=0.0,
                   help="mean seconds between SIGSTOPs of a worker (0: none)")
    p.add_argument("--heartbeat", type=float, default=1.0, help="heartbeat timeout, seconds")
    p.add_argument("--seed", type=int, default=1)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
