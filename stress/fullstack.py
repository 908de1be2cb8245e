"""Full-stack stress: overlaybd-tcmu in the real kernel (UML fixture), remote lz4 layers from the
loopback registry, a writable upper layer per device, verifying readers and writers, faults on a
schedule, psutil samples of the supervisor and every worker, a JSON report and a PNG plot.

  python -m stress.fullstack run [--profile short|stress|soak] [--out DIR]     (host, as root)
  python -m stress.fullstack guest W                                          (inside the guest)

Exit status 0 only with 0 verify errors, 0 I/O errors, every fault recovered from, and no leak:
after warm-up (the first quarter of the run) the supervisor's RSS may grow by at most
LEAK_RSS_MB and its open fds by at most LEAK_FDS; the same bounds hold for the workers' sum."""
import argparse
import base64
import io
import json
import os
import subprocess
import sys
import threading
import time

from stress import faults

REPO = faults.REPO
PROFILES = {"short": {"seconds": 60, "devices": 2, "readers": 2, "writers": 1},
            "stress": {"seconds": 180, "devices": 2, "readers": 2, "writers": 2},
            "soak": {"seconds": 900, "devices": 2, "readers": 2, "writers": 2}}
LEAK_RSS_MB, LEAK_FDS, WORKERS = 64, 32, 2
SCHEDULE = list(faults.KINDS)            # in this order, spread over the run after warm-up


class Ctx:
    hold = 3

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def daemon_alive(self):
        return self.daemon.poll() is None


def _sh(*a, **kw):
    return subprocess.run([str(x) for x in a], check=True, capture_output=True, text=True, **kw).stdout


def _setup(w, golden, reg, py):
    """Tar-wrap and push the golden lz4 layers; write cred.json, the daemon config, upper layers."""
    from overlaybd import tar
    os.makedirs("/tmp/blobs", exist_ok=True)
    blobs = []
    for i in (1, 2, 3):
        out = io.BytesIO()
        with open(os.path.join(golden, f"layer{i}.lz4.zfile"), "rb") as f:
            tar.wrap(io.BytesIO(f.read()), out)
        p = f"/tmp/blobs/layer{i}.tar"
        with open(p, "wb") as f:
            f.write(out.getvalue())
        blobs.append(p)
    env = json.load(open(os.path.join(reg.d, "env.json")))
    pushed = [json.loads(ln) for ln in _sh("/usr/bin/python3", os.path.join(REPO, "scripts/registry/push-blob.py"),
              "--registry", env["url"], "--repo", "img/stress", "--user", env["user"],
              "--password", env["password"], *blobs).splitlines()]
    pushed.sort(key=lambda p: p["file"])
    auth = base64.b64encode(f"{env['user']}:{env['password']}".encode()).decode()
    json.dump({"auths": {"127.0.0.1:5001/img": {"auth": auth}}}, open("/tmp/cred.json", "w"))
    os.chmod("/tmp/cred.json", 0o600)
    json.dump({"logConfig": {"logPath": f"{w}/out/daemon.log", "logLevel": 1},
               "credentialConfig": {"mode": "file", "path": "/tmp/cred.json"},
               "cacheConfig": {"cacheType": "file", "cacheDir": "/mnt/cachefs/cache", "cacheSizeGB": 1},
               "enableAudit": True, "auditPath": f"{w}/out/audit.log",
               "workerConfig": {"workers": WORKERS, "heartbeatSec": 2}},
              open("/tmp/obd.json", "w"))
    return pushed


def _device(i, pushed, w):
    os.makedirs("/mnt/upper", exist_ok=True)
    data, index = f"/mnt/upper/data{i}", f"/mnt/upper/index{i}"
    _sh(sys.executable, "-m", "overlaybd.tools.create", data, index, 1, "-s")
    cfg = f"/tmp/dev{i}.json"
    json.dump({"repoBlobUrl": "http://127.0.0.1:5001/v2/img/stress/blobs",
               "lowers": [{"digest": p["digest"], "size": p["size"]} for p in pushed],
               "upper": {"index": index, "data": data}, "resultFile": f"{w}/out/dev{i}.result"}, open(cfg, "w"))
    return _sh(os.path.join(REPO, "scripts/uml/tcmu-dev.sh"), "create", i, cfg).strip()


def _sample(daemon_pid, cache, t0):
    import psutil
    rows = []
    try:
        sup = psutil.Process(daemon_pid)
        procs = [("supervisor", sup)] + [(f"worker:{p.pid}", p) for p in sup.children()]
    except psutil.NoSuchProcess:
        return rows
    for role, p in procs:
        key = p.pid
        if key not in cache:
            cache[key] = p
            p.cpu_percent(None)
        q = cache[key]
        try:
            with q.oneshot():
                rows.append({"t": round(time.monotonic() - t0, 2), "proc": role, "pid": key,
                             "cpu": q.cpu_percent(None), "rss": q.memory_info().rss,
                             "fds": q.num_fds(), "threads": q.num_threads()})
        except psutil.Error:
            pass
    return rows


