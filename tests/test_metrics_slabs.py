"""Counter slabs in shared memory (overlaybd.shm.slabs) and the metrics hooks over them
(overlaybd.metrics): forked processes, the shared key directory, threads, windows."""

import json
import os
import threading

import pytest

from overlaybd import metrics
from overlaybd.metrics.exporter import Windows
from overlaybd.process import WorkerContext, set_current
from overlaybd.shm.slabs import SlabTable, TableFull


@pytest.fixture
def counting():
    t = metrics.enable(4, capacity=64)
    yield t
    metrics.disable()
    set_current(None)


def _in_child(fn):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_keys_added_by_several_processes_are_one_directory():
    t = SlabTable(3, capacity=8, width=4, key_size=16)
    try:
        a = t.group("alpha")
        _in_child(lambda: (t.group("beta"), t.group("alpha"), t.slab(1).__setitem__(0, 7)))
        _in_child(lambda: t.slab(2).__setitem__(t.group("beta") * 4 + 3, 5))
        assert t.keys() == ["alpha", "beta"] and a == 0
        assert t.group("beta") == 1                          # learned from the shared directory
        arr = t.array()
        assert arr.shape == (3, 2, 4)
        assert arr[1, 0, 0] == 7 and arr[2, 1, 3] == 5 and int(arr.sum()) == 12
        del arr
        with pytest.raises(TableFull):
            t.group("x" * 17)
        for k in range(6):
            t.group(f"k{k}")
        with pytest.raises(TableFull):
            t.group("one too many")
    finally:
        t.close()


def test_workers_count_into_their_own_slab_and_totals_sum_them(counting):
    m = metrics.layer("/img.json", "sha256:1")
    m.cache_read(100, 7, hit=True)

    def worker(i):
        set_current(WorkerContext(i, 3, 1 << 20))
        m.cache_read(10 * (i + 1), 50 + i, hit=False)
        metrics.registry_error("timeout")

    for i in range(3):
        _in_child(lambda i=i: worker(i))
    _in_child(lambda: m.cache_read(1 << 30, 1, True))       # a fork that is no worker: not counted
    tot = metrics.totals()
    layer = tot[metrics.key(metrics.LAYER, "/img.json", "sha256:1")]
    assert layer[metrics.L_READS] == 4 and layer[metrics.L_BYTES] == 100 + 10 + 20 + 30
    assert layer[metrics.L_HIT_READS] == 1 and layer[metrics.L_HIT_BYTES] == 100
    assert layer[metrics.L_MAX_US] == 52                    # max over the slabs, not their sum
    assert metrics.pread_totals(tot) == (4, 160)
    errors = tot[metrics.key(metrics.ERRORS)]
    assert errors[metrics.ERROR_KINDS.index("timeout")] == 3
    per_slab = counting.array().sum(axis=(1, 2)).tolist()
    assert all(n > 0 for n in per_slab)


def test_threads_of_one_process_lose_no_update(counting):
    m = metrics.layer("/t.json", "sha256:2")
    n, threads = 20000, 8

    def run():
        for _ in range(n):
            m.registry_read("download", 3, 0.001)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    tot = metrics.totals()
    layer = tot[metrics.key(metrics.LAYER, "/t.json", "sha256:2")]
    assert layer[metrics.L_REG_READS] == n * threads and layer[metrics.L_REG_BYTES] == 3 * n * threads
    hist = tot[metrics.key(metrics.REGISTRY, "download")]
    assert hist[metrics.R_COUNT] == n * threads and hist[0] == n * threads   # 1 ms: le="0.001"


def test_threads_lose_no_cache_read(counting):
    m = metrics.layer("/t.json", "sha256:3")
    n, threads = 20000, 8

    def run(k):
        for i in range(n):
            m.cache_read(7, k * n + i, i % 2 == 0)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    row = metrics.totals()[metrics.key(metrics.LAYER, "/t.json", "sha256:3")]
    assert row[metrics.L_READS] == n * threads and row[metrics.L_BYTES] == 7 * n * threads
    assert row[metrics.L_HIT_READS] == n * threads // 2
    assert row[metrics.L_MAX_US] >= (threads - 1) * n         # the last thread's values are largest


def test_windows_give_rates_and_the_window_max(counting, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("overlaybd.metrics.exporter.time.monotonic", lambda: clock[0])
    w = Windows(10)
    w.tick()
    m = metrics.layer("/w.json", "l")
    for us in (100, 900, 300):
        m.cache_read(4096, us, True)
    m.registry_read("download", 1000, 0.25)
    clock[0] += 2.0
    w.tick()
    assert w.values["pread"] == {"qps": 1.5, "throughput": 3 * 4096 / 2, "max_latency_us": 900}
    assert w.values["download"] == {"qps": 0.5, "throughput": 500.0, "max_latency_us": 250000}
    clock[0] += 2.0
    w.tick()                                  # nothing in the last window
    assert w.values["pread"] == {"qps": 0.0, "throughput": 0.0, "max_latency_us": 0}


def test_off_means_no_table_and_no_meter():
    metrics.disable()
    assert metrics.layer("/x", "y") is None and metrics.totals() == {}
    metrics.registry_error("auth")            # no-ops
    metrics.prefetch_progress("/x", 1, 2)


def test_prefetch_progress_is_the_latest_absolute_value(counting):
    metrics.prefetch_progress("/p.json", 3, 10, 3 << 20, 0)
    metrics.prefetch_progress("/p.json", 7, 10, 7 << 20, 1)
    row = metrics.totals()[json.dumps(["prefetch", "/p.json"], separators=(",", ":"))]
    assert row[:4] == [7, 10, 7 << 20, 1]
