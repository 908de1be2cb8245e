"""The summary overlaybd-logstat prints: one dict, the ``--json`` output (docs/operations.md).

Facts come from three kinds of lines:

* audit lines (ours and upstream's): per event and per blob (``pathname``) counts, bytes (the
  sum of ``size``) and latency percentiles; eviction passes (``actualEvict``); the slowest;
* this project's ``key=value`` messages: ``device added`` (device -> config), ``image layer``
  (config -> blobs), ``registry request failed`` (kind), ``background download done|failed``,
  ``cache range evicted``; and the supervisor's worker message ``worker N (pid P) REASON (exit
  code C); restarting it with K parts to redo``;
* upstream's messages for the same events (background download, registry errors by keyword).

Every WARN/ERROR/FATAL line is also grouped by its normalized message.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

from .parse import fields, normalize

PROBLEM_LEVELS = ("WARN", "ERROR", "FATAL")
SLOWEST = 10
_RESTART = re.compile(r"worker (\d+) \(pid (\d+)\) (\S+).*?\(exit code (\S+)\); restarting it with "
                      r"(\d+) parts to redo")
_UP_BK_START = re.compile(r"download blob start\. \((.*)\)")
_UP_BK_DONE = re.compile(r"download verify done\. rename\((.*),(.*)\) success")
_UP_BK_FAILED = re.compile(r"download failed, push back to download queue and retry (.*)")
_UP_KINDS = (("auth", re.compile(r"\b(401|403)\b|unauthori[sz]ed|authenticat", re.I)),
             ("not_found", re.compile(r"\b404\b|not found", re.I)),
             ("throttled", re.compile(r"\b429\b|too many requests", re.I)),
             ("timeout", re.compile(r"timed? ?out", re.I)),
             ("server", re.compile(r"\b5\d\d\b")),
             ("connection", re.compile(r"connect", re.I)))


def percentiles(values) -> dict:
    """Nearest-rank p50/p90/p99, max and mean of ``values`` (empty: zeros)."""
    v = sorted(values)
    if not v:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0, "mean": 0}

    def rank(p):
        return v[max(0, math.ceil(p / 100 * len(v)) - 1)]
    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": v[-1],
            "mean": round(sum(v) / len(v), 1)}


def _int(text, default=0):
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


class _Events:
    """count / bytes / latencies per audit event."""

    def __init__(self):
        self.count, self.bytes, self.lat = Counter(), Counter(), defaultdict(list)

    def add(self, rec):
        ev = rec.message
        self.count[ev] += 1
        self.bytes[ev] += _int(rec.fields.get("size"))
        if "latency" in rec.fields:
            self.lat[ev].append(_int(rec.fields["latency"]))

    def out(self) -> dict:
        return {ev: {"count": self.count[ev], "bytes": self.bytes[ev],
                     "latency_us": percentiles(self.lat[ev])} for ev in sorted(self.count)}


def devices_of(records) -> dict:
    """{device: {"config", "uio", "blobs": [...], "local": [...]}} from our key=value lines."""
    devs, blobs, local = {}, defaultdict(list), {}
    for r in records:
        if r.level == "AUDIT":
            continue
        if r.message.startswith("device added: "):
            f = fields(r.message)
            devs[f.get("device", "")] = {"config": f.get("config", ""), "uio": f.get("uio", "")}
        elif r.message.startswith("image layer: "):
            f = fields(r.message)
            if f.get("blob") and f["blob"] not in blobs[f.get("config", "")]:
                blobs[f.get("config", "")].append(f["blob"])
        elif r.message.startswith("background download done: "):
            f = fields(r.message)
            local[f.get("path", "")] = f.get("blob", "")
    for d in devs.values():
        d["blobs"] = blobs.get(d["config"], [])
        d["local"] = [p for p, b in local.items() if b in d["blobs"]]
    return devs


def select_device(records, devs, name):
    """The records that concern device ``name`` (its name, config path, blobs or local files)."""
    d = devs.get(name) or next((v for k, v in devs.items() if v["config"] == name), None)
    if d is None:
        return []
    names = [n for n in (name, d["config"], *d["blobs"], *d["local"]) if n]
    paths = set(d["blobs"]) | set(d["local"])
    out = []
    for r in records:
        if r.level == "AUDIT":
            if r.fields.get("pathname") in paths:
                out.append(r)
        elif any(n in r.message for n in names):
            out.append(r)
    return out


def summarize(records, devs=None) -> dict:
    """The summary of ``records`` (already filtered by time and device)."""
    devs = devices_of(records) if devs is None else devs
    levels, audit, blobs = Counter(), _Events(), defaultdict(_Events)
    errors, by_blob_err = Counter(), defaultdict(Counter)
    evict = {"passes": 0, "bytes": 0, "ranges": 0, "range_bytes": 0}
    bk = {"chunks": 0, "bytes": 0, "started": 0, "completed": 0, "failed": 0}
    restarts = {"count": 0, "by_worker": Counter(), "by_reason": Counter()}
    groups, slow = {}, []
    first = last = None
    for r in records:
        first = r.time if first is None or r.time < first else first
        last = r.time if last is None or r.time > last else last
        if r.level == "AUDIT":
            audit.add(r)
            path = r.fields.get("pathname")
            if path:
                blobs[path].add(r)
            if r.message == "eviction":
                evict["passes"] += 1
                evict["bytes"] += _int(r.fields.get("actualEvict"))
            elif r.message == "bk_download":
                bk["chunks"] += 1
                bk["bytes"] += _int(r.fields.get("size"))
            if "latency" in r.fields:
                slow.append((_int(r.fields["latency"]), r))
                if len(slow) > 4 * SLOWEST:
                    slow = sorted(slow, key=lambda x: -x[0])[:SLOWEST]
            continue
        levels[r.level] += 1
        _events_of(r, errors, by_blob_err, evict, bk, restarts)
        if r.level in PROBLEM_LEVELS:
            key = (r.level, normalize(r.message))
            g = groups.get(key)
            if g is None:
                g = groups[key] = {"level": r.level, "message": key[1], "count": 0,
                                   "source": f"{r.source}|{r.function}" if r.source else "",
                                   "example": r.message[:500], "first": _ts(r.time)}
            g["count"] += 1
            g["last"] = _ts(r.time)
    slow = sorted(slow, key=lambda x: -x[0])[:SLOWEST]
    return {
        "range": {"first": _ts(first), "last": _ts(last)},
        "levels": dict(levels),
        "audit": audit.out(),
        "blobs": {p: {"audit": e.out(), "registry_errors": dict(by_blob_err.get(p, {}))}
                  for p, e in sorted(blobs.items())},
        "devices": _device_rows(devs, blobs),
        "registry_errors": dict(errors),
        "evictions": evict,
        "background_downloads": bk,
        "worker_restarts": {"count": restarts["count"], "by_worker": dict(restarts["by_worker"]),
                            "by_reason": dict(restarts["by_reason"])},
        "messages": sorted(groups.values(), key=lambda g: (-g["count"], g["level"], g["message"])),
        "slowest": [{"time": _ts(r.time), "event": r.message, "pathname": r.fields.get("pathname", ""),
                     "offset": _int(r.fields.get("offset")), "size": _int(r.fields.get("size")),
                     "latency_us": lat} for lat, r in slow],
    }


def _events_of(r, errors, by_blob_err, evict, bk, restarts):
    msg = r.message
    if msg.startswith("registry request failed: "):
        f = fields(msg)
        errors[f.get("kind", "other")] += 1
        by_blob_err[f.get("blob", "")][f.get("kind", "other")] += 1
    elif msg.startswith("background download done: "):
        bk["completed"] += 1
    elif msg.startswith("background download failed: "):
        bk["failed"] += 1
    elif msg.startswith("cache range evicted: "):
        evict["ranges"] += 1
        evict["range_bytes"] += _int(fields(msg).get("size"))
    elif (m := _RESTART.match(msg)) is not None:
        restarts["count"] += 1
        restarts["by_worker"][m.group(1)] += 1
        restarts["by_reason"][m.group(3)] += 1
    elif _UP_BK_START.match(msg):                   # upstream's background download
        bk["started"] += 1
    elif _UP_BK_DONE.match(msg):
        bk["completed"] += 1
    elif _UP_BK_FAILED.match(msg):
        bk["failed"] += 1
    elif r.level in PROBLEM_LEVELS and "registryfs" in r.source:     # upstream's registry client
        kind = next((k for k, rx in _UP_KINDS if rx.search(msg)), "other")
        errors[kind] += 1


def _device_rows(devs, blobs) -> dict:
    out = {}
    for name, d in sorted(devs.items()):
        ev = _Events()
        for p in (*d["blobs"], *d["local"]):
            e = blobs.get(p)
            if e is not None:
                for k in e.count:
                    ev.count[k] += e.count[k]
                    ev.bytes[k] += e.bytes[k]
                    ev.lat[k].extend(e.lat[k])
        out[name] = {"config": d["config"], "uio": d["uio"], "blobs": d["blobs"], "audit": ev.out()}
    return out


def _ts(t):
    return None if t is None else t.strftime("%Y/%m/%d %H:%M:%S.%f")
