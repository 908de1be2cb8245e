"""Supervision: a worker killed or stalled with parts in flight is replaced and its parts are
re-executed; every command completes exactly once, GOOD, with the right bytes."""

import os
import random
import signal
import time

import psutil

from overlaybd.workers import OP_READ, OP_WRITE, ST_GOOD
from tests.helpers.workers import EngineHarness

CHUNK = 64 * 1024


def _busiest(h):
    slots = h.engine.pool.slots
    return max(slots, key=lambda s: s.outstanding)


def _submit_round(h, rnd, first_id, count, size):
    cases = []
    for i in range(count):
        off = rnd.randrange(0, (len(h.src) - size) // 512) * 512   # often spans two chunks
        moff = i * (size + 4096)
        h.submit(first_id + i, OP_READ, off, size, moff, rnd.choice([4096, 16384, size]))
        cases.append((first_id + i, off, moff))
    return cases


def _round_with_a_busy_victim(h, rnd, size):
    """Submit 80 reads, let a few complete; (cases, the worker slot with most parts in flight)."""
    cases = _submit_round(h, rnd, 0, 80, size)
    while len(h.completions) < 3:
        h.engine.wait(0.01)
    victim = _busiest(h)
    assert victim.in_flight(), "the victim must have parts in flight"
    return cases, victim


def _check(h, cases, size):
    for cmd_id, off, moff in cases:
        assert h.completions[cmd_id] == [ST_GOOD], f"command {cmd_id}: {h.completions[cmd_id]}"
        assert h.data(moff, size) == h.src[off:off + size], f"command {cmd_id}: wrong bytes"


def test_sigkill_with_reads_in_flight_repeatedly(tmp_path):
    rnd = random.Random(42)
    h = EngineHarness(tmp_path, 2, chunk_size=CHUNK, delay=0.002, heartbeat_sec=30)
    size = 96 * 1024
    try:
        for round_ in range(6):
            h.completions.clear()
            cases = _submit_round(h, rnd, round_ * 1000, 100, size)
            while len(h.completions) < 5:
                h.engine.wait(0.01)
            victim = _busiest(h)
            assert victim.in_flight(), "the victim must have parts in flight"
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
    h = EngineHarness(tmp_path, 2, chunk_size=CHUNK, writable=True, heartbeat_sec=30)
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
    h = EngineHarness(tmp_path, 2, chunk_size=CHUNK, delay=0.002, heartbeat_sec=2.0)
    size = 64 * 1024
    stopped = None
    try:
        cases, victim = _round_with_a_busy_victim(h, rnd, size)
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


def _supervisor(path, map_fd, report_w):
    from overlaybd.workers import Engine
    from overlaybd.workers.rawfile import RawFileOpener
    e = Engine(workers=2, heartbeat_sec=0.4)
    e.start()
    e.add_device(1, RawFileOpener(path), map_fd, 1 << 20)
    os.write(report_w, " ".join(map(str, e.worker_pids())).encode())
    signal.pause()


def _running(pid):
    """Alive and not a zombie (an orphan's zombie may wait for a lazy init to reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_workers_exit_and_nothing_is_left_when_the_supervisor_is_killed(tmp_path):
    import multiprocess

    from tests.helpers.workers import shm_names_of
    img = tmp_path / "img"
    img.write_bytes(bytes(1 << 20))
    map_fd = os.memfd_create("area")
    os.ftruncate(map_fd, 1 << 20)
    r, w = os.pipe()
    sup = multiprocess.get_context("fork").Process(target=_supervisor, args=(str(img), map_fd, w))
    sup.start()
    pids = [int(x) for x in os.read(r, 100).split()]
    assert len(pids) == 2
    os.kill(sup.pid, signal.SIGKILL)
    sup.join()
    deadline = time.monotonic() + 10
    for pid in pids:                       # orphans notice within a heartbeat interval
        while _running(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"worker {pid} outlived its supervisor")
            time.sleep(0.05)
    assert shm_names_of(sup.pid) == []
    for fd in (r, w, map_fd):
        os.close(fd)


def test_a_part_that_keeps_killing_workers_fails_alone(tmp_path):
    from overlaybd.workers import ST_READ_ERR
    from overlaybd.workers.pool import MAX_DEATHS
    from tests.helpers.workers import PoisonOpener
    h = EngineHarness(tmp_path, 2, chunk_size=CHUNK, heartbeat_sec=30)
    h.engine.remove_device(7)
    poison = 5 * CHUNK
    h.engine.add_device(7, PoisonOpener(h.path, poison), h.map_fd, h.map_size)
    try:
        for i in range(20):
            h.submit(i, OP_READ, i * CHUNK // 2, 4096, i * 4096)
        h.wait_for(range(20))
        for i in range(20):
            off = i * CHUNK // 2
            if off == poison:
                assert h.completions[i] == [ST_READ_ERR]
            else:
                assert h.completions[i] == [ST_GOOD]
                assert h.data(i * 4096, 4096) == h.src[off:off + 4096]
        assert h.engine.restarts == MAX_DEATHS
    finally:
        h.close()


def test_crash_looping_worker_is_restarted_with_backoff_and_recovers(tmp_path):
    from tests.helpers.workers import CrashingOpener
    h = EngineHarness(tmp_path, 1, heartbeat_sec=30)
    try:
        fd = os.memfd_create("bad")
        os.ftruncate(fd, 4096)
        h.engine.add_device(99, CrashingOpener(), fd, 4096)   # every worker dies opening it
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            h.engine.wait(0.02)
        # Without a backoff a fork-and-die loop restarts dozens of times in 2 s.
        assert 3 <= h.engine.restarts <= 12
        h.engine.remove_device(99)
        os.close(fd)
        h.submit(1, OP_READ, 0, 4096, 0)
        h.wait_for([1])
        assert h.completions == {1: [ST_GOOD]} and h.data(0, 4096) == h.src[:4096]
    finally:
        h.close()


def test_replacement_stopped_before_it_is_ready_is_replaced_too(tmp_path, monkeypatch):
    """A replacement worker that never becomes ready (here it stops itself; in the wild, a lock
    another thread held at the fork) is replaced after the short fork grace, and the parts it
    inherited complete: the stress harness once lost 16 commands to a SIGSTOP in that window."""
    from overlaybd.workers import worker as worker_mod
    rnd = random.Random(5)
    h = EngineHarness(tmp_path, 2, chunk_size=CHUNK, delay=0.002, heartbeat_sec=2.0)
    marker = tmp_path / "stopped-once"
    real_run = worker_mod.Worker.run

    def run_once_stopped(self):
        if not marker.exists():           # only the first replacement (forked after the patch)
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGSTOP)
        return real_run(self)

    monkeypatch.setattr(worker_mod.Worker, "run", run_once_stopped)
    size = 64 * 1024
    try:
        cases, victim = _round_with_a_busy_victim(h, rnd, size)
        os.kill(victim.proc.pid, signal.SIGKILL)
        h.wait_for([c[0] for c in cases], timeout=20)     # the long spawn grace is 30 s
        stopped = int(marker.read_text())
        assert h.engine.restarts == 2
        assert not psutil.pid_exists(stopped), "the stopped replacement was not killed and reaped"
        _check(h, cases, size)
    finally:
        h.close()
