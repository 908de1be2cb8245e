"""One reading of everything the exporter shows, as a plain dict (the JSON of
``<uriPrefix>?format=json``; the Prometheus text is rendered from the same dict).

Counters come from the shared slabs (:func:`overlaybd.metrics.totals`); devices, in-flight
commands and worker restarts from the supervisor's daemon and engine; CPU, RSS, descriptors
and threads of the supervisor and every worker from psutil.  docs/operations.md lists the fields.
"""

from __future__ import annotations

import json
import os
import time

import psutil

from . import (
    BUCKETS,
    ERROR_KINDS,
    ERRORS,
    G_DL_BYTES,
    G_DL_READS,
    G_EVICT_BYTES,
    G_EVICT_PASSES,
    G_EVICT_TARGET,
    G_GAVE_UP,
    G_RANGE_BYTES,
    G_RANGE_EVICTS,
    GLOBAL,
    L_BK_BYTES,
    L_BK_COMPLETED,
    L_BK_DONE_BYTES,
    L_BK_FAILURES,
    L_BK_READS,
    L_BK_SIZE,
    L_BYTES,
    L_HIT_BYTES,
    L_HIT_READS,
    L_RANGE_BYTES,
    L_READS,
    L_REFILL_BYTES,
    L_REFILLS,
    L_REG_BYTES,
    L_REG_READS,
    LAYER,
    P_BYTES,
    P_DONE,
    P_FAILED,
    P_TOTAL,
    PREFETCH,
    R_COUNT,
    R_SUM_US,
    REGISTRY,
    pread_totals,
    totals,
)

_procs: dict[int, psutil.Process] = {}


def _retry(fn, default):
    """Read the supervisor's structures from another thread: a dict that changed size while
    we iterated it is read again."""
    for _ in range(5):
        try:
            return fn()
        except RuntimeError:
            time.sleep(0)
    return default


def _process(pid: int) -> dict:
    p = _procs.get(pid)
    if p is None:
        p = _procs[pid] = psutil.Process(pid)
    with p.oneshot():
        cpu = p.cpu_times()
        return {"pid": pid, "cpu_seconds": round(cpu.user + cpu.system, 3),
                "rss_bytes": p.memory_info().rss, "fds": p.num_fds(), "threads": p.num_threads()}


def processes(engine=None) -> list[dict]:
    """The supervisor and each worker position: CPU seconds, RSS, fds, threads, restarts."""
    out = [{"process": "supervisor", "worker": "", **_process(os.getpid()), "restarts": 0}]
    stats = _retry(engine.stats, []) if engine is not None else []
    live = set()
    for s in stats:
        row = {"process": "worker", "worker": str(s["index"]), "pid": s["pid"], "cpu_seconds": 0.0,
               "rss_bytes": 0, "fds": 0, "threads": 0, "restarts": s["restarts"]}
        if s["pid"] is not None:
            try:
                row.update(_process(s["pid"]))
                live.add(s["pid"])
            except psutil.Error:
                pass                    # exited just now: its successor shows next time
        out.append(row)
    for pid in [p for p in _procs if p != os.getpid() and p not in live]:
        del _procs[pid]
    return out


def devices(daemon=None) -> list[dict]:
    if daemon is None:
        return []
    devs = _retry(lambda: list(daemon.devices.values()), [])
    return [{"device": d.info.dev_name, "config": d.info.config_path, "uio": d.info.minor,
             "dev_id": d.info.dev_id or ""} for d in devs]


def _upstream(tot: dict, g: list[int], windows: dict) -> dict:
    out = {}
    for name, (reads, nbytes) in (("pread", pread_totals(tot)),
                                  ("download", (g[G_DL_READS], g[G_DL_BYTES]))):
        w = windows.get(name, {})
        out[name] = {"count": nbytes, "reads": reads, "throughput": w.get("throughput", 0.0),
                     "qps": w.get("qps", 0.0), "max_latency_us": w.get("max_latency_us", 0)}
    return out


def _layer(labels, row) -> dict:
    return {"config": labels[0], "layer": labels[1],
            "reads": row[L_READS], "read_bytes": row[L_BYTES],
            "hit_reads": row[L_HIT_READS], "hit_bytes": row[L_HIT_BYTES],
            "registry": {"download": {"reads": row[L_REG_READS], "bytes": row[L_REG_BYTES]},
                         "bk_download": {"reads": row[L_BK_READS], "bytes": row[L_BK_BYTES]}},
            "refills": row[L_REFILLS], "refill_bytes": row[L_REFILL_BYTES],
            "evicted_bytes": row[L_RANGE_BYTES],
            "background_download": {"done_bytes": row[L_BK_DONE_BYTES], "size": row[L_BK_SIZE],
                                    "completed": row[L_BK_COMPLETED],
                                    "failures": row[L_BK_FAILURES]}}


def _histogram(row) -> dict:
    cum, buckets = 0, {}
    for i, le in enumerate((*BUCKETS, float("inf"))):
        cum += row[i]
        buckets["+Inf" if le == float("inf") else repr(le)] = cum
    return {"count": row[R_COUNT], "sum_seconds": row[R_SUM_US] / 1e6, "buckets": buckets}


def snapshot(daemon=None, windows=None, node="") -> dict:
    """Everything, summed over the processes.  ``windows``: the exporter's last windowed rates
    ``{"pread"|"download": {"throughput", "qps", "max_latency_us"}}``."""
    g = [0] * 32
    layers, prefetch, hist = [], [], {}
    errors = dict.fromkeys(ERROR_KINDS, 0)
    tot = totals()
    for k, row in tot.items():
        kind, *labels = json.loads(k)
        if kind == GLOBAL:
            g = row
        elif kind == LAYER:
            layers.append(_layer(labels, row))
        elif kind == REGISTRY:
            hist[labels[0]] = _histogram(row)
        elif kind == ERRORS:
            errors = {name: row[i] for i, name in enumerate(ERROR_KINDS)}
        elif kind == PREFETCH:
            prefetch.append({"config": labels[0], "done": row[P_DONE], "total": row[P_TOTAL],
                             "bytes": row[P_BYTES], "failed": row[P_FAILED]})
    engine = getattr(daemon, "engine", None)
    inflight = _retry(lambda: engine.in_flight, 0) if engine is not None else 0
    return {
        "node": node, "alive": 1, "time": time.time(),
        "upstream": _upstream(tot, g, windows or {}),
        "layers": layers,
        "registry": {"reads": hist, "errors": errors, "failed_reads": g[G_GAVE_UP]},
        "cache": {"evictions": g[G_EVICT_PASSES], "evict_target_bytes": g[G_EVICT_TARGET],
                  "evicted_bytes": {"lru": g[G_EVICT_BYTES], "checksum": g[G_RANGE_BYTES]},
                  "evicted_ranges": g[G_RANGE_EVICTS]},
        "prefetch": prefetch,
        "devices": devices(daemon),
        "inflight_commands": inflight,
        "processes": processes(engine),
    }
