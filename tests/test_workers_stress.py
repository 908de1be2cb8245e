"""The stress harness itself runs and checks (a short run with kills and a stall)."""

from stress.engine_stress import main


def test_short_stress_run_with_kills_passes(capsys):
    rc = main(["--seconds", "1.5", "--size-mb", "8", "--max-io-kb", "256", "--chunk-kb", "64",
               "--depth", "16", "--kill-every", "0.3", "--stall-every", "1", "--heartbeat", "0.5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "OK: every command completed exactly once" in out and "supervisor" in out
