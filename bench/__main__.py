"""Run every benchmark: ``python -m bench [name ...]`` (default: all that exist, in ORDER).

Each one's ``main`` is called with the options given after the names (``python -m bench
engine_bench --json``), or none.  One that raises is reported and the
rest still run (exit status 1); missed targets are listed, exit status 0 (timings are noisy).
"""

import importlib
import sys
import traceback

ORDER = ["image_bench", "lsmt_bench", "zfile_bench", "blockcache_bench", "engine_bench", "handoff_bench", "supervisors_bench", "daemon_bench", "remote_bench",
         "prefetch_bench", "tcmu_bench", "conformance_bench"]


def main(argv):
    first = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:first] or ORDER, argv[first:]
    failed, crashed = [], []
    for name in names:
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"bench.{name}":
                continue
            raise
        print(f"== {name}", flush=True)
        try:
            rc = mod.main(options)
        except Exception:                   # the benchmarks after it still run
            traceback.print_exc()
            crashed.append(name)
            continue
        if rc:
            failed.append(name)
    if failed:
        print(f"targets missed in: {', '.join(failed)}")
    if crashed:
        print(f"crashed: {', '.join(crashed)}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
