"""Run every benchmark: ``python -m bench [name ...]`` (default: all that exist)."""

import importlib
import sys

ORDER = ["image_bench", "lsmt_bench", "zfile_bench", "engine_bench", "daemon_bench", "remote_bench",
         "prefetch_bench", "tcmu_bench"]


def main(argv):
    names = argv or ORDER
    failed = []
    for name in names:
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"bench.{name}":
                continue
            raise
        print(f"== {name}", flush=True)
        rc = mod.main([])
        if rc:
            failed.append(name)
    if failed:
        print(f"targets missed in: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
