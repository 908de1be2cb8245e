"""libiscsi's SCSI conformance suite (``iscsi-test-cu --dataloss --test SCSI``) over LIO's iSCSI
fabric, in one UML boot, against the kernel's target_core_file (``emulate_tpu=1
emulate_tpws=1``, the reference) and the installed overlaybd-tcmu with workers 0 and 2 (golden
lz4 lowers plus a fresh writable upper): bench/conformance.py runs and parses it.

A test that passes on the file backstore must pass on the daemon too, except the entries of
KNOWN_DIFFERENCES, each with its reason.  An entry that no longer differs fails the test as
well, so the list only ever shrinks to the truth."""

import pytest
from uml import need_uml

from bench import conformance

pytestmark = pytest.mark.vm


def _unsupported(command, *names):
    return {n: f"{command} is answered as an unsupported opcode (the suite skips the test)"
            for n in names}


# test name (SUITE.TEST as iscsi-test-cu prints it) -> why the daemon does not pass it yet.
# Measured 2026-12-04 (NOTES-iscsi.md); overlaybd/tcmu/scsi.py is being completed in parallel.
KNOWN_DIFFERENCES = {
    "Inquiry.BlockLimits": "the Block Limits page has SBC-3's length (>= 60) but the standard "
                           "INQUIRY claims no SBC-3 version descriptor",
    **_unsupported("COMPARE AND WRITE", "CompareAndWrite.Unwritten"),
    **_unsupported("EXTENDED COPY", "ExtendedCopy.DescrLimits", "ExtendedCopy.DescrType",
                   "ExtendedCopy.ParamHdr"),
    **_unsupported("RECEIVE COPY RESULTS", "ReceiveCopyResults.OpParams"),
    **_unsupported("VERIFY(10/16)", *(f"Verify{n}.{t}" for n in (10, 16) for t in
                                      ("BeyondEol", "Flags", "MismatchNoCmp", "Simple",
                                       "ZeroBlocks"))),
    **_unsupported("WRITE SAME(10/16)", *(f"WriteSame{n}.{t}" for n in (10, 16) for t in
                                          ("BeyondEol", "Check", "Simple", "Unmap",
                                           "WriteProtect"))),
    **_unsupported("WRITE AND VERIFY(10/16)", *(f"WriteVerify{n}.{t}" for n in (10, 16) for t in
                                                ("BeyondEol", "Flags", "Simple", "WriteProtect",
                                                 "ZeroBlocks"))),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory, installed):
    need_uml()
    w = tmp_path_factory.mktemp("vm-conformance")
    conformance.prepare(w)
    got, p = conformance.run(w, timeout=1500,
                             env={"OBD_TCMU": str(installed.bin / "overlaybd-tcmu")})
    if p.returncode != 0:
        pytest.fail(f"guest failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return got


def test_suite_ran_on_every_backstore(results, capsys):
    assert set(results) == set(conformance.BACKSTORES)
    names = set(results["file"])
    assert len(names) > 200                       # the whole SCSI family, not a crashed run
    for b in ("w0", "w2"):
        assert set(results[b]) == names
    with capsys.disabled():
        print()
        conformance.report(results)


@pytest.mark.parametrize("backstore", ["w0", "w2"])
def test_daemon_passes_what_the_file_backstore_passes(results, backstore):
    ref, got = results["file"], results[backstore]
    regressed = {n: got[n] for n, r in ref.items() if r == "passed" and got.get(n) != "passed"}
    unexplained = {n: v for n, v in regressed.items() if n not in KNOWN_DIFFERENCES}
    assert not unexplained, f"pass on target_core_file, not on the daemon: {unexplained}"
    stale = sorted(set(KNOWN_DIFFERENCES) - set(regressed))
    assert not stale, f"no longer differ, remove from KNOWN_DIFFERENCES: {stale}"


def test_workers_do_not_change_the_answers(results):
    diff = conformance.differences(results["w0"], results["w2"])
    assert not diff, f"workers 0 and 2 differ: {diff}"


def test_parser_reads_cunit_verdicts():
    text = """Suite: A
  Test: One ...passed
  Test: Two ...    [SKIPPED] X is not implemented.
passed
  Test: Three ...    [FAILED] wrong sense
FAILED
    1. t.c:1  - CU_ASSERT_EQUAL(_r,0)
Suite: B
  Test: One ...passed    [FAILED] teardown noise after the verdict

Run Summary:    Type  Total    Ran Passed Failed Inactive
"""
    assert conformance.parse(text) == {"A.One": "passed", "A.Two": "skipped",
                                       "A.Three": "failed", "B.One": "passed"}
