"""libiscsi's SCSI conformance suite (iscsi-test-cu --dataloss -t SCSI) over LIO's iSCSI fabric
in the UML 6.1 kernel, in one boot: the kernel's file backstore (emulate_tpu=1 emulate_tpws=1)
as the reference, then overlaybd-tcmu with workers 0 and 2 serving the golden lz4 lowers
under a fresh writable upper (bench/conformance_bench.py, bench/guest_conformance.sh).  Every test
that passes on the file backstore must pass here."""

import shutil

import pytest

from bench.conformance_bench import KNOWN, counts, run
from tests.helpers.uml import need_uml

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def results(say):
    need_uml()
    assert shutil.which("iscsi-test-cu"), "iscsi-test-cu missing: `make deps` installs libiscsi-bin"
    res, _ = run("SCSI", [0, 2], keep=False)
    for name, r in res.items():
        c = counts(r)
        say(f"[conformance] {name}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")
    return res


def test_the_suite_ran_against_every_backstore(results):
    for name in ("fileio", "obd-w0", "obd-w2"):
        assert len(results[name]) > 200, f"{name}: only {len(results[name])} results"
    assert counts(results["fileio"])["passed"] > 100


@pytest.mark.parametrize("name", ["obd-w0", "obd-w2"])
def test_everything_that_passes_on_the_file_backstore_passes_here(results, name):
    ref, here = results["fileio"], results[name]
    missing = sorted(t for t, v in ref.items() if v == "passed" and here.get(t) != "passed"
                     and t not in KNOWN)
    assert missing == [], f"{name}: pass on target_core_file, not here: {missing}"
    assert counts(here)["passed"] >= counts(ref)["passed"]


def test_parser_takes_cunits_verdict():
    from bench.conformance_bench import parse
    text = """Suite: A
  Test: One ...passed
  Test: Two ...    [SKIPPED] X is not implemented.
passed
  Test: Three ...    [FAILED] wrong sense
FAILED
    1. t.c:1  - CU_ASSERT_EQUAL(_r,0)
Suite: Reserve6
  Test: LUNReset ...passed    [FAILED] PRIN command: failed with sense. UNIT_ATTENTION

Run Summary:    Type  Total    Ran Passed Failed Inactive
"""
    assert parse(text) == {"A.One": "passed", "A.Two": "skipped", "A.Three": "failed",
                           "Reserve6.LUNReset": "passed"}
