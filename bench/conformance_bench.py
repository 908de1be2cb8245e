"""libiscsi's SCSI conformance suite against the kernel's file backstore and overlaybd-tcmu.

    python3 -m bench conformance_bench [--family SCSI] [--workers 0,2] [--json]

One UML 6.1 boot: LIO's iSCSI fabric on 127.0.0.1:3260 exports (1) a target_core_file
backstore of a 1 GiB tmpfs file with emulate_tpu=1 emulate_tpws=1, then (2) overlaybd-tcmu
serving the golden lz4 lowers with a fresh writable upper, once per workers setting;
``iscsi-test-cu --dataloss -t FAMILY`` runs against each (bench/guest_conformance.sh).
Prints passed / failed / skipped per backstore and every test whose result differs from the
file backstore's.  Exit status 1 if a test that passes on the file backstore does not pass
on overlaybd (``KNOWN`` lists the differences that are understood, with the reason).
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "data" / "golden"

# test -> why it cannot pass here although it passes on target_core_file
KNOWN: dict[str, str] = {}

_SUITE = re.compile(r"^Suite: (\S+)")
_TEST = re.compile(r"^\s*Test: (\S+) \.\.\.(.*)$")


def parse(text):
    """{SUITE.TEST: 'passed' | 'failed' | 'skipped'} from iscsi-test-cu's verbose output:
    'Suite: SUITE', then per test 'Test: TEST ...', the test's own lines, and 'passed' or
    'FAILED'; a test that logs '[SKIPPED]' (not implemented, not supported) and passes is
    counted as skipped."""
    out, name, skipped, suite = {}, None, False, ""
    for line in text.splitlines():
        m = _SUITE.match(line)
        if m:
            suite, name = m.group(1), None
            continue
        m = _TEST.match(line)
        if m:
            name, skipped = f"{suite}.{m.group(1)}", False
            line = m.group(2)
        if name is None:
            continue
        if "[SKIPPED]" in line:
            skipped = True
        s = line.strip()
        # (CUnit's verdict may be followed on its line by a teardown's "[FAILED]" log)
        if s == "passed" or s.endswith(" passed") or s.startswith("passed "):
            out[name] = "skipped" if skipped else "passed"
            name = None
        elif s.startswith("FAILED") or s.endswith("FAILED"):
            out[name] = "failed"
            name = None
    return out


def counts(results):
    return {k: sum(1 for v in results.values() if v == k) for k in ("passed", "failed", "skipped")}


def run(family, workers, keep):
    w = pathlib.Path(tempfile.mkdtemp(prefix="conformance-"))
    (w / "image.json").write_text(json.dumps({
        "lowers": [{"file": str(GOLDEN / f"layer{i}.lz4.zfile")} for i in (1, 2, 3)],
        "upper": {"data": "/tmp/up.data", "index": "/tmp/up.index"},
        "resultFile": str(w / "image.result")}))
    for n in workers:
        (w / f"obd-{n}.json").write_text(json.dumps({
            "logConfig": {"logPath": str(w / "out" / f"daemon-w{n}.log"), "logLevel": 1},
            "workerConfig": {"workers": n}, "enableAudit": False,
            "cacheConfig": {"cacheDir": "/tmp/obd-cache"}}))
    env = dict(os.environ, OBD_PYTHON=sys.executable, OBD_CU_FAMILY=family,
               OBD_CU_WORKERS=" ".join(map(str, workers)))
    p = subprocess.run([str(REPO / "scripts/uml/run-in-uml.sh"), "-t", "3600", "-m", "3072",
                        "--mods", "iscsi_target_mod", "--rw", str(w), "--",
                        "bash", "bench/guest_conformance.sh", str(w)],
                       cwd=REPO, env=env, capture_output=True, text=True)
    out = w / "out"
    names = ["fileio"] + [f"obd-w{n}" for n in workers]
    results = {}
    for name in names:
        f = out / f"cu-{name}.txt"
        if not f.exists():
            raise RuntimeError(f"no results for {name} (guest exit {p.returncode}):\n{p.stderr[-3000:]}")
        results[name] = parse(f.read_text())
    if not keep:
        subprocess.run(["rm", "-rf", str(w)], check=False)
    return results, w


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="SCSI", help="iscsi-test-cu -t (FAMILY[.SUITE[.TEST]])")
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--json", action="store_true", help="last line: every result as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args(argv)
    workers = [int(x) for x in a.workers.split(",")]
    results, w = run(a.family, workers, a.keep)
    ref = results["fileio"]
    ok = True
    print(f"iscsi-test-cu --dataloss -t {a.family}, one UML boot" + (f" (kept: {w})" if a.keep else ""))
    print("| backstore | passed | failed | skipped |\n|---|---|---|---|")
    for name, r in results.items():
        c = counts(r)
        print(f"| {name} | {c['passed']} | {c['failed']} | {c['skipped']} |")
    for name, r in results.items():
        if name == "fileio":
            continue
        diff = sorted(t for t in set(ref) | set(r) if ref.get(t) != r.get(t))
        for t in diff:
            why = KNOWN.get(t, "")
            bad = ref.get(t) == "passed" and r.get(t) != "passed" and not why
            ok &= not bad
            print(f"  {name}: {t}: file backstore {ref.get(t, '-')}, here {r.get(t, '-')}"
                  + (f" (known: {why})" if why else "") + (" <- REGRESSION" if bad else ""))
    if a.json:
        print(json.dumps(results))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
