"""The pool's sense of time: a ticker thread, so that the busy loop reads no clock (a system
call where there is no vDSO clock, as in the UML guests)."""

import time

import pytest

from overlaybd.ticker import Ticker
from overlaybd.workers import OP_READ, ST_GOOD
from tests.helpers.workers import EngineHarness


def test_ticker_counts_intervals_and_stops():
    t = Ticker(0.01)
    t.start()
    deadline = time.monotonic() + 10
    while t.count < 3:
        assert time.monotonic() < deadline, "the ticker does not tick"
        time.sleep(0.01)
    t.stop()
    stopped = t.count
    time.sleep(0.05)
    assert t.count == stopped
    with pytest.raises(ValueError):
        Ticker(0)


class _CountingClock:
    """Stands in for the ``time`` module inside one module: counts its clock reads (other
    threads of the test process, left from other tests, do not count)."""

    def __init__(self, calls):
        self._calls = calls

    def monotonic(self):
        self._calls.append(1)
        return time.monotonic()

    def monotonic_ns(self):
        self._calls.append(1)
        return time.monotonic_ns()

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.mark.parametrize("workers", [1, 2])
def test_commands_one_at_a_time_read_no_clock(tmp_path, monkeypatch, workers):
    """200 commands, each submitted after the previous one completed (every engine poll a
    supervising "look"), read the clock at most once per tick in the pool and the heartbeat
    code; before the ticker, the pool read it twice per look (delayed restarts, heartbeat
    ages): ~4 a command."""
    from overlaybd.shm import heartbeat
    from overlaybd.workers import pool
    h = EngineHarness(tmp_path, workers, heartbeat_sec=60.0)     # ticks every 15 s
    calls = []
    real = time.monotonic
    try:
        h.submit(0, OP_READ, 0, 4096, 0)
        h.wait_for([0])
        monkeypatch.setattr(pool, "time", _CountingClock(calls))
        monkeypatch.setattr(heartbeat, "time", _CountingClock(calls))
        t0 = real()
        for i in range(1, 201):
            h.submit(i, OP_READ, i * 4096, 4096, i * 4096)
            while i not in h.completions:
                assert real() - t0 < 60, f"command {i} did not complete"
                h.engine.wait(0.05)
        monkeypatch.undo()
        assert all(h.completions[i] == [ST_GOOD] for i in range(201))
        assert all(h.data(i * 4096, 4096) == h.src[i * 4096:(i + 1) * 4096] for i in range(1, 201))
        assert len(calls) <= 2 * (1 + int((real() - t0) / 15)), len(calls)
    finally:
        monkeypatch.undo()
        h.close()


def test_an_untimed_wait_still_replaces_a_stalled_worker(tmp_path):
    """The daemon sleeps without a timeout (a timed wait reads the clock); the pool's ticker
    makes its fd readable once a tick, so a worker that stops (SIGSTOP) is still found stalled
    and replaced, and its command completes with the right bytes."""
    import os
    import signal
    import threading
    h = EngineHarness(tmp_path, 1, heartbeat_sec=0.4)
    stuck = []
    try:
        h.submit(0, OP_READ, 0, 4096, 0)
        h.wait_for([0])
        os.kill(h.engine.worker_pids()[0], signal.SIGSTOP)
        h.submit(1, OP_READ, 8192, 4096, 4096)
        # without the ticker's wake-up this would sleep forever: give up after 30 s
        timer = threading.Timer(30, lambda: (stuck.append(1), h.engine.pool.signal()))
        timer.start()
        while 1 not in h.completions and not stuck:
            h.engine.wait(None)
        timer.cancel()
        assert not stuck, "an untimed wait never noticed the stalled worker"
        assert h.completions[1] == [ST_GOOD] and h.engine.restarts == 1
        assert h.data(4096, 4096) == h.src[8192:12288]
    finally:
        h.close()
