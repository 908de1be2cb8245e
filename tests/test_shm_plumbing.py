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
