"""overlaybd-tcmu in a real kernel (UML 6.1) against the kernel's own file backstore.

    python3 -m bench.tcmu_bench [--seconds 5] [--stacks plain,lz4] [--ncpus 2] [--workers 0,1,2]
    python3 -m bench.tcmu_bench --trees before=/tmp/base,after=. --rounds 2 --workers 0

The image is image_bench's 4-layer 1 GiB image of real file content, served as plain layers
and as lz4 ZFile layers (what real images are); the baseline is target_core_file serving the
same disk as a flat file, in the same guest boot.
The guest gets 4 GiB so that the flat file and the layer files all stay in its page cache.
fio (libaio, direct): sequential 1 MiB at QD16, random 4 KiB at QD32 and QD1, for
`workers` 0 (inline), 1 and 2, with CPU seconds and peak RSS of every daemon process.
Targets (ratios to the file backstore): seq >= 0.4x, 4 KiB QD32 >= 0.9x, 4 KiB QD1 >= 0.4x,
judged on the worker count the daemon picks by default in that guest (marked "default":
``overlaybd.cpus.default_workers`` of the guest's CPUs); the other settings are printed for
comparison.
Per job and daemon process it also prints what an I/O cost: read-like and write-like system
calls (/proc/PID/io: read, write, readv... of uio fds and eventfds; not epoll_wait), voluntary
and involuntary context switches of the main thread (a voluntary one is a sleep: about one
wake-up), and CPU time -- counted from /proc before and after the job, nothing attached.
``--trees label=path,...`` serves from several source trees in the same boot (each round runs
every tree in turn), for before/after comparisons that meet the same kernel.
Needs root and the UML fixture (make deps).
"""

import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from overlaybd.cpus import default_workers

from .image_bench import build

REPO = pathlib.Path(__file__).resolve().parent.parent
EMPTY_SHA = hashlib.sha256(b"").hexdigest()     # what the guest hashes when dd read nothing
TESTS = [("seq1m-qd16", "MiB/s", 0.4), ("rand4k-qd32", "IOPS", 0.9), ("rand4k-qd1", "IOPS", 0.4)]


def fio(path, unit):
    job = json.loads(path.read_text())["jobs"][0]["read"]
    return job["bw_bytes"] / 2**20 if unit == "MiB/s" else job["iops"]


TICK_US = 1e6 / 100         # /proc/PID/stat counts CPU in clock ticks (USER_HZ)


def bytes_check(path, ref_sha):
    """"equal", "DIFFER", or "NOT READ" (the device gave no bytes to hash)."""
    sha, ref_sha = path.read_text().strip(), ref_sha.strip()
    return "equal" if sha == ref_sha else "NOT READ" if sha == EMPTY_SHA else "DIFFER"


def per_io(out, name, test):
    """What each daemon process did per I/O of one fio job, from guest_tcmu.sh's counters
    before and after it: ``[(role, reads, writes, voluntary switches, involuntary ones, CPU
    us), ...]``, the supervisor first; ``[]`` where the counters are missing."""
    before, after = (out / f"{name}-{test}.c0", out / f"{name}-{test}.c1")
    if not before.exists() or not after.exists():
        return []
    ios = json.loads((out / f"{name}-{test}.json").read_text())["jobs"][0]["read"]["total_ios"]

    def rows(path):
        return {int(r[0]): [int(x) for x in r[1:]] for r in
                (line.split() for line in path.read_text().splitlines()) if len(r) == 7}
    c0, c1 = rows(before), rows(after)
    res = []
    for i, (pid, end) in enumerate(c1.items()):
        start = c0.get(pid)
        if start is None or not ios:
            continue                # a worker started during the job: no whole count
        vol, invol, rd, wr, ut, st = (b - a for a, b in zip(start, end))
        res.append(("supervisor" if i == 0 else "worker", rd / ios, wr / ios, vol / ios,
                    invol / ios, (ut + st) * TICK_US / ios))
    return res


