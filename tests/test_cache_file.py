"""The file cache (spec §7.1) and download cache (§7.2) over the real loopback registry."""

import hashlib
import multiprocessing
import os
import pathlib
import threading

import pytest

from overlaybd.cache import eviction, open_remote_layer
from overlaybd.cache.sparse import holes
from overlaybd.io import LocalFile

# the registry fixtures (registry_none, registry_factory, ...) are used by name
from tests.helpers.registry import service_config

pytestmark = pytest.mark.registry
GOLDEN = os.path.join(os.path.dirname(__file__), "data", "golden")
MiB = 1 << 20


def _lower(url, data=None):
    return {"digest": url.rsplit("/", 1)[1], "size": len(data) if data is not None else 0}


def _downloads(tmp_path, url=None):
    try:
        lines = (tmp_path / "audit.log").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [ln for ln in lines if "|download[" in ln and (url is None or f"[pathname={url}]" in ln)]


def test_cache_file_named_by_digest_and_sparse(registry_none, tmp_path):
    data = os.urandom(2 * MiB + 5)
    url = registry_none.push(data)
    svc = service_config(tmp_path)
    f = open_remote_layer(url, _lower(url), svc)
    try:
        assert f.pread(10, MiB + 3) == data[MiB + 3:MiB + 13]
        path = tmp_path / "cache" / url.rsplit("/", 1)[1]
        assert path.exists() and path.stat().st_size == len(data)
        fd = os.open(path, os.O_RDONLY)
        try:   # exactly one refill unit (256 KiB) around the read is present
            assert holes(fd, 0, len(data)) == [(0, MiB), (MiB + 256 * 1024, len(data))]
        finally:
            os.close(fd)
        lines = _downloads(tmp_path, url)
        assert len(lines) == 1 and "[offset=1048576][size=262144]" in lines[0]   # one refill unit
    finally:
        f.close()


def test_concurrent_refills_of_one_range_fetch_once(registry_none, tmp_path):
    data = os.urandom(MiB)
    url = registry_none.push(data)
    svc = service_config(tmp_path)
    files = [open_remote_layer(url, _lower(url, data), svc) for _ in range(2)]
    results, barrier = [], threading.Barrier(8)

    def reader(i):
        barrier.wait()
        results.append(files[i % 2].pread(100_000, 300_000) == data[300_000:400_000])
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    [f.close() for f in files]
    assert results == [True] * 8
    assert len(_downloads(tmp_path, url)) == 1


def _child_read(url, tmp_path, off, n, q):
    svc = service_config(tmp_path)
    f = open_remote_layer(url, {"digest": url.rsplit("/", 1)[1]}, svc)
    q.put(hashlib.sha256(f.pread(n, off)).hexdigest())
    f.close()


def test_concurrent_refills_across_processes_fetch_once(registry_none, tmp_path):
    data = os.urandom(MiB + 1)
    url = registry_none.push(data)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_child_read, args=(url, tmp_path, 512 * 1024, 200_000, q)) for _ in range(4)]
    [p.start() for p in procs]
    [p.join(60) for p in procs]
    assert [p.exitcode for p in procs] == [0] * 4
    want = hashlib.sha256(data[512 * 1024:512 * 1024 + 200_000]).hexdigest()
    assert [q.get() for _ in procs] == [want] * 4
    refills = [ln for ln in _downloads(tmp_path, url) if "[offset=0]" not in ln]
    assert len(refills) == 1, refills


def test_fully_cached_blob_is_served_with_the_registry_down(registry_factory, tmp_path):
    reg = registry_factory("none")
    data = os.urandom(MiB + 777)             # not a multiple of 4 KiB: the file proves the size
    aligned = os.urandom(MiB)                 # a multiple: the configured size is trusted
    url, url2 = reg.push(data), reg.push(aligned)
    svc = service_config(tmp_path)
    for u, d in ((url, data), (url2, aligned)):
        f = open_remote_layer(u, _lower(u, d), svc)
        assert f.pread(len(d), 0) == d
        f.close()
    reg.stop()
    f = open_remote_layer(url, {}, svc)
    g = open_remote_layer(url2, _lower(url2, aligned), svc)
    try:
        assert f.size == len(data) and f.pread(len(data), 0) == data
        assert g.pread(len(aligned), 0) == aligned
    finally:
        f.close()
        g.close()


def test_hand_placed_cache_file_is_used_and_counted(registry_factory, tmp_path):
    reg = registry_factory("none")
    data = os.urandom(300_001)
    url = reg.push(data)
    reg.stop()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / url.rsplit("/", 1)[1]).write_bytes(data)
    svc = service_config(tmp_path)
    f = open_remote_layer(url, {}, svc)
    try:
        assert f.pread(len(data), 0) == data
        store = eviction.store_for(str(cache), svc.cache.size_gb)
        assert store.total >= len(data)
    finally:
        f.close()


