"""Shared regions (no names left behind), the control channel (fd passing) and the shared
allocator for writable layers."""

import os
import pickle

import multiprocess
import posix_ipc
import pytest

from overlaybd.shm import (
    Channel,
    PassFd,
    SharedCounter,
    SharedRegion,
    stale_names,
    sweep_stale,
)
from tests.helpers.workers import shm_names_of


def test_region_leaves_no_name_and_is_shared():
    before = shm_names_of(os.getpid())
    r = SharedRegion.create(8192, "t")
    assert shm_names_of(os.getpid()) == before          # unlinked right after creation
    r.buf[100:104] = b"abcd"
    other = SharedRegion.attach(os.dup(r.fd))
    assert other.size == 8192 and other.buf[100:104] == b"abcd"
    other.buf[0:2] = b"xy"
    assert r.buf[0:2] == b"xy"
    other.close()
    r.close()
    with pytest.raises(ValueError):
        SharedRegion.create(0)


def test_sweep_removes_names_of_dead_processes_only():
    proc = multiprocess.get_context("fork").Process(target=lambda: None)
    proc.start()
    proc.join()
    dead = f"/overlaybd-{proc.pid}-0-feed-x"
    alive = f"/overlaybd-{os.getpid()}-999-beef-x"
    for name in (dead, alive):
        posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=4096).close_fd()
    try:
        assert dead[1:] in stale_names() and alive[1:] not in stale_names()
        assert dead[1:] in sweep_stale()
        assert dead[1:] not in os.listdir("/dev/shm") and alive[1:] in os.listdir("/dev/shm")
    finally:
        for name in (dead, alive):
            try:
                posix_ipc.unlink_shared_memory(name)
            except posix_ipc.ExistentialError:
                pass


def test_channel_passes_descriptors_inside_messages():
    a, b = Channel.pair()
    r, w = os.pipe()
    a.send({"op": "add", "fds": [PassFd(w), PassFd(w)], "n": 3})
    os.close(w)
    msg = b.recv()
    assert msg["op"] == "add" and msg["n"] == 3
    w1, w2 = msg["fds"]
    assert w1 != w2                       # each PassFd arrives as its own descriptor
    os.write(w1, b"hello")
    assert os.read(r, 5) == b"hello"
    for fd in (w1, w2, r):
        os.close(fd)
    assert b.recv(block=False) is None
    a.close()
    with pytest.raises(EOFError):
        b.recv()
    b.close()


def test_passfd_refuses_plain_pickle():
    with pytest.raises(TypeError):
        pickle.dumps(PassFd(0))


def _allocate_many(chan, count, size):
    counter = chan.recv()
    out = [counter.allocate(size) for _ in range(count)]
    chan.send(out)


def test_shared_counter_never_hands_out_a_position_twice():
    counter = SharedCounter(initial=4096)
    ctx = multiprocess.get_context("fork")
    procs, chans = [], []
    for _ in range(3):
        mine, theirs = Channel.pair()
        p = ctx.Process(target=_allocate_many, args=(theirs, 2000, 512))
        p.start()
        mine.send(counter)                 # travels as a descriptor, not by inheritance
        procs.append(p)
        chans.append(mine)
    local = [counter.allocate(512) for _ in range(2000)]
    got = local + [x for c in chans for x in c.recv()]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(set(got)) == len(got) == 8000
    assert sorted(got) == list(range(4096, 4096 + 8000 * 512, 512))
    assert counter.value == 4096 + 8000 * 512
    assert counter.advance_to(10) == counter.value
    assert counter.advance_to(1 << 40) == 1 << 40 and counter.allocate(512) == 1 << 40
    with pytest.raises(ValueError):
        counter.allocate(-1)
    counter.close()


def test_spinning_stops_when_it_does_not_pay_and_probes_again():
    from overlaybd.shm.spin import Spin
    looks = []

    def never():
        looks.append(1)
        return False

    spin = Spin(polls=10, credit=2, probe=4)
    assert not spin(never) and not spin(never)       # two spins that found nothing: 20 looks
    assert len(looks) == 20
    for _ in range(3):
        assert not spin(never)                       # no credit: no looks at all ...
    assert len(looks) == 20
    assert not spin(never)                           # ... until the probe
    assert len(looks) == 30
    assert spin(lambda: True) is False               # (not a probe: skipped)
    for _ in range(2):
        spin(never)
    assert spin(lambda: True)                        # the next probe finds it: credit again
    assert spin(lambda: True)


def test_a_blocking_event_wait_survives_signals_and_returns_the_sets():
    """A worker sleeps in Event.wait; SIGHUP (log reopen) must run its handler and not end
    the sleep with an error (os.eventfd_read does not retry on EINTR by itself)."""
    import signal
    import threading
    import time

    from overlaybd.shm.wakeup import Event
    ev = Event(blocking=True)
    handled = []
    old = signal.signal(signal.SIGALRM, lambda *a: handled.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)     # signals during the sleep
        t = threading.Timer(0.4, lambda: (ev.set(), time.sleep(0.05), ev.set()))
        t.start()
        t0 = time.monotonic()
        woke = ev.wait()                  # the first set may wake it before the second
        assert time.monotonic() - t0 >= 0.3 and len(handled) >= 3
        assert woke in (1, 2)
        t.join()
        assert woke + ev.clear() == 2                         # every set counted once
        assert ev.clear() == 0                                # blocking, yet clear never blocks
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        ev.close()


def test_spin_due_declines_without_credit_and_probes_every_nth_sleep():
    from overlaybd.shm.spin import Spin
    spin = Spin(polls=3, credit=1, probe=3)
    assert spin.due() and not spin.look(lambda: False)       # the one credit spent
    assert [spin.due() for _ in range(6)] == [False, False, True, False, False, True]
    assert spin.look(lambda: True) and spin.due()            # found something: credit again
