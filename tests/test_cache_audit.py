"""Audit lines (spec §10.2): format, rotation, switch-off; eviction marks (spec §7.1)."""

import datetime
import re

from overlaybd import audit
from overlaybd.cache import eviction

LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}\|AUDIT\|th=[0-9A-F]{16}\|")


def test_line_format_matches_upstream():
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, 6789)
    line = audit.format_line("download", [("pathname", "http://r/v2/a/blobs/sha256:ab"), ("offset", 4096),
                                          ("size", 262144), ("latency", 1234)], now, 0xABC)
    assert line == ("2026/01/02 03:04:05.006789|AUDIT|th=0000000000000ABC|download"
                    "[pathname=http://r/v2/a/blobs/sha256:ab][offset=4096][size=262144][latency=1234]\n")


def test_sink_writes_rotates_and_switches_off(tmp_path, monkeypatch):
    p = tmp_path / "a" / "audit.log"
    monkeypatch.setattr(audit, "ROTATE_BYTES", 2000)
    try:
        audit.configure(True, str(p))
        for i in range(100):
            audit.io_event("file:pread", "/x/overlaybd.commit", i, 4096, 0.011)
        files = sorted(x.name for x in p.parent.iterdir())
        assert files == ["audit.log", "audit.log.1", "audit.log.2"]      # 3 files at most
        for f in files:
            for ln in (p.parent / f).read_text().splitlines():
                assert LINE.match(ln) and ln.endswith("[size=4096][latency=11000]")
        last = p.read_text().splitlines()[-1]
        assert "[offset=99]" in last
        audit.configure(False, str(p))
        audit.event("eviction", ("actualEvict", 1))
        assert p.read_text().splitlines()[-1] == last
        audit.configure(True, "")                       # empty path: off as well
        assert not audit.enabled()
    finally:
        audit.configure(False, "")


def test_water_and_risk_marks():
    GiB = eviction.GiB
    assert eviction.marks(4 * GiB) == (0.9 * 4 * GiB, (0.9 * 4 * GiB + 4 * GiB) / 2)
    water, risk = eviction.marks(1000 * GiB)
    assert water == 950 * GiB and risk == 995 * GiB


def test_eviction_keeps_open_files_and_unlinks_closed_ones(tmp_path):
    d = tmp_path / "cache"
    d.mkdir()
    for name in ("a", "b", "c"):
        (d / name).write_bytes(b"x" * 200_000)
    store = eviction.CacheStore(str(d), capacity=300_000, interval=0)
    assert store.total >= 600_000 and list(store.used) == ["a", "b", "c"]
    store.acquire("a")                                   # open, and now most recently used
    store.touch("b")
    store.evict_pass()
    assert not (d / "c").exists()                        # LRU and closed: unlinked
    assert (d / "a").exists() and (d / "a").stat().st_size == 0   # next LRU, open: emptied, kept
    assert (d / "b").stat().st_size == 200_000           # most recently used: untouched
    assert store.total <= store.water
