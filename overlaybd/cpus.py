"""How many worker processes to start by default, from the CPUs this process may run on.
The rule follows engine_bench and tcmu_bench (docs/performance.md, "Default worker count"):
with one CPU a worker only adds hand-offs.  With two, engine_bench (fake kernel) has one worker
ahead at 4 KiB (1.06-1.26x) and two ahead at 1 MiB (1.44-1.88x), but overlaybd-tcmu in a
two-vCPU kernel guest was slower with workers on every job (2026-12-04, rates against inline
in the same boot: 4 KiB QD32 0.59-0.97x, sequential 1 MiB 0.60-0.74x, 4 KiB QD1 0.26-0.50x),
so the engine runs inline (0) up to two CPUs.  Above two CPUs it starts one worker per CPU
but one, each pinned to a CPU of its own, leaving the first CPU to the supervisor: a worker
pinned to the supervisor's CPU holds every worker back (chunks are spread evenly over the
workers), which engine_bench measures on two CPUs and docs/performance.md ("A worker on the
supervisor's CPU") carries to larger hosts.  Nothing above two CPUs is measured here.
"""

import os

INLINE_UP_TO_CPUS = 2


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(ncpu: int | None = None) -> int:
    """0 (inline) up to INLINE_UP_TO_CPUS CPUs, else one worker per CPU but the supervisor's."""
    ncpu = available_cpus() if ncpu is None else ncpu
    return ncpu - 1 if ncpu > INLINE_UP_TO_CPUS else 0
