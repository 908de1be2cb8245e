"""The full-stack stress harness, short profile (~1 minute): two devices with writable upper
layers over remote lz4 layers, verifying readers and writers in the real kernel, every fault kind
injected once; 0 verify and 0 I/O errors, every fault recovered from, no leak, report + plot."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers.uml import REPO, need_uml

pytestmark = [pytest.mark.vm, pytest.mark.registry]


def test_short_stress_profile(tmp_path):
    need_uml()
    p = subprocess.run([sys.executable, "-m", "stress.fullstack", "run", "--profile", "short",
                        "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    rep = tmp_path / "out" / "stress-report.json"
    assert rep.exists(), p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads(rep.read_text())
    assert r["io"]["verify_errors"] == 0 and r["io"]["io_errors"] == 0, r["io_error_samples"]
    assert r["kernel_io_errors"] == 0
    assert r["io"]["reads"] > 100 and r["io"]["writes"] > 10
    assert set(r["faults_injected"]) == {"kill9", "sigstop", "registry_restart", "slow_registry",
                                         "corrupt_cache", "fill_cache_disk"}
    assert all(f["recovered"] for f in r["faults"]), r["faults"]
    assert r["failures"] == [] and p.returncode == 0, r["failures"]
    assert r["processes"]["supervisor"]["end"]["rss"] > 0
    png = (tmp_path / "out" / "stress-plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    # overlaybd-logstat on the run's own log and audit files
    out = subprocess.run([sys.executable, "-m", "overlaybd.tools.logstat", "--json",
                          str(tmp_path / "out" / "daemon.log"), str(tmp_path / "out" / "audit.log")],
                         capture_output=True, text=True, check=True).stdout
    stats = json.loads(out)
    assert stats["worker_restarts"]["count"] >= 1               # kill9 (and the stalled one)
    assert stats["levels"].get("INFO", 0) > 0
    fetched = stats["audit"].get("download", {})            # the remote layers' range fetches
    assert fetched.get("count", 0) > 0 and fetched["bytes"] > 0
    assert fetched["latency_us"]["max"] >= fetched["latency_us"]["p50"] > 0
