"""The replayer on its own: order, pieces, merging, failures, layers it lacks, the gate."""

import os
import re
import threading
import time

import pytest

from overlaybd.cache import open_remote_layer
from overlaybd.cache.filecache import planned_reads
from overlaybd.io import BytesFile
from overlaybd.prefetch.replay import PriorityGate, Replayer
from overlaybd.prefetch.trace import Record
from tests.helpers.prefetch import wait_for
from tests.helpers.registry import service_config

MiB = 1 << 20


class Logged(BytesFile):
    def __init__(self, data, log, layer, fail_at=None):
        super().__init__(data)
        self.log, self.layer, self.fail_at = log, layer, fail_at

    def pread(self, n, off):
        if off == self.fail_at:
            raise OSError(5, "injected")
        self.log.append((self.layer, off, n))
        return super().pread(n, off)


def R(layer, off, n, op=b"R"):
    return Record(op, layer, n, off)


def test_runs_merged_per_layer_in_first_need_order_and_cut():
    log = []
    layers = {0: Logged(bytes(16 * MiB), log, 0), 1: Logged(bytes(16 * MiB), log, 1)}
    recs = [R(0, 4096, 4096), R(1, 0, 512),                            # two runs begin
            R(0, 9 * MiB, 4096),                                        # a third, far away
            R(0, 0, 4096),                                              # joins the first run
            R(0, MiB, 2 * MiB + 512),                                   # too far: its own run
            R(0, 4096, 8192),                                           # inside the first run
            R(5, 0, 4096), R(0, 0, 4096, op=b"W"),                      # no layer 5; a write
            R(1, 512 + (128 << 10), 512),                               # gap of 128 KiB: joins
            R(1, 7 * MiB, 512)]                                         # a bigger gap: not
    rp = Replayer(recs, layers, concurrency=1)
    rp.start().join(10)
    assert log == [(0, 0, 12288),                                       # first needed first
                   (1, 0, 1024 + (128 << 10)),
                   (0, 9 * MiB, 4096),
                   (0, MiB, MiB), (0, 2 * MiB, MiB), (0, 3 * MiB, 512), # cut at 1 MiB
                   (1, 7 * MiB, 512)]
    assert (rp.done, rp.failed, rp.skipped, rp.total) == (7, 0, 2, 7)


def test_a_run_is_fetched_whole_by_its_first_piece():
    rp = Replayer([R(0, 0, 3 * MiB)], {0: BytesFile(bytes(4 * MiB))})
    assert [s for *_, s in rp._queue] == [3 * MiB * 33 // 32, 2 * MiB * 33 // 32, MiB * 33 // 32]


def test_failures_and_short_reads_are_skipped():
    log = []
    layers = {0: Logged(bytes(4 * MiB), log, 0, fail_at=2 * MiB)}
    rp = Replayer([R(0, 2 * MiB, 512), R(0, 8 * MiB, 4096), R(0, 0, 512)], layers, concurrency=1)
    rp.start().join(10)
    assert (rp.done, rp.failed) == (1, 2) and log == [(0, 8 * MiB, 4096), (0, 0, 512)]


def test_readers_wait_while_the_gate_is_shut_and_stop_ends_them():
    log = []
    gate = PriorityGate()
    gate.busy()
    rp = Replayer([R(0, k << 18, 4096) for k in range(32)], {0: Logged(bytes(8 * MiB), log, 0)},
                  concurrency=4, gate=gate)
    rp.start()
    assert wait_for(lambda: gate.waits >= 1, timeout=10)
    time.sleep(0.1)                               # a reader past a shut gate would show here
    assert log == []
    gate.idle()
    assert rp.join(10) and rp.done == 32
    gate.busy()
    stopper = Replayer([R(0, 0, 512)], {0: Logged(bytes(MiB), log, 0)}, gate=gate)
    stopper.start()
    threading.Timer(0.2, stopper.stop).start()
    assert stopper.join(5) and stopper.done == 0


@pytest.mark.registry
def test_planned_reads_fetch_the_span_once_and_nothing_ahead(registry_none, tmp_path):
    """A replay piece's reads: one request for the planned span (where a ZFile's 64 KiB reads
    would go out one refill unit at a time), and no sequential readahead behind it."""
    data = os.urandom(40 * MiB)
    url = registry_none.push(data, repo="plan/r")
    svc = service_config(tmp_path)
    f = open_remote_layer(url, {"digest": url.rsplit("/", 1)[1], "size": len(data)}, svc)
    try:
        base = 8 * MiB + 4096
        with planned_reads(2 * MiB):
            for off in range(base, base + 2 * MiB - 4096, 64 << 10):
                assert f.pread(64 << 10, off) == data[off:off + (64 << 10)]
        time.sleep(0.3)
    finally:
        f.close()
    got = [(int(o), int(n)) for o, n in re.findall(r"\|download\[pathname=[^]]*\]\[offset=(\d+)\]"
                                                    r"\[size=(\d+)\]",
                                                    (tmp_path / "audit.log").read_text())]
    assert got == [(8 * MiB, 2 * MiB + (256 << 10))]       # [base, base + 2 MiB) rounded out


def test_a_trace_of_another_image_warns_a_few_times_only():
    from loguru import logger
    seen = []
    hid = logger.add(lambda m: seen.append(m.record["level"].name), level="DEBUG",
                     filter=lambda r: "failed" in r["message"] and "read of layer" in r["message"])
    try:
        rp = Replayer([R(0, (k + 10) * MiB, 4096) for k in range(0, 40, 2)],
                      {0: BytesFile(bytes(MiB))}, concurrency=1)
        rp.start().join(10)
    finally:
        logger.remove(hid)
    assert rp.failed == 20 and seen.count("WARNING") == 5 and seen.count("DEBUG") == 15
