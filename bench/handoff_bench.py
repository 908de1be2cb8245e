"""System calls (and, with ``--clock``, clock reads) per command through the engine: random 4 KiB
reads of a raw file with workers 0, 1 and 2, at depth 1 and depth 32, counted by ``strace -f -c``
over the whole process tree.  The engine's fd is watched edge-triggered, as the daemon does.

    python3 -m bench.handoff_bench [--commands 4000] [--clock]

Each point is two runs of the same child, with ``--commands`` commands and with none; the
difference divided by the count leaves start-up and shutdown out.  ``--clock`` compiles (with
``cc``) a ``clock_gettime`` that makes the system call and preloads it, so that clock reads show
up where the vDSO would hide them: what they cost where there is no vDSO (UML guests, some VMs).
strace slows every system call down, which changes how often a spinning side finds work before
it sleeps: compare counts, not rates, and compare runs made the same way.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import subprocess
import sys
import tempfile

CLOCK_SHIM = r"""
#define _GNU_SOURCE
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int clock_gettime(clockid_t c, struct timespec *t) { return syscall(SYS_clock_gettime, c, t); }
"""
SHOWN = ("read", "write", "pselect6", "epoll_wait", "preadv2", "futex", "clock_gettime")


def child(workers: int, commands: int, depth: int, path: str) -> None:
    """Run ``commands`` random 4 KiB reads of ``path`` at ``depth`` through Engine(workers)."""
    from overlaybd.workers import OP_READ, ST_GOOD, Engine
    from overlaybd.workers.rawfile import RawFileOpener
    size = os.path.getsize(path)
    area = os.memfd_create("handoff-data-area")
    os.ftruncate(area, depth * 4096)
    free, done = list(range(depth)), [0]

    def on_complete(dev, cmd_id, status):
        if status != ST_GOOD:
            raise SystemExit(f"command {cmd_id} failed: {status}")
        free.append(cmd_id)
        done[0] += 1

    engine = Engine(workers=workers, on_complete=on_complete)
    if hasattr(engine, "watch_edge"):     # the daemon's mode (a tree before it had none)
        engine.watch_edge()
    engine.start()
    engine.add_device(1, RawFileOpener(path), area, depth * 4096)
    rnd, sent = random.Random(1), 0
    while done[0] < commands:
        while free and sent < commands:
            slot = free.pop()
            sent += 1
            engine.submit(1, slot, OP_READ, rnd.randrange(size // 4096) * 4096, 4096,
                          [(slot * 4096, 4096)])
        engine.wait(1.0)
    engine.stop()


def _counts(argv, env) -> collections.Counter:
    """strace -f -c of ``argv``: calls per system call."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(["strace", "-f", "-c", "-o", out.name, *argv], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        counts = collections.Counter()
        for line in out.read().splitlines():
            f = line.split()
            # "% time  seconds  usecs/call  calls  [errors]  syscall"
            if len(f) >= 5 and f[-1] != "total" and f[3].isdigit():
                counts[f[-1]] += int(f[3])
        return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commands", type=int, default=4000)
    p.add_argument("--clock", action="store_true",
                   help="count clock reads too (needs cc): as where there is no vDSO")
    p.add_argument("--child", nargs=4, metavar=("WORKERS", "COMMANDS", "DEPTH", "PATH"),
                   help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(int(a.child[0]), int(a.child[1]), int(a.child[2]), a.child[3])
        return 0
    if shutil.which("strace") is None:
        print("handoff_bench: strace is not installed (apt install strace); skipped")
        return 0
    d = tempfile.mkdtemp(prefix="handoff-bench-")
    try:
        env = dict(os.environ)
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = repo + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if a.clock:
            if shutil.which("cc") is None:
                print("handoff_bench: --clock needs a C compiler (cc); skipped")
                return 0
            with open(os.path.join(d, "clock.c"), "w") as f:
                f.write(CLOCK_SHIM)
            subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", os.path.join(d, "clock.so"),
                            os.path.join(d, "clock.c")], check=True)
            env["LD_PRELOAD"] = os.path.join(d, "clock.so")
        path = os.path.join(d, "image.raw")
        with open(path, "wb") as f:
            f.write(random.Random(7).randbytes(32 << 20))
        print(f"handoff_bench: system calls per command (strace -f -c, {a.commands} commands "
              f"less a run of none{'; clock reads made system calls' if a.clock else ''})")
        for depth in (1, 32):
            for workers in (0, 1, 2):
                runs = [_counts([sys.executable, "-m", "bench.handoff_bench", "--child",
                                 str(workers), str(n), str(depth), path], env)
                        for n in (a.commands, 0)]
                per = {k: (runs[0][k] - runs[1][k]) / a.commands for k in runs[0]}
                total = sum(per.values())
                shown = ", ".join(f"{k} {per.get(k, 0):.2f}" for k in SHOWN if per.get(k))
                print(f"  depth {depth:>2} workers={workers}: {total:5.2f} per command  ({shown})",
                      flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