def _series(samples, which, t_from, t_to):
    """Per-time totals of supervisor (which='supervisor') or all workers ('workers'); for the
    workers only instants when all WORKERS were there (a window holding a killed worker's
    gap would otherwise read as growth afterwards)."""
    by_t = {}
    for s in samples:
        if (s["proc"] == "supervisor") == (which == "supervisor") and t_from <= s["t"] <= t_to:
            a = by_t.setdefault(s["t"], [0, 0, 0])
            a[0] += s["rss"]
            a[1] += s["fds"]
            a[2] += 1
    full = 1 if which == "supervisor" else WORKERS
    return [by_t[t][:2] for t in sorted(by_t) if by_t[t][2] == full]


def _leaks(samples, seconds):
    out = {}
    for which in ("supervisor", "workers"):
        warm = _series(samples, which, seconds * 0.25 - 10, seconds * 0.25)
        tail = _series(samples, which, seconds - 10, seconds + 999)
        if not warm or not tail:
            out[which] = {"error": "no samples"}
            continue
        avg = lambda xs, k: sum(x[k] for x in xs) / len(xs)  # noqa: E731
        d_rss, d_fds = (avg(tail, 0) - avg(warm, 0)) / 2**20, avg(tail, 1) - avg(warm, 1)
        out[which] = {"rss_growth_mb": round(d_rss, 1), "fds_growth": round(d_fds, 1),
                      "leak": d_rss > LEAK_RSS_MB or d_fds > LEAK_FDS}
    return out


