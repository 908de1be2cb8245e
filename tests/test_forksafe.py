"""A forked process gets fresh process-wide state (overlaybd.forksafe): connection pools,
registry contexts, prefetch threads, cache stores, and locks that a thread of the parent held
at the fork (a child waiting on one would hang for ever)."""

import gc
import os
import signal
import threading
from contextlib import contextmanager

from overlaybd import forksafe
from overlaybd.cache import eviction, filecache
from overlaybd.image.settings import ServiceConfig
from overlaybd.registry import blob, client


def in_child(fn):
    """Run ``fn`` in a forked child (10 s at most); assert it returned True."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(10)                    # a child stuck on a stale lock dies
            code = 0 if fn() is True else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@contextmanager
def held_by_another_thread(get_lock):
    """``get_lock()`` held by a parent thread for the duration (as in the middle of a call)."""
    taken, release = threading.Event(), threading.Event()

    def hold():
        with get_lock():
            taken.set()
            release.wait(30)
    t = threading.Thread(target=hold)
    t.start()
    taken.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join(10)


def test_functions_and_tracked_objects_reset_in_the_child_only():
    calls = []

    class Thing:
        def _after_fork_in_child(self):
            calls.append("thing")

    kept, dropped = Thing(), Thing()
    forksafe.track(kept)
    forksafe.track(dropped)
    del dropped
    gc.collect()
    assert in_child(lambda: calls == ["thing"]) == 0    # once: the dropped one is not held
    assert calls == []                                  # never in the parent
    assert kept is not None


def test_registry_pools_are_the_childs_own_even_with_the_lock_held_at_fork():
    s = client.HttpSettings()
    parent = client.manager(s)
    assert client.manager(s) is parent                  # one per process and settings
    with held_by_another_thread(lambda: client._lock):
        code = in_child(lambda: (m := client.manager(s)) is not parent and client.manager(s) is m)
    assert code == 0
    assert client.manager(s) is parent                  # the parent's are untouched


def test_registry_contexts_are_the_childs_own():
    svc = ServiceConfig()
    parent = blob.context_for(svc)
    with held_by_another_thread(lambda: blob._lock):
        code = in_child(lambda: (c := blob.context_for(svc)) is not parent
                        and blob.context_for(svc) is c)
    assert code == 0
    assert blob.context_for(svc) is parent


def test_prefetch_threads_run_in_the_child():
    parent = filecache._executor()
    assert parent.submit(os.getpid).result(10) == os.getpid()
    with held_by_another_thread(lambda: filecache._pool_lock):
        code = in_child(lambda: (e := filecache._executor()) is not parent
                        and e.submit(os.getpid).result(5) == os.getpid())
    assert code == 0


def test_cache_store_is_the_childs_own(tmp_path):
    parent = eviction.store_for(tmp_path / "c", 1)
    try:
        code = in_child(lambda: (st := eviction.store_for(tmp_path / "c", 1)) is not parent
                        and st.root == parent.root)
        assert code == 0
        assert eviction.store_for(tmp_path / "c", 1) is parent
    finally:
        parent.stop()


def test_a_child_closes_a_blob_whose_prefetches_were_the_parents(tmp_path):
    """Prefetches in flight at the fork run in the parent's threads only: the child's close does
    not wait for them, and its blob takes new prefetches."""
    b = filecache.CachedBlob(str(tmp_path / "blob"), 1 << 20, source=lambda: None)
    try:
        with b._idle:
            b._prefetching = filecache.PREFETCH_DEPTH   # as if two prefetches were running
            code = in_child(lambda: b._prefetching == 0 and (b.close(), b.fd)[1] == -1)
            b._prefetching = 0
        assert code == 0
        assert b.fd >= 0
    finally:
        b.close()


def test_one_failing_reset_does_not_skip_the_others():
    calls = []

    class Bad:
        def _after_fork_in_child(self):
            raise RuntimeError("broken reset")

    class Good:
        def _after_fork_in_child(self):
            calls.append("good")

    objs = [forksafe.track(Bad()), forksafe.track(Good()), forksafe.track(Bad())]
    assert in_child(lambda: calls == ["good"]) == 0
    assert objs and calls == []
