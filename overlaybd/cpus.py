"""How many worker processes to start by default, from the CPUs this process may run on.

The rule follows engine_bench and tcmu_bench (docs/performance.md, "Default worker count"):
with one or two CPUs the supervisor's hand-off costs more than a worker brings on every 4 KiB
read and on raw 1 MiB reads (two CPUs, 2026-12-04: raw 4 KiB 0.35x with one worker and 0.21x
with two; lz4 4 KiB 0.40x and 0.44x; only compressed 1 MiB reads gain, 1.2x), so the engine
runs inline (0).  Above two CPUs it starts one worker per CPU; that is not measured here
(every machine here has two) but what the scaling model in docs/performance.md suggests for
large compressed reads.
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
    """0 (inline) up to INLINE_UP_TO_CPUS CPUs, else one worker per CPU."""
    ncpu = available_cpus() if ncpu is None else ncpu
    return ncpu if ncpu > INLINE_UP_TO_CPUS else 0