def test_eviction_under_a_tiny_cache(registry_none, tmp_path):
    blobs = [os.urandom(MiB + i) for i in range(4)]
    urls = [registry_none.push(b) for b in blobs]
    svc = service_config(tmp_path, cacheConfig={"cacheSizeGB": 2.5 * MiB / (1 << 30)})
    cache = tmp_path / "cache"
    for u, b in zip(urls, blobs):
        f = open_remote_layer(u, _lower(u, b), svc)
        assert f.pread(len(b), 0) == b
        f.close()
    store = eviction.store_for(str(cache), svc.cache.size_gb)
    store.evict_pass()
    names = sorted(os.listdir(cache))
    assert url_name(urls[0]) not in names                 # least recently used went first
    assert url_name(urls[-1]) in names
    assert store.total <= store.risk
    audit = (tmp_path / "audit.log").read_text()
    assert "|eviction[actualEvict=" in audit and "][totalUsed_=" in audit
    # evicted data is fetched again on demand
    f = open_remote_layer(urls[0], _lower(urls[0], blobs[0]), svc)
    assert f.pread(1000, 5000) == blobs[0][5000:6000]
    f.close()


def url_name(u):
    return u.rsplit("/", 1)[1]


def test_corrupted_cache_block_is_evicted_and_refetched_by_zfile(registry_token, tmp_path):
    from overlaybd.zfile.reader import ZFile
    golden = os.path.join(GOLDEN, "layer1.lz4.zfile")
    raw = pathlib.Path(golden).read_bytes()
    url = registry_token.push(raw, repo="z/f")
    registry_token.cred_file(str(tmp_path / "cred.json"))
    svc = service_config(tmp_path)
    ref = ZFile(LocalFile(golden))
    want = ref.pread(ref.size, 0)
    f = open_remote_layer(url, _lower(url, raw), svc)
    try:
        assert ZFile(f).pread(ref.size, 0) == want                 # everything now cached
        off, _ = ref.block_range(ref.nblocks // 2)
        cache_file = tmp_path / "cache" / url_name(url)
        with open(cache_file, "r+b") as c:                          # flip bytes on disk
            c.seek(off + 10)
            c.write(bytes(b ^ 0xFF for b in raw[off + 10:off + 30]))
        before = len(_downloads(tmp_path, url))
        z = ZFile(f)
        assert z.pread(ref.size, 0) == want
        assert z.retries >= 1
        assert len(_downloads(tmp_path, url)) > before             # refetched from the registry
        assert cache_file.read_bytes() == raw                 # and repaired in the cache
    finally:
        f.close()


def test_download_cache_mode_uses_layer_dir(registry_none, tmp_path):
    data = os.urandom(700_000)
    url = registry_none.push(data)
    svc = service_config(tmp_path, cacheConfig={"cacheType": "download"})
    layer_dir = tmp_path / "layer"
    f = open_remote_layer(url, {**_lower(url, data), "dir": str(layer_dir)}, svc)
    try:
        assert f.pread(5000, 400_000) == data[400_000:405_000]
        dl = layer_dir / ".download"
        assert dl.stat().st_size == len(data)
        assert dl.read_bytes()[400_000:405_000] == data[400_000:405_000]
        assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")
    finally:
        f.close()
    # without dir/size the download cache reads straight from the registry
    g = open_remote_layer(url, {}, svc)
    assert g.pread(10, 20) == data[20:30]
    g.close()


def test_sequential_reads_prefetch_and_close_waits(registry_none, tmp_path):
    data = os.urandom(40 * MiB + 3)
    url = registry_none.push(data, repo="seq/r")
    svc = service_config(tmp_path)
    f = open_remote_layer(url, _lower(url, data), svc)
    for off in range(0, 12 * MiB, MiB):                  # sequential: windows grow, prefetch starts
        assert f.pread(MiB, off) == data[off:off + MiB]
    f.close()                                            # must wait for in-flight prefetches
    path = tmp_path / "cache" / url_name(url)
    fd = os.open(path, os.O_RDONLY)
    try:
        present = len(data) - sum(e - s for s, e in holes(fd, 0, len(data)))
        assert present > 12 * MiB                        # read ahead of the reader
        cached = os.pread(fd, present, 0)
    finally:
        os.close(fd)
    assert cached[:12 * MiB] == data[:12 * MiB]
    g = open_remote_layer(url, _lower(url, data), svc)
    try:
        assert g.pread(len(data), 0) == data
    finally:
        g.close()
