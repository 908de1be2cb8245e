"""``python -m bench.proctree PID OUT``: sample a process and its children (psutil) until it
exits; write each one's CPU seconds and peak RSS to OUT as JSON."""

import json
import sys
import time

import psutil


def main(argv):
    pid, out = int(argv[0]), argv[1]
    seen = {}
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        root = None
    while root is not None and root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                with p.oneshot():
                    cpu = p.cpu_times()
                    rss = p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            if p.pid not in seen:
                try:    # workers are forks of the supervisor; anything else is named as itself
                    role = ("supervisor" if p.pid == pid else
                            "worker" if p.exe() == root.exe() else f"child {p.name()}")
                except psutil.Error:
                    continue
                seen[p.pid] = {"role": role, "cpu_s": 0.0, "peak_rss_mib": 0.0}
            r = seen[p.pid]
            r["cpu_s"] = round(cpu.user + cpu.system, 2)
            r["peak_rss_mib"] = round(max(r["peak_rss_mib"], rss / 2**20), 1)
        time.sleep(0.2)
    with open(out, "w") as f:
        json.dump(seen, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
