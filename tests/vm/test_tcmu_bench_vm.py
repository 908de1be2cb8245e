"""Throughput of overlaybd-tcmu against the kernel's own file backstore, in UML.

Reads the golden image through overlaybd-tcmu (inline engine and 2 workers) and the same disk
exported to a plain file served by target_core_file, with dd and fio, in one guest boot.  The
test checks that every run completed on identical data; the numbers are printed (run with -s)
and written to <tmp>/bench-vm0/out/summary.txt.  No assertion on speed.
"""

import json

import pytest

from tests.conftest import GOLDEN
from tests.vm.uml import need_uml, run_in_uml

pytestmark = pytest.mark.vm


def _fio(path):
    job = json.loads(path.read_text())["jobs"][0]["read"]
    return job["bw_bytes"] / 2**20, job["iops"], job["clat_ns"]["mean"] / 1000


def _dd(path):
    last = path.read_text().strip().splitlines()[-1]      # "... copied, 1.2 s, 450 MB/s"
    return last.rsplit(",", 1)[-1].strip()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    need_uml()
    w = tmp_path_factory.mktemp("bench-vm")
    from overlaybd.tools.export import main as export
    assert export([str(GOLDEN / "config.v1.json"), str(w / "merged.img")]) in (0, None)
    (w / "golden.json").write_text(json.dumps(
        {"lowers": [{"file": str(GOLDEN / f"layer{i}.lsmt")} for i in (1, 2, 3)]}))
    for workers in (0, 2):
        (w / f"obd-{workers}.json").write_text(json.dumps({
            "logConfig": {"logPath": str(w / "out" / f"daemon-w{workers}.log"), "logLevel": 1},
            "workerConfig": {"workers": workers}, "enableAudit": False,
            "cacheConfig": {"cacheType": "file", "cacheDir": str(w / "cache")}}))
    p = run_in_uml(["bash", "tests/vm/guest_bench.sh", w], rw=[w], timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return w / "out"


def test_bench_reads_identical_data_and_reports(bench):
    ref = (bench / "fileio.sha").read_text()
    rows = []
    for name in ("fileio", "obd-w0", "obd-w2"):
        if name != "fileio":
            assert (bench / f"{name}.sha").read_text() == ref
        seq = _fio(bench / f"{name}-seq.json")
        rnd = _fio(bench / f"{name}-rand4k.json")
        assert seq[0] > 0 and rnd[1] > 0
        rows.append(f"{name:8} dd 512MiB bs=1M: {_dd(bench / f'{name}-dd.txt'):>12} | "
                    f"fio seq 1M qd8: {seq[0]:8.1f} MiB/s | "
                    f"fio randread 4k qd16: {rnd[1]:8.0f} IOPS, mean clat {rnd[2]:8.0f} us")
    summary = "\n".join(rows)
    (bench / "summary.txt").write_text(summary + "\n")
    print("\n" + summary)
