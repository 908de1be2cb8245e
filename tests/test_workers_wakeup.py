"""The hand-off between the supervisor and its workers signals only a peer that sleeps, once
per batch, and never loses a wake-up (overlaybd.shm.wakeup)."""

import os
import select
import signal
import time

import pytest

from overlaybd.shm.heartbeat import COMP_SETS
from overlaybd.workers import OP_READ, ST_GOOD
from tests.helpers.workers import EngineHarness


def _until(cond, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


def test_a_batch_costs_one_wakeup_each_way(tmp_path):
    h = EngineHarness(tmp_path, 1, heartbeat_sec=120)   # the heartbeat thread's re-check stays out
    try:
        h.submit(0, OP_READ, 0, 4096, 0)
        h.wait_for([0])
        pool = h.engine.pool
        slot = pool.slots[0]
        _until(lambda: slot.hb.worker_idle, "the worker never went to sleep")
        pid = slot.proc.pid
        os.kill(pid, signal.SIGSTOP)               # asleep, and it stays so while we publish
        try:
            before = slot.wakeups
            for i in range(1, 101):
                h.submit(i, OP_READ, i * 4096, 4096, i * 4096)
            h.engine.poll()                        # wakes it; nothing completed; we stop looking
            assert slot.wakeups - before == 1, "100 parts to a sleeping worker: one wake-up"
            woke = pool.wakeups
        finally:
            os.kill(pid, signal.SIGCONT)
        comp = slot.comp
        _until(lambda: comp.head() - comp.tail() == 100, "the worker did not run the batch")
        assert select.select([h.engine.fileno()], [], [], 10)[0], "the completions were not signalled"
        h.engine.poll()
        assert pool.wakeups - woke == 1, "100 completions while we slept: one wake-up"
        assert h.completions == {i: [ST_GOOD] for i in range(101)}
        assert h.data(0, 101 * 4096) == h.src[:101 * 4096]
    finally:
        h.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_no_wakeup_is_lost_one_command_at_a_time(tmp_path, workers):
    """One command in flight: both sides go to sleep between commands, thousands of times.
    A lost wake-up would leave the select below waiting for the heartbeat thread (30 s)."""
    h = EngineHarness(tmp_path, workers, heartbeat_sec=120)
    fd = h.engine.fileno()
    try:
        for i in range(3000):
            off = (i * 7919 % 2000) * 4096
            h.submit(i, OP_READ, off, 4096, 0)
            h.engine.poll()                        # starts it (wakes the worker if it sleeps)
            while i not in h.completions:
                assert select.select([fd], [], [], 10)[0], f"command {i}: no wake-up"
                h.engine.poll()
            assert h.completions[i] == [ST_GOOD]
            assert h.data(0, 4096) == h.src[off:off + 4096], f"command {i}: wrong bytes"
        wakes = sum(s["wakeups"] for s in h.engine.stats())
        assert wakes <= 3000, "at most one wake-up per command"
    finally:
        h.close()


def test_the_completion_fd_is_cleared_only_when_signalled_and_never_left_readable(tmp_path):
    """The pool's fileno() is the completion eventfd.  A look reads it (a system call) only
    when the counted writes moved or the caller saw it readable; a write the supervisor took
    before the writer counted it (``woken``) leaves nothing readable behind."""
    h = EngineHarness(tmp_path, 1, heartbeat_sec=120)
    try:
        h.submit(0, OP_READ, 0, 4096, 0)
        h.wait_for([0])
        pool = h.engine.pool
        fd = h.engine.fileno()
        # asleep: it announces that only after its last write and count have landed
        _until(lambda: pool.slots[0].hb.worker_idle, "the worker never went to sleep")
        for _ in range(3):
            h.engine.poll()
        reads = []
        real_clear = pool.comp_event.clear
        pool.comp_event.clear = lambda: reads.append(1) or real_clear()
        for _ in range(200):                       # busy looks, nothing signalled: no read
            h.engine.poll()
        assert reads == [] and not select.select([fd], [], [], 0)[0]
        # a write not counted yet (the writer is between its write and its count): the caller
        # that saw the fd readable clears it, and the late count costs nothing
        os.eventfd_write(fd, 1)
        assert select.select([fd], [], [], 0)[0]
        h.engine.poll(woken=True)
        assert not select.select([fd], [], [], 0)[0] and len(reads) == 1
        slot = pool.slots[0]
        slot.words[COMP_SETS] += 1                 # the late count
        for _ in range(5):
            h.engine.poll()
        assert len(reads) == 1, "a count already consumed read the eventfd again"
        # a counted write is cleared without the hint
        pool.signal()
        h.engine.poll()
        assert not select.select([fd], [], [], 0)[0] and len(reads) == 2
        # and commands still complete with the right bytes
        h.submit(1, OP_READ, 4096, 4096, 4096)
        h.wait_for([1])
        assert h.completions[1] == [ST_GOOD] and h.data(4096, 4096) == h.src[4096:8192]
    finally:
        h.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_watched_edge_triggered_the_completion_fd_is_never_read(tmp_path, workers):
    """``watch_edge()`` (the daemon's mode): the caller's epoll has EPOLLET, every write of the
    eventfd is a new edge, so the engine never reads it -- and still no wake-up is lost, one
    command at a time, both sides sleeping between commands."""
    h = EngineHarness(tmp_path, workers, heartbeat_sec=120)
    h.engine.watch_edge()
    pool = h.engine.pool
    ep = select.epoll()
    ep.register(h.engine.fileno(), select.EPOLLIN | select.EPOLLET)
    reads = []
    real_clear = pool.comp_event.clear
    pool.comp_event.clear = lambda: reads.append(1) or real_clear()
    try:
        for i in range(2000):
            off = (i * 7919 % 2000) * 4096
            h.submit(i, OP_READ, off, 4096, 0)
            h.engine.poll()
            while i not in h.completions:
                woken = bool(ep.poll(10))
                assert woken, f"command {i}: no wake-up"
                h.engine.poll(woken)
            assert h.completions[i] == [ST_GOOD]
            assert h.data(0, 4096) == h.src[off:off + 4096], f"command {i}: wrong bytes"
        assert reads == [], "the engine read an edge-triggered fd"
        assert pool.wakeups > 0
        # and Engine.wait follows the mode: many in flight, all delivered
        for i in range(2000, 2064):
            h.submit(i, OP_READ, (i % 1000) * 4096, 4096, (i - 2000) * 4096)
        h.wait_for(range(2000, 2064))
        for i in range(2000, 2064):
            assert h.data((i - 2000) * 4096, 4096) == h.src[(i % 1000) * 4096:(i % 1000 + 1) * 4096]
        assert reads == []
    finally:
        ep.close()
        h.close()
