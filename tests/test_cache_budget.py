"""cacheConfig.cacheSizeGB bounds the cache directory across processes: every process that
writes there reports to one shared account and one evictor keeps the directory under it."""

import multiprocessing
import os
import time

import pytest

from overlaybd.cache import eviction

MiB = 1 << 20
CAP = 16 * MiB                              # water mark 14.4 MiB, risk mark 15.2 MiB
SLACK = 2 * MiB                             # a write each writer may have in flight


def allocated(root):
    return sum(os.stat(os.path.join(d, f)).st_blocks * 512
               for d, _, fs in os.walk(root) for f in fs)


def writer(root, tag, files, out):
    """A worker process: cache files of 1 MiB, written the way FileCache writes."""
    store = eviction.store_for(root, CAP / (1 << 30))
    peak = 0
    for i in range(files):
        name = f"{tag}-{i}"
        for _ in range(200):                # a full cache refuses writes until the pass
            try:
                store.check_writable()
                break
            except OSError:
                time.sleep(0.01)
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(MiB))
        store.note_write(name)
        peak = max(peak, allocated(root))
    out.put((tag, peak, store.usage.evictor))


@pytest.fixture
def fork():
    return multiprocessing.get_context("fork")


def test_two_processes_share_one_bound(tmp_path, fork):
    root = str(tmp_path / "cache")
    evictor = eviction.store_for(root, CAP / (1 << 30))     # the supervisor: the evictor
    assert evictor.usage.evictor
    out = fork.Queue()
    procs = [fork.Process(target=writer, args=(root, t, 12, out)) for t in ("a", "b")]
    [p.start() for p in procs]
    [p.join(60) for p in procs]
    results = sorted(out.get(timeout=5) for _ in procs)
    assert [p.exitcode for p in procs] == [0, 0]
    # 24 MiB written in all, each process only 12 MiB: only a shared account sees the excess
    assert [ev for _, _, ev in results] == [False, False]
    assert max(peak for _, peak, _ in results) <= CAP + SLACK
    deadline = time.monotonic() + 5              # the last write may have asked for a pass
    while (evictor.usage.requested or allocated(root) > evictor.risk) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert allocated(root) <= evictor.risk       # below it no pass is due before the timer
    assert evictor.usage.total >= allocated(root)  # the shared estimate never undercounts
    assert evictor.evict_pass() >= 0 and evictor.usage.total == allocated(root)
    names = os.listdir(root)
    assert any(n.startswith("b-11") for n in names)         # the newest files stay


def test_a_file_open_in_another_process_is_emptied_not_unlinked(tmp_path, fork):
    root = str(tmp_path / "cache")
    store = eviction.CacheStore(root, CAP, interval=0)
    path = os.path.join(root, "held")
    with open(path, "wb") as f:
        f.write(os.urandom(15 * MiB))
    store.note_write("held")
    opened, done = fork.Event(), fork.Event()

    def hold():
        s = eviction.store_for(root, CAP / (1 << 30))
        fd = os.open(path, os.O_RDWR)
        s.acquire("held", fd)
        opened.set()
        done.wait(30)

    p = fork.Process(target=hold)
    p.start()
    try:
        assert opened.wait(30)
        with open(os.path.join(root, "new"), "wb") as f:
            f.write(os.urandom(MiB))
        store.note_write("new")                 # 16 MiB: over the risk mark, a pass now
        assert os.path.exists(path) and os.stat(path).st_blocks == 0
    finally:
        done.set()
        p.join(30)
    store.usage.request_pass()
    with open(os.path.join(root, "more"), "wb") as f:
        f.write(os.urandom(15 * MiB))
    store.note_write("more")
    assert not os.path.exists(path)             # nobody holds it now: unlinked


def test_another_process_takes_over_when_the_evictor_exits(tmp_path, fork):
    root = str(tmp_path / "cache")
    ready, leave = fork.Event(), fork.Event()

    def first():
        s = eviction.CacheStore(root, CAP, interval=0)
        assert s.usage.evictor
        ready.set()
        leave.wait(30)

    p = fork.Process(target=first)
    p.start()
    assert ready.wait(30)
    second = eviction.CacheStore(root, CAP, interval=0.3)
    try:
        assert not second.usage.evictor
        assert second.evict_pass() == 0         # not the evictor: it only asks
        assert second.usage.requested
        leave.set()
        p.join(30)
        deadline = time.monotonic() + 5
        # evictor is set when it takes over, requested cleared when its first pass ends
        while (not second.usage.evictor or second.usage.requested) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.usage.evictor
        assert not second.usage.requested       # the new evictor ran the requested pass
    finally:
        second.stop()
