"""Supervision: a worker killed or stalled with parts in flight is replaced and its parts are
re-executed; every command completes exactly once, GOOD, with the right bytes."""

import os
import random
import signal

import psutil
from workers_fixtures import Harness

from overlaybd.workers import OP_READ, OP_WRITE, ST_GOOD

CHUNK = 64 * 1024


def _busiest(h):
    slots = h.engine.pool.slots
    return max(slots, key=lambda s: len(s.inflight) + len(s.backlog))


def _submit_round(h, rnd, first_id, count, size):
    cases = []
    for i in range(count):
        off = rnd.randrange(0, (len(h.src) - size) // 512) * 512   # often spans two chunks
        moff = i * (size + 4096)
        h.submit(first_id + i, OP_READ, off, size, moff, rnd.choice([4096, 16384, size]))
        cases.append((first_id + i, off, moff))
    return cases


def _check(h, cases, size):
    for cmd_id, off, moff in cases:
        assert h.completions[cmd_id] == [ST_GOOD], f"command {cmd_id}: {h.completions[cmd_id]}"
        assert h.data(moff, size) == h.src[off:off + size], f"command {cmd_id}: wrong bytes"


def test_sigkill_with_reads_in_flight_repeatedly(tmp_path):
    rnd = random.Random(42)
    h = Harness(tmp_path, 2, chunk_size=CHUNK, delay=0.0005, heartbeat_sec=30)
    size = 96 * 1024
    try:
        for round_ in range(6):
            h.completions.clear()
            cases = _submit_round(h, rnd, round_ * 1000, 100, size)
            while len(h.completions) < 5:
                h.engine.wait(0.01)
            victim = _busiest(h)
            assert victim.inflight, "the victim must have parts in flight"
            pid = victim.proc.pid
            os.kill(pid, signal.SIGKILL)
            h.wait_for([c[0] for c in cases])
            assert not psutil.pid_exists(pid), "the dead worker was not reaped"
            assert h.engine.restarts == round_ + 1
            assert len(h.completions) == len(cases)          # nothing extra, nothing missing
            _check(h, cases, size)
    finally:
        h.close()


def test_sigkill_with_writes_in_flight(tmp_path):
    rnd = random.Random(7)
    h = Harness(tmp_path, 2, chunk_size=CHUNK, writable=True, heartbeat_sec=30)
    try:
        expect = bytearray(h.src)
        for i in range(120):
            n = 32 * 1024
            off = i * n * 2                                      # disjoint ranges
            buf = rnd.randbytes(n)
            h.mm[i * n:(i + 1) * n] = buf
            expect[off:off + n] = buf
            h.submit(i, OP_WRITE, off, n, i * n, 8192)
            if i == 60:
                victim = _busiest(h)
                os.kill(victim.proc.pid, signal.SIGKILL)
        h.wait_for(range(120))
        assert all(s == [ST_GOOD] for s in h.completions.values())
        assert h.engine.restarts == 1
    finally:
        assert h.close() == [0, 0]
    assert h.path.read_bytes() == bytes(expect)


def test_stalled_worker_is_detected_by_heartbeat_and_replaced(tmp_path):
    rnd = random.Random(3)
    h = Harness(tmp_path, 2, chunk_size=CHUNK, delay=0.002, heartbeat_sec=0.5)
    size = 64 * 1024
    stopped = None
    try:
        cases = _submit_round(h, rnd, 0, 80, size)
        while len(h.completions) < 3:
            h.engine.wait(0.01)
        victim = _busiest(h)
        assert victim.inflight
        stopped = victim.proc.pid
        os.kill(stopped, signal.SIGSTOP)
        h.wait_for([c[0] for c in cases], timeout=30)
        assert h.engine.restarts == 1
        assert stopped not in h.engine.worker_pids()
        assert not psutil.pid_exists(stopped), "the stalled worker was not killed and reaped"
        stopped = None
        _check(h, cases, size)
    finally:
        if stopped is not None and psutil.pid_exists(stopped):
            os.kill(stopped, signal.SIGKILL)
        h.close()
