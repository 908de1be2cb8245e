"""SCSI conformance against the kernel's own file backstore: ``python -m bench conformance``.

One User-Mode-Linux boot (bench/guest_conformance.sh) exports three backstores over LIO's iSCSI
fabric on 127.0.0.1:3260 and runs libiscsi's ``iscsi-test-cu --dataloss --test SCSI`` against
each: target_core_file (``emulate_tpu=1 emulate_tpws=1``) and overlaybd-tcmu with workers 0 and
2 (the golden lz4 lowers plus a fresh writable upper).  Prints passed/failed/skipped per backstore
and every test whose result differs between the file backstore and the daemon.

Options: --keep DIR (work directory kept, raw suite output in DIR/out/cu-*.txt), --json,
--timeout SECS (the guest's limit, default 1500).
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
BACKSTORES = ("file", "w0", "w2")
LABELS = {"file": "kernel target_core_file, emulate_tpu=1 emulate_tpws=1",
          "w0": "overlaybd-tcmu, workers 0", "w2": "overlaybd-tcmu, workers 2"}

_TEST = re.compile(r"^\s*Test: (\S+) \.\.\.")


def parse(text):
    """{test name: 'passed' | 'failed' | 'skipped'} from iscsi-test-cu's normal/verbose output.

    Names are SUITE.TEST (the family, SCSI, left out, as the suite prints them).  CUnit prints
    ``Test: NAME ...`` then the test's own log and its verdict, ``passed`` or ``FAILED`` (a
    ``[FAILED]`` log line is not a verdict: teardown may print one after ``passed``); libiscsi
    reports a test it cannot run with a ``[SKIPPED]`` line and passes it, so a passed test whose
    log says ``[SKIPPED]`` counts as skipped."""
    results, suite, name, body = {}, "", None, []

    def close():
        if name is None:
            return
        chunk = "\n".join(body)
        verdicts = re.sub(r"\[(FAILED|SKIPPED)\]", "", chunk)   # the test's own log lines
        if re.search(r"\bFAILED\b", verdicts):
            results[name] = "failed"
        elif "[SKIPPED]" in chunk:
            results[name] = "skipped"
        elif re.search(r"\bpassed\b", verdicts):
            results[name] = "passed"
        else:                                   # the suite died inside it
            results[name] = "failed"

    for line in text.splitlines():
        m = _TEST.match(line)
        if m:
            close()
            name, body = f"{suite}.{m.group(1)}", [line[m.end():]]
        elif line.startswith(("Suite: ", "Run Summary")):
            close()
            suite, name, body = line.split(":", 1)[1].strip(), None, []
        elif name is not None:
            body.append(line)
    close()
    return results


def counts(results):
    return {k: sum(1 for v in results.values() if v == k) for k in ("passed", "failed", "skipped")}


def differences(reference, other):
    """Tests whose result differs: {name: (reference result, other result)}."""
    return {n: (reference.get(n, "absent"), other.get(n, "absent"))
            for n in sorted(set(reference) | set(other))
            if reference.get(n, "absent") != other.get(n, "absent")}


def prepare(w, stack="lz4"):
    """Service configs and the image (golden lowers; the guest adds the upper) in ``w``."""
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    for workers in (0, 2):
        (w / f"obd-{workers}.json").write_text(json.dumps({
            "logConfig": {"logPath": str(w / "out" / "daemon.log"), "logLevel": 1, "logSizeMB": 64},
            "workerConfig": {"workers": workers}, "enableAudit": False,
            "cacheConfig": {"cacheType": "file", "cacheDir": str(w / "cache")}}))
    (w / "image.json").write_text(json.dumps({
        "lowers": [{"file": str(GOLDEN / n)} for n in manifest["stacks"][stack]],
        "size": manifest["virtual_size"]}))


def run(w, timeout=1500, env=None):
    """Run the guest in ``w`` (prepared); returns ({backstore: results}, CompletedProcess)."""
    w = pathlib.Path(w)
    cmd = [str(REPO / "scripts/uml/run-in-uml.sh"), "-t", str(timeout), "-m", "2048",
           "--rw", str(w), "--", "bash", "bench/guest_conformance.sh", str(w)]
    p = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OBD_PYTHON=sys.executable, **(env or {})),
                       capture_output=True, text=True, timeout=timeout + 60, check=False)
    out = w / "out"
    results = {b: parse((out / f"cu-{b}.txt").read_text())
               for b in BACKSTORES if (out / f"cu-{b}.txt").exists()}
    return results, p


def report(results, out=None):
    out = out or sys.stdout          # looked up now: a test's capture may have replaced it
    print("| backstore | passed | failed | skipped |", file=out)
    print("|---|---|---|---|", file=out)
    for b, r in results.items():
        c = counts(r)
        print(f"| {LABELS[b]} | {c['passed']} | {c['failed']} | {c['skipped']} |", file=out)
    ref = results.get("file", {})
    for b in ("w0", "w2"):
        if b not in results:
            continue
        diff = differences(ref, results[b])
        print(f"\ndiffering between the file backstore and {LABELS[b]} ({len(diff)}):", file=out)
        for name, (a, d) in diff.items():
            print(f"  {name:50s} file: {a:8s} daemon: {d}", file=out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench conformance", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=pathlib.Path)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--timeout", type=int, default=1500)
    a = ap.parse_args(argv or [])
    with tempfile.TemporaryDirectory(prefix="obd-conformance-") as tmp:
        w = a.keep or pathlib.Path(tmp)
        w.mkdir(parents=True, exist_ok=True)
        prepare(w)
        results, p = run(w, a.timeout)
        if p.returncode != 0:
            print(f"guest failed ({p.returncode}):\n{p.stderr[-3000:]}", file=sys.stderr)
        if a.json:
            print(json.dumps(results, indent=1, sort_keys=True))
        else:
            report(results)
        return 0 if p.returncode == 0 and len(results) == len(BACKSTORES) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
