"""Learned prefetch: a start records its first seconds into the cache directory, the next
open of the same layers replays it; a clearly different start replaces it."""

import os
import time

import pytest

from overlaybd.image.config import Lower
from overlaybd.prefetch import learned
from overlaybd.prefetch import trace as tr
from overlaybd.prefetch.session import RecordSession, ReplaySession
from overlaybd.prefetch.trace import Record
from tests.helpers.ext4 import need_e2fsprogs
from tests.helpers.prefetch import (
    APP,
    Served,
    downloads,
    shared_image,
    wait_for,
    workload,
    write_config,
)
from tests.helpers.registry import service_config

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def R(layer, off, n=65536):
    return Record(b"R", layer, n, off)


def test_key_is_the_layer_digests_and_needs_them_all():
    class Cfg:
        lowers = [Lower(digest=D1), Lower(digest=D2)]
    k = learned.key_of(Cfg)
    assert len(k) == 64 and k != learned.key_of(type("C", (), {"lowers": Cfg.lowers[::-1]}))
    Cfg.lowers = [Lower(digest=D1), Lower(file="/x")]
    assert learned.key_of(Cfg) is None


def test_similarity_of_read_sets():
    a = [R(0, 0), R(0, 65536), R(1, 0)]
    assert learned.similarity(a, list(reversed(a))) == 1.0
    assert learned.similarity(a, [R(0, 0)]) == pytest.approx(1 / 3)
    assert learned.similarity(a, [R(2, 0)]) == 0.0
    assert learned.similarity([R(0, 100, 200)], [R(0, 0, 512)]) == 1.0     # same chunk


def test_store_saves_keeps_and_replaces(tmp_path):
    store = learned.LearnedStore(str(tmp_path))
    key = "k" * 64
    first = [R(0, i << 16) for i in range(10)]
    assert store.offer(key, []) == "empty" and store.load(key) is None
    assert store.offer(key, first) == "saved"
    assert store.load(key) == first
    assert tr.load(store.path(key)) == ("trace", first)        # upstream's format
    assert store.offer(key, first[:8] + [R(1, 0)]) == "kept"    # 8 of 11 chunks shared
    assert store.load(key) == first
    other = [R(1, i << 16) for i in range(10)]
    assert store.offer(key, other) == "replaced"
    assert store.load(key) == other
    with open(store.path(key), "r+b") as f:                     # corrupt: discarded
        f.seek(30)
        f.write(b"\xff")
    assert store.load(key) is None and not os.path.exists(store.path(key))


@pytest.fixture(scope="module")
def image(tmp_path_factory, registry_none):
    need_e2fsprogs()
    img = dict(shared_image(tmp_path_factory, registry_none))
    return img


def clear_blob_cache(cache):
    for name in os.listdir(cache):
        if name.startswith("sha256:"):
            os.unlink(os.path.join(cache, name))


def start(tmp_path, svc, image, paths, cfg_name):
    """One container start: open the device, run the workload of ``paths``, close.
    Returns (downloads during the workload, sessions)."""
    cfg = write_config(tmp_path / cfg_name, image["base"], image["lowers"])
    srv = Served(tmp_path, svc)
    try:
        key = srv.add(cfg)
        assert srv.prefetch.wait(key, timeout=60)
        before = downloads(svc.audit_path)
        srv.run(key, workload(image["raw"], paths), image["bytes"])
        during = downloads(svc.audit_path) - before
        sessions = srv.prefetch.sessions(key)
    finally:
        srv.close()
    rec = [s for s in sessions if isinstance(s, RecordSession)]
    assert rec and rec[0].finished                # closing the device ended and stored it
    return during, sessions


@pytest.mark.registry
def test_learned_trace_replayed_on_the_next_open(tmp_path, image):
    # a window longer than the test: the device's close ends each recording, however slow
    # the machine (a window that ended inside the workload would record part of it)
    svc = service_config(tmp_path, prefetchConfig={"learn": True, "learnSeconds": 60})
    cache = svc.cache.dir
    during1, s1 = start(tmp_path, svc, image, APP, "a.json")
    assert during1 > 10 and not any(isinstance(s, ReplaySession) for s in s1)
    key = learned.key_of(type("C", (), {"lowers": [Lower(digest=lo["digest"])
                                                    for lo in image["lowers"]]}))
    path = os.path.join(cache, learned.DIR_NAME, f"{key}.trace")
    kind, first = tr.load(path)
    assert kind == "trace" and {r.layer for r in first} == {0, 1}
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".spool")]

    clear_blob_cache(cache)                       # cold again, the learned trace kept
    during2, s2 = start(tmp_path, svc, image, APP, "b.json")
    [replay] = [s for s in s2 if isinstance(s, ReplaySession)]
    assert replay.replayer.done > 0 and replay.replayer.failed == 0
    assert during2 == 0
    assert tr.load(path)[1] == first              # the same start: kept

    clear_blob_cache(cache)
    other = [f"/app/m{i:03d}.py" for i in range(1, 60, 2)]
    start(tmp_path, svc, image, other, "c.json")  # a clearly different start
    time.sleep(0.1)
    _, third = tr.load(path)
    assert third != first and learned.similarity(third, first) < learned.REPLACE_BELOW


@pytest.mark.registry
def test_the_learning_window_ends_the_recording_while_the_device_is_open(tmp_path, image):
    svc = service_config(tmp_path, prefetchConfig={"learn": True, "learnSeconds": 0.5})
    cfg = write_config(tmp_path / "w.json", image["base"], image["lowers"])
    srv = Served(tmp_path, svc)
    try:
        key = srv.add(cfg)
        assert srv.prefetch.wait(key, timeout=60)
        srv.run(key, workload(image["raw"], APP), image["bytes"])
        rec = [s for s in srv.prefetch.sessions(key) if isinstance(s, RecordSession)]
        assert rec and wait_for(lambda: rec[0].finished, timeout=30)
    finally:
        srv.close()


@pytest.mark.registry
def test_learning_is_off_by_default(tmp_path, image):
    svc = service_config(tmp_path)
    assert svc.prefetch.learn is False
    cfg = write_config(tmp_path / "c.json", image["base"], image["lowers"])
    srv = Served(tmp_path, svc)
    try:
        key = srv.add(cfg)
        assert srv.prefetch.sessions(key) == []
    finally:
        srv.close()
    assert not os.path.exists(os.path.join(svc.cache.dir, learned.DIR_NAME))