def _plot(samples, fault_log, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    procs = sorted({s["proc"] for s in samples}, key=lambda p: (p != "supervisor", p))
    for ax, (key, label, scale) in zip(axes, [("cpu", "CPU %", 1), ("rss", "RSS MiB", 2**20),
                                              ("fds", "open fds", 1), ("threads", "threads", 1)]):
        for p in procs:
            xs = [(s["t"], s[key] / scale) for s in samples if s["proc"] == p]
            ax.plot([x for x, _ in xs], [y for _, y in xs], label=p, lw=1)
        for f in fault_log:
            ax.axvline(f["t"], color="red", ls=":", lw=0.8)
        ax.set_ylabel(label)
    for f in fault_log:
        axes[0].annotate(f["kind"], (f["t"], 0), rotation=90, fontsize=7, color="red", va="bottom")
    axes[-1].set_xlabel("seconds")
    axes[0].legend(fontsize=6, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _inject(inject, ctx, f):
    try:
        f["detail"] = inject(ctx)
    except Exception as e:                     # a fault that could not be injected fails the run
        f["detail"] = f"not injected: {e!r}"


def guest(w):
    prm = json.load(open(os.path.join(w, "params.json")))
    out = os.path.join(w, "out")
    os.makedirs(out, exist_ok=True)
    reg = faults.Registry("/tmp/reg", 5000)
    reg.start()
    proxy = faults.SlowProxy(5001, 5000)
    pushed = _setup(w, prm["golden"], reg, sys.executable)
    dlog = open(os.path.join(out, "daemon.out"), "ab")
    daemon = subprocess.Popen([sys.executable, "-m", "overlaybd.tools.tcmu", "/tmp/obd.json"], stdout=dlog, stderr=dlog)
    for _ in range(600):
        if "overlaybd-tcmu serving" in open(os.path.join(out, "daemon.log"), errors="replace").read() \
                if os.path.exists(os.path.join(out, "daemon.log")) else False:
            break
        time.sleep(0.1)
    devs = [_device(i + 1, pushed, w) for i in range(prm["devices"])]
    ctx = Ctx(daemon=daemon, daemon_pid=daemon.pid, workers=WORKERS, registry=reg, proxy=proxy, cache_dir="/mnt/cachefs/cache",
              fill_path="/mnt/cachefs/fill.tmp")
    secs = prm["seconds"]
    io_procs = []
    for di, d in enumerate(devs):
        for r in range(prm["readers"]):
            io_procs.append(subprocess.Popen([sys.executable, "-m", "stress.fullio", "read", d, str(secs),
                            os.path.join(prm["golden"], "manifest.json"), str(di * 100 + r)], stdout=subprocess.PIPE, text=True))
        for s in range(prm["writers"]):
            io_procs.append(subprocess.Popen([sys.executable, "-m", "stress.fullio", "write", d, str(secs), str(s),
                            str(prm["writers"]), str(di * 100 + 50 + s)], stdout=subprocess.PIPE, text=True))
    t0, cache, samples, fault_log = time.monotonic(), {}, [], []
    slots = [secs * 0.1 + k * (secs * 0.4 / len(SCHEDULE)) for k in range(len(SCHEDULE))]
    pending = list(zip(slots, SCHEDULE))
    while any(p.poll() is None for p in io_procs):
        now = time.monotonic() - t0
        samples += _sample(daemon.pid, cache, t0)
        if pending and now >= pending[0][0]:
            _, kind = pending.pop(0)
            inject, recovered = faults.KINDS[kind]
            f = {"kind": kind, "t": round(now, 2)}
            th = threading.Thread(target=_inject, args=(inject, ctx, f))
            th.start()
            while th.is_alive():               # keep sampling while the fault is held
                samples += _sample(daemon.pid, cache, t0)
                th.join(0.5)
            t_end = time.monotonic()
            while time.monotonic() - t_end < 30 and not recovered(ctx):
                samples += _sample(daemon.pid, cache, t0)
                time.sleep(0.5)
            f["recovered"] = recovered(ctx) and not f["detail"].startswith("not injected")
            f["recovery_s"] = round(time.monotonic() - t_end, 2)
            fault_log.append(f)
            continue
        time.sleep(1)
    io = [json.loads(p.communicate()[0] or '{"io_errors": 1, "verify_errors": 0, "errors": ["no result"]}')
          for p in io_procs]
    samples += _sample(daemon.pid, cache, t0)
    leaks = _leaks(samples, secs)
    dmesg_errs = subprocess.run("dmesg | grep -ciE 'I/O error|critical medium error|blk_update_request'",
                                shell=True, capture_output=True, text=True).stdout.strip()
    for i in range(len(devs)):
        subprocess.run([os.path.join(REPO, "scripts/uml/tcmu-dev.sh"), "remove", str(i + 1)], capture_output=True)
    daemon.terminate()
    rc = daemon.wait(60)
    reg.stop()
    per_proc = {}
    for s in samples:
        role = "supervisor" if s["proc"] == "supervisor" else s["proc"]
        e = per_proc.setdefault(role, {"start": {"rss": s["rss"], "fds": s["fds"], "t": s["t"]}})
        e["end"] = {"rss": s["rss"], "fds": s["fds"], "t": s["t"]}
    report = {"profile": prm["profile"], "seconds": secs, "devices": len(devs), "readers_per_device": prm["readers"],
              "writers_per_device": prm["writers"], "workers": WORKERS,
              "io": {k: sum(r.get(k, 0) for r in io) for k in ("reads", "writes", "bytes", "verify_errors", "io_errors")},
              "io_error_samples": [e for r in io for e in r.get("errors", [])][:20],
              "kernel_io_errors": int(dmesg_errs or 0), "faults": fault_log,
              "faults_injected": sorted({f["kind"] for f in fault_log if not f["detail"].startswith("not injected")}),
              "leak_bounds": {"rss_mb": LEAK_RSS_MB, "fds": LEAK_FDS}, "leaks": leaks,
              "processes": per_proc, "daemon_exit": rc, "samples": samples}
    failures = []
    if report["io"]["verify_errors"]:
        failures.append("verify errors")
    if report["io"]["io_errors"] or report["kernel_io_errors"]:
        failures.append("I/O errors")
    if set(report["faults_injected"]) != set(SCHEDULE):
        failures.append("fault kinds not injected: " + ", ".join(sorted(set(SCHEDULE) - set(report["faults_injected"]))))
    failures += [f"not recovered: {f['kind']}" for f in fault_log if not f["recovered"]]
    failures += [f"leak: {k}" for k, v in leaks.items() if v.get("leak") or "error" in v]
    report["failures"] = failures
    json.dump(report, open(os.path.join(out, "stress-report.json"), "w"), indent=1)
    _plot(samples, fault_log, os.path.join(out, "stress-plot.png"))
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1), file=sys.stderr)
    return 1 if failures else 0


def run(profile, out):
    """Host side: boot the UML guest with the project's fixture and run ``guest`` in it."""
    w = os.path.abspath(out)
    os.makedirs(w, exist_ok=True)
    prm = dict(PROFILES[profile], profile=profile,
               golden=os.environ.get("OBD_GOLDEN", os.path.join(REPO, "tests", "data", "golden")))
    json.dump(prm, open(os.path.join(w, "params.json"), "w"))
    env = dict(os.environ, OBD_PYTHON=sys.executable)
    p = subprocess.run([os.path.join(REPO, "scripts/uml/run-in-uml.sh"), "-t", str(prm["seconds"] + 300), "-m", "2560",
                        "--rw", w, "--", "bash", "stress/guest_stress.sh", w], cwd=REPO, env=env)
    rep = os.path.join(w, "out", "stress-report.json")
    print(f"report: {rep}\nplot:   {os.path.join(w, 'out', 'stress-plot.png')}")
    return p.returncode if os.path.exists(rep) else (p.returncode or 1)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stress.fullstack", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="boot the UML guest and run a profile (host, root)")
    r.add_argument("--profile", choices=sorted(PROFILES), default="stress")
    r.add_argument("--out", default=".cache/stress")
    g = sub.add_parser("guest", help="the run itself, inside the guest")
    g.add_argument("w")
    a = ap.parse_args(argv)
    return run(a.profile, a.out) if a.cmd == "run" else guest(a.w)


if __name__ == "__main__":
    sys.exit(main())
