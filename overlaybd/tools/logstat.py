"""overlaybd-logstat: summarize overlaybd's log and audit files (ours or upstream's)."""

import json
import os
import sys

from .. import SERVICE_CONFIG as DEFAULT_CONFIG
from ..image.settings import load_service_config
from ..logstat.parse import parse_when, read_records
from ..logstat.summary import devices_of, select_device, summarize
from .common import make_main, parser

PROG = "overlaybd-logstat"


def build_parser():
    p = parser(PROG, "Summarize overlaybd log and audit files: per device and per blob reads,\n"
               "bytes and latency percentiles (from the audit lines), registry errors by\n"
               "kind, evictions, background downloads, worker restarts, warnings and errors\n"
               "grouped by message, and the slowest requests.  Reads upstream's files too.\n"
               "A path names a rotated set: f.N ... f.1, f are read oldest first.",
               epilog="--json prints one object; its fields are listed in docs/operations.md.")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="log and/or audit files ('-': stdin); default: logPath and auditPath "
                        "of --config")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"overlaybd.json naming the files when none are given (default {DEFAULT_CONFIG})")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--since", metavar="WHEN", help="only lines at or after WHEN: "
                   "'YYYY/MM/DD HH:MM:SS', 'YYYY-MM-DDTHH:MM:SS', or an age like 15m, 2h, 1d")
    p.add_argument("--until", metavar="WHEN", help="only lines before WHEN (same forms)")
    p.add_argument("--device", metavar="NAME",
                   help="only what concerns this device (its name as in 'device added' lines, "
                        "or its config path): the lines naming it, its config or its blobs, and "
                        "its blobs' audit lines")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="message groups to print (text output; default 10)")
    return p


def _default_files(config):
    svc = load_service_config(None if config == DEFAULT_CONFIG else config)
    return [p for p in (svc.log.path, svc.audit_path if svc.enable_audit else "") if p]


def collect(a) -> dict:
    files = a.files or _default_files(a.config)
    missing = [f for f in files if f != "-" and not os.path.exists(f)]
    if missing:
        raise FileNotFoundError(2, "no such file", missing[0])
    since = parse_when(a.since) if a.since else None
    until = parse_when(a.until) if a.until else None
    counts = {}
    records = [r for r in read_records(files, counts)
               if (since is None or r.time >= since) and (until is None or r.time < until)]
    devs = devices_of(records)
    if a.device:
        if a.device not in devs and not any(d["config"] == a.device for d in devs.values()):
            raise ValueError(f"no device {a.device!r} in these logs (known: "
                             f"{', '.join(sorted(devs)) or 'none'})")
        records = select_device(records, devs, a.device)
        devs = {k: v for k, v in devs.items() if a.device in (k, v["config"])}
    out = {"files": files, "lines": {**counts, "records": len(records)}}
    out.update(summarize(records, devs))
    return out


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _audit_table(rows, indent="  "):
    lines = []
    for ev, s in rows.items():
        lat = s["latency_us"]
        lines.append(f"{indent}{ev:<12} {s['count']:>8} reads {_fmt_bytes(s['bytes']):>11}   latency us "
                     f"p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} max {lat['max']}")
    return lines or [f"{indent}(none)"]


def render(s, top=10) -> str:
    out = [f"files: {', '.join(s['files'])}",
           f"time: {s['range']['first']} .. {s['range']['last']}  ({s['lines']['records']} records)",
           "levels: " + (", ".join(f"{k} {v}" for k, v in sorted(s["levels"].items())) or "none"),
           "", "audit events:", *_audit_table(s["audit"])]
    if s["devices"]:
        out += ["", "devices:"]
        for name, d in s["devices"].items():
            out += [f"  {name} (uio{d['uio']}) {d['config']}: {len(d['blobs'])} blobs",
                    *_audit_table(d["audit"], "    ")]
    if s["blobs"]:
        out += ["", "blobs:"]
        for path, b in s["blobs"].items():
            errs = ", ".join(f"{k} {v}" for k, v in b["registry_errors"].items())
            out += [f"  {path}" + (f"  (registry errors: {errs})" if errs else ""),
                    *_audit_table(b["audit"], "    ")]
    ev, bk, wr = s["evictions"], s["background_downloads"], s["worker_restarts"]
    out += ["", "registry errors: " + (", ".join(f"{k} {v}" for k, v in
                                                 sorted(s["registry_errors"].items())) or "none"),
            f"evictions: {ev['passes']} passes ({_fmt_bytes(ev['bytes'])}), {ev['ranges']} ranges "
            f"after checksum failures ({_fmt_bytes(ev['range_bytes'])})",
            f"background downloads: {bk['chunks']} chunks ({_fmt_bytes(bk['bytes'])}), "
            f"{bk['completed']} completed, {bk['failed']} failed attempts",
            f"worker restarts: {wr['count']}" + (" (" + ", ".join(
                f"worker {k}: {v}" for k, v in sorted(wr["by_worker"].items())) + ")" if wr["count"] else "")]
    if s["messages"]:
        out += ["", "warnings and errors by message:"]
        for g in s["messages"][:top]:
            out.append(f"  {g['count']:>6} {g['level']:<5} {g['message'][:160]}")
        if len(s["messages"]) > top:
            out.append(f"  ... {len(s['messages']) - top} more groups (--top, --json)")
    if s["slowest"]:
        out += ["", "slowest requests:"]
        for r in s["slowest"]:
            out.append(f"  {r['latency_us']:>10} us  {r['time']}  {r['event']} {r['pathname']} "
                       f"offset {r['offset']} size {r['size']}")
    return "\n".join(out) + "\n"


def _main(a):
    try:
        s = collect(a)
    except ValueError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    if a.json:
        json.dump(s, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(s, a.top))
    return 0


main = make_main(PROG, build_parser, _main)


if __name__ == "__main__":
    raise SystemExit(main())
