"""overlaybd-logstat, the installed console script: a hand-checked sample in upstream's formats
(tests/data/logstat) and the real files of a registry-backed run of the daemon."""

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from overlaybd import __version__
from overlaybd.logstat.parse import normalize, parse_line, rotated_set
from tests.helpers.env import DATA
from tests.helpers.metrics import audit_records

TOOL = os.path.join(os.path.dirname(sys.executable), "overlaybd-logstat")
SAMPLE = DATA / "logstat"
A = "https://registry.example.com/v2/lib/app/blobs/sha256:" + "a" * 64
B = "https://registry.example.com/v2/lib/app/blobs/sha256:" + "b" * 64
COMMIT = "/var/lib/overlaybd/snap/2/block/overlaybd.commit"


def logstat(*args, check=True):
    r = subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def as_json(*args):
    return json.loads(logstat("--json", *args).stdout)


def upstream(*extra):
    return as_json(SAMPLE / "overlaybd.log", SAMPLE / "overlaybd-audit.log", *extra)


def test_upstream_sample_by_hand():
    s = upstream()
    # log: overlaybd.log.1 (4 lines) then overlaybd.log (6 lines + 1 continuation)
    assert s["lines"]["lines"] == 4 + 7 + 11 and s["lines"]["continuation"] == 1
    assert s["levels"] == {"INFO": 4, "ERROR": 3, "WARN": 2, "DEBUG": 1}
    # download: 262144 x 4 + 4096; latencies 1000 2000 3000 4000 50000 -> nearest rank
    assert s["audit"]["download"] == {"count": 5, "bytes": 4 * 262144 + 4096, "latency_us": {
        "p50": 3000, "p90": 50000, "p99": 50000, "max": 50000, "mean": 12000.0}}
    assert s["audit"]["bk_download"] == {"count": 3, "bytes": 3 << 20, "latency_us": {
        "p50": 200, "p90": 300, "p99": 300, "max": 300, "mean": 200.0}}
    assert s["audit"]["file:pread"]["count"] == 2 and s["audit"]["file:pread"]["bytes"] == 8192
    assert s["audit"]["file:pread"]["latency_us"]["p50"] == 12000
    assert s["audit"]["eviction"]["count"] == 1 and s["audit"]["eviction"]["bytes"] == 0
    assert s["evictions"] == {"passes": 1, "bytes": 1 << 30, "ranges": 0, "range_bytes": 0}
    # per blob: A has 3 downloads (528384 bytes), B 2 downloads + 3 chunks
    assert s["blobs"][A]["audit"]["download"]["bytes"] == 2 * 262144 + 4096
    assert s["blobs"][B]["audit"]["download"]["count"] == 2
    assert s["blobs"][B]["audit"]["bk_download"]["bytes"] == 3 << 20
    assert s["blobs"][COMMIT]["audit"]["file:pread"]["latency_us"]["max"] == 15000
    # upstream's registryfs lines: code=401 -> auth, "timed out" -> timeout
    assert s["registry_errors"] == {"auth": 1, "timeout": 1}
    assert s["background_downloads"] == {"chunks": 3, "bytes": 3 << 20, "started": 1,
                                         "completed": 1, "failed": 1}
    assert s["worker_restarts"]["count"] == 0
    groups = {(g["level"], g["message"]): g["count"] for g in s["messages"]}
    assert groups[("ERROR", "failed to read block <n> at offset <n>")] == 2
    assert len(groups) == 4 and sum(groups.values()) == 5
    assert [r["latency_us"] for r in s["slowest"][:3]] == [50000, 15000, 12000]
    assert s["slowest"][0]["pathname"] == A and s["slowest"][0]["offset"] == 524288
    assert s["range"] == {"first": "2023/09/08 21:09:10.000000", "last": "2023/09/08 21:11:00.000000"}