def describe(costs):
    """One job's per-I/O costs, the supervisor's then the workers' (summed)."""
    sup = [c for c in costs if c[0] == "supervisor"]
    wrk = [c for c in costs if c[0] == "worker"]
    parts = []
    for role, group in (("supervisor", sup), (f"{len(wrk)} worker{'s' if len(wrk) != 1 else ''}", wrk)):
        if group:
            rd, wr, vol, invol, cpu = (sum(c[k] for c in group) for k in range(1, 6))
            parts.append(f"{role} {rd:.2f} reads {wr:.2f} writes {vol:.2f}+{invol:.2f} switches "
                         f"{cpu:.0f} us")
    return ", ".join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--stacks", default="plain,lz4", help="comma-separated: plain, lz4")
    ap.add_argument("--ncpus", type=int, default=1,
                    help="guest CPUs (> 1: the SMP kernel of scripts/uml/build-smp-uml.sh)")
    ap.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    ap.add_argument("--trees", default="",
                    help="label=path,...: source trees to compare in the same boot")
    ap.add_argument("--rounds", type=int, default=1, help="rounds over the trees (--trees)")
    ap.add_argument("--report", metavar="DIR", default=None,
                    help="print an earlier run's results from its guest directory (the "
                         "tcmu-bench-* the run named), with the same other options; run nothing")
    a = ap.parse_args(argv)
    stacks = [x for x in a.stacks.split(",") if x]
    if not stacks or set(stacks) - {"plain", "lz4"}:
        ap.error(f"--stacks: plain and/or lz4, not {a.stacks!r}")
    try:
        counts = [int(x) for x in a.workers.split(",") if x]
    except ValueError:
        ap.error(f"--workers: comma-separated numbers, not {a.workers!r}")
    if not counts or set(counts) - {0, 1, 2}:
        ap.error(f"--workers: 0, 1 and/or 2, not {a.workers!r}")
    trees = [t.split("=", 1) for t in a.trees.split(",") if t]
    for t in trees:
        if len(t) != 2 or not t[0].isidentifier() or not os.path.isdir(t[1]):
            ap.error(f"--trees: label=directory,..., not {a.trees!r}")
    if a.rounds < 1 or a.rounds > 1 and not trees:
        ap.error("--rounds: a positive count, with --trees")
    for label, path in trees if not a.report else ():
        dirty = subprocess.run(["git", "-C", path, "status", "--porcelain", "--", "overlaybd"],
                               capture_output=True, text=True).stdout.strip()
        if dirty:       # the guest imports the tree as it is when each daemon starts
            print(f"warning: --trees {label}={path} has uncommitted changes under overlaybd/; "
                  "edits during the run change what each round measures (a worktree at a "
                  "commit does not)", file=sys.stderr)
    if a.report:
        return report(pathlib.Path(a.report) / "out", a, stacks, counts, trees)
    img_dir = REPO / "bench" / "out" / "image"
    build(str(img_dir), 1)
    w = pathlib.Path(tempfile.mkdtemp(prefix="tcmu-bench-"))
    for kind in stacks:
        (w / f"image-{kind}.json").write_text(json.dumps(
            {"lowers": [{"file": str(img_dir / f"l{n}.{kind}")} for n in range(4)]}))
    os.symlink(img_dir / "flat.raw", w / "flat.raw")
    for workers in (0, 1, 2):
        (w / f"obd-{workers}.json").write_text(json.dumps({
            "logConfig": {"logPath": str(w / "out" / f"daemon-w{workers}.log"), "logLevel": 1},
            "workerConfig": {"workers": workers}, "enableAudit": False}))
    env = dict(os.environ, OBD_PYTHON=sys.executable, OBD_BENCH_SECONDS=str(a.seconds),
               OBD_BENCH_STACKS=" ".join(stacks), OBD_BENCH_ROUNDS=str(a.rounds),
               OBD_BENCH_WORKERS=" ".join(map(str, counts)),
               OBD_BENCH_TREES=" ".join(f"{k}={os.path.abspath(v)}" for k, v in trees))
    p = subprocess.run([str(REPO / "scripts/uml/run-in-uml.sh"), "-t", "900", "-m", "4096",
                        "--ncpus", str(a.ncpus),
                        "--rw", str(w), *[x for _, t in trees for x in ("--rw", os.path.abspath(t))],
                        "--", "bash", "bench/guest_tcmu.sh", str(w)], cwd=REPO, env=env,
                       capture_output=True, text=True)
    out = w / "out"
    if p.returncode != 0:
        print(p.stderr[-3000:])
        return 1
    print(f"(guest directory {w}: --report {w} prints this again)")
    return report(out, a, stacks, counts, trees)


def report(out, a, stacks, counts, trees):
    """Print the results in ``out``; 0 if the default worker count met every target."""
    ref_sha = (out / "fileio.sha").read_text()
    base = {t: fio(out / f"fileio-{t}.json", u) for t, u, _ in TESTS}
    ncpu = int((out / "nproc").read_text())
    smp = a.ncpus > 1 or os.environ.get("OVERLAYBD_UML_KERNEL") == "smp"
    kernel = f"SMP UML, {ncpu} vCPU{'s' if ncpu > 1 else ''}" if smp else "UML 6.1, one vCPU"
    print(f"tcmu_bench ({kernel}): kernel target_core_file: " +
          ", ".join(f"{t} {base[t]:,.0f} {u}" for t, u, _ in TESTS))
    same = bytes_check(out / "naive.sha", ref_sha)
    print("  naive Python handler of the flat file (bench/naive_tcmu.py): " + ", ".join(
        f"{t} {fio(out / f'naive-{t}.json', u):,.0f} {u} "
        f"({fio(out / f'naive-{t}.json', u) / base[t]:.2f}x)" for t, u, _ in TESTS)
        + f"; bytes {same}")
    default = default_workers(ncpu)
    ok = default in (0, 1, 2)
    runs = [(f"{k} r{r} ", f"obd-{k}-{{kind}}-w{{workers}}-r{r}")
            for r in range(1, a.rounds + 1) for k, _ in trees] or [("", "obd-{kind}-w{workers}")]
    for kind in stacks:
        print(f"  {kind} layers:")
        for (label, pattern), workers in [(run, w) for run in runs for w in counts]:
            name = pattern.format(kind=kind, workers=workers)
            same = bytes_check(out / f"{name}.sha", ref_sha)
            cells = []
            for t, u, target in TESTS:
                v = fio(out / f"{name}-{t}.json", u)
                r = v / base[t]
                if workers == default:
                    ok &= r >= target and same == "equal"
                cells.append(f"{t} {v:,.0f} {u} ({r:.2f}x, target {target}x)")
            procs = json.loads((out / f"{name}-procs.json").read_text())
            usage = "; ".join(f"{p['role']} {p['cpu_s']:.1f} CPU-s {p['peak_rss_mib']:.0f} MiB"
                              for p in procs.values())
            mark = f" (default with {ncpu} CPU{'s' if ncpu > 1 else ''})" if workers == default else ""
            print(f"    {label}workers={workers}{mark}: {', '.join(cells)}; "
                  f"bytes {same}")
            print(f"               {usage}")
            for t, _, _ in TESTS:
                costs = per_io(out, name, t)
                if costs:
                    print(f"               per I/O, {t}: {describe(costs)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
