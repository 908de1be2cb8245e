"""Images served by the worker engine: a writable LSMT upper written by several worker
processes stays one valid layer (no overlapping appends), reads after writes see them, and the
upper reopens and commits like any other."""

import io
import json
import random

import pytest

from overlaybd import lsmt
from overlaybd.image import ImageOpener, open_image
from overlaybd.workers import OP_READ, OP_WRITE, ST_GOOD
from tests.helpers.env import GOLDEN
from tests.helpers.image import sha256_of
from tests.helpers.workers import EngineHarness, MiB


@pytest.mark.parametrize("sparse", [False, True])
def test_writable_upper_written_by_two_workers(tmp_path, sparse):
    data, index = tmp_path / "up.data", tmp_path / "up.index"
    lsmt.create_rw(str(data), str(index), 1 << 30, sparse=sparse).close()
    cfg = tmp_path / "config.v1.json"
    cfg.write_text(json.dumps({"lowers": [{"file": str(GOLDEN / f"layer{i}.lz4.zfile")}
                                          for i in (1, 2, 3)],
                               "upper": {"data": str(data), "index": str(index)}}))
    svc = tmp_path / "overlaybd.json"
    svc.write_text(json.dumps({"enableAudit": False}))
    base = open_image(str(cfg), str(svc), write_result=False)
    model = bytearray(base.pread(16 * MiB, 0))
    base.close()
    opener = ImageOpener(str(cfg), str(svc))
    assert opener.allocator is not None          # writable: shared data positions
    h = EngineHarness(tmp_path, 2, map_size=64 * MiB, opener=opener, chunk_size=256 * 1024)
    try:
        rng = random.Random(11)
        cmd = 0
        # writes spread over many chunks, so both workers append.  A sparse upper reopens
        # from its allocated filesystem blocks (upstream's rule), so its writes are 4 KiB
        # aligned, as a filesystem's are; the append-only one takes any 512-byte granularity.
        unit = 4096 if sparse else 512
        for _ in range(60):
            off = rng.randrange(0, (16 * MiB - 512 * 1024) // unit) * unit
            n = rng.randrange(1, 128) * unit
            payload = rng.randbytes(n)
            h.mm[0:n] = payload
            h.submit(cmd, OP_WRITE, off, n, 0, 64 * 1024)
            h.wait_for([cmd])
            assert h.completions[cmd] == [ST_GOOD]
            model[off:off + n] = payload
            cmd += 1
        h.submit(cmd, OP_READ, 0, 16 * MiB, 0, MiB)          # read after write, every chunk
        h.wait_for([cmd])
        assert h.data(0, 16 * MiB) == bytes(model)
    finally:
        h.close()
    # reopened in one process (a daemon restart), the upper holds exactly the model
    img = open_image(str(cfg), str(svc), write_result=False)
    try:
        assert img.pread(16 * MiB, 0) == bytes(model)
    finally:
        img.close()
    # and it commits to a valid sealed layer (upstream's format)
    up = lsmt.open_rw(str(data), str(index))
    out = io.BytesIO()
    lsmt.commit(up, out)
    up.close()
    (tmp_path / "upper.commit").write_bytes(out.getvalue())
    stacked = tmp_path / "stacked.json"
    stacked.write_text(json.dumps({"lowers": [{"file": str(GOLDEN / f"layer{i}.lz4.zfile")}
                                              for i in (1, 2, 3)]
                                  + [{"file": str(tmp_path / "upper.commit")}]}))
    img = open_image(str(stacked), str(svc), write_result=False)
    try:
        assert img.pread(16 * MiB, 0) == bytes(model)
        assert sha256_of(img, 16 * MiB) == sha256_of_golden_tail()
    finally:
        img.close()


def sha256_of_golden_tail():
    img = open_image(str(GOLDEN / "config.v1.json"), None, write_result=False)
    try:
        return sha256_of(img, 16 * MiB)
    finally:
        img.close()


def test_opener_reads_zfile_layers_through_the_block_cache_it_is_given(golden_manifest,
                                                                       monkeypatch):
    """The opener a worker calls puts ZFile layers under the process's block cache of the
    budget the composition root gave it; a tool's open_image (no budget) does not.  Either way
    the bytes are the image's."""
    from overlaybd.cache import blockcache
    from overlaybd.cache.blockcache import BlockCache
    monkeypatch.setattr(blockcache, "_process_slice", None)
    p = GOLDEN.parent / "merged-lz4.json"           # {"lowers": [merged.lz4.zfile]}
    outside = open_image(str(p), None, write_result=False)
    assert not isinstance(outside.layers[0], BlockCache)
    outside.close()
    img = ImageOpener(str(p), cache_bytes=4 * MiB)()
    try:
        cache = img.layers[0]
        assert isinstance(cache, BlockCache) and cache.lru.capacity == 4 * MiB
        r = golden_manifest["merged"]["ranges"][0]
        for _ in range(2):
            assert sha256_of(img, r["offset"], r["length"]) == r["sha256"]
        assert cache.hits > 0 and cache.lru.used <= 4 * MiB
    finally:
        img.close()
    img = ImageOpener(str(p))()                     # no budget: no block cache
    assert not isinstance(img.layers[0], BlockCache)
    img.close()


def test_the_composition_root_gives_openers_the_configured_budget(tmp_path, golden_manifest,
                                                                  monkeypatch):
    """overlaybd-tcmu's image backend: each engine process's opener carries
    workerConfig.cacheSizeMB as its block-cache budget, and opens with it."""
    from overlaybd.cache import blockcache
    from overlaybd.cache.blockcache import BlockCache
    from overlaybd.image import load_service_config
    from overlaybd.tools.tcmu import image_backend
    monkeypatch.setattr(blockcache, "_process_slice", None)
    svc_path = tmp_path / "overlaybd.json"
    svc_path.write_text(json.dumps({"enableAudit": False, "workerConfig": {"cacheSizeMB": 8}}))
    validate, opener = image_backend(load_service_config(str(svc_path)))
    p = GOLDEN.parent / "merged-lz4.json"
    o = opener(str(p))
    assert isinstance(o, ImageOpener) and o.cache_bytes == 8 * MiB
    img = o()
    try:
        assert isinstance(img.layers[0], BlockCache) and img.layers[0].lru.capacity == 8 * MiB
        r = golden_manifest["merged"]["ranges"][1]
        assert sha256_of(img, r["offset"], r["length"]) == r["sha256"]
    finally:
        img.close()
    checked = validate(str(p))          # the supervisor's check open: no block cache
    assert not isinstance(checked.layers[0], BlockCache)
    checked.close()