def test_upstream_sample_since_and_until():
    s = upstream("--since", "2023/09/08 21:10:00")
    assert s["levels"] == {"INFO": 2, "WARN": 1, "DEBUG": 1}
    assert set(s["audit"]) == {"bk_download", "file:pread", "eviction"}
    u = upstream("--until", "2023-09-08T21:09:14")           # before 21:09:14
    assert u["levels"] == {"INFO": 2, "ERROR": 1}
    assert set(u["audit"]) == {"download"} and u["audit"]["download"]["count"] == 5
    assert u["registry_errors"] == {"auth": 1}


def test_text_output_and_errors():
    r = logstat(SAMPLE / "overlaybd.log", SAMPLE / "overlaybd-audit.log")
    assert "download            5 reads" in r.stdout
    assert "failed to read block <n> at offset <n>" in r.stdout
    assert logstat("--help").stdout.startswith("usage: overlaybd-logstat")
    assert logstat("--version").stdout.strip() == f"overlaybd-logstat {__version__}"
    bad = logstat(SAMPLE / "nope.log", check=False)
    assert bad.returncode == 1 and "nope.log" in bad.stderr
    bad = logstat("--since", "yesterday-ish", SAMPLE / "overlaybd.log", check=False)
    assert bad.returncode == 2 and "not a time" in bad.stderr


def test_parsing_details(tmp_path):
    rec = parse_line("2023/09/08 21:09:14|ERROR|th=00007F636C77D280|/src/src/overlaybd/zfile/"
                     "zfile.cpp:355|get_current_block:checksum failed: a:b")
    assert (rec.level, rec.source, rec.function, rec.message) == (
        "ERROR", "/src/src/overlaybd/zfile/zfile.cpp:355", "get_current_block", "checksum failed: a:b")
    assert rec.time.microsecond == 0
    assert normalize(f"read {A} at 4096 from /x/y.json took 1.5s, id 0x7f") == \
        "read <url> at <n> from <path> took <n>s, id <hex>"
    for name in ("f", "f.1", "f.2", "f.10", "f.3.gz", "other"):
        (tmp_path / name).write_text("")
    assert [os.path.basename(p) for p in rotated_set(str(tmp_path / "f"))] == \
        ["f.10", "f.3.gz", "f.2", "f.1", "f"]


@pytest.mark.registry
def test_real_run_logs(served_run):
    run = served_run
    s = as_json(run.log, run.audit)
    want = Counter()
    nbytes = Counter()
    for event, f in audit_records(run.audit):
        want[event] += 1
        nbytes[event] += int(f.get("size", 0))
    assert {ev: (v["count"], v["bytes"]) for ev, v in s["audit"].items()} == \
        {ev: (want[ev], nbytes[ev]) for ev in want}
    assert s["worker_restarts"] == {"count": 1, "by_worker": {"1": 1}, "by_reason": {"exited": 1}}
    assert s["levels"]["WARN"] == 1 and "ERROR" not in s["levels"]
    blobs = [f"{run.base}/{lo['digest']}" for lo in run.lowers]
    dev = s["devices"]["obd0"]
    assert dev["config"] == run.config and dev["uio"] == "0" and dev["blobs"] == blobs
    assert dev["audit"]["download"]["count"] == want["download"]
    assert s["background_downloads"]["completed"] == 3
    assert s["background_downloads"]["chunks"] == want["bk_download"]
    assert s["registry_errors"] == {}
    only = as_json(run.log, run.audit, "--device", "obd0")
    assert only["audit"] == s["audit"] and list(only["devices"]) == ["obd0"]
    assert only["worker_restarts"]["count"] == 0          # that line names no device
    none = as_json(run.log, run.audit, "--since", "1m", "--until", "2000/01/01")
    assert none["lines"]["records"] == 0 and none["audit"] == {}
    missing = logstat(run.log, "--device", "obd9", check=False)
    assert missing.returncode == 2 and "obd0" in missing.stderr
