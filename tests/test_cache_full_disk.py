"""A full cache disk (a real tmpfs filled up): the hole probe cannot write its probe file, and
the warning says so, naming the folder, instead of blaming the filesystem for not reporting
holes; the layer is read from the registry meanwhile; once space is back the cache is used
(the failed probe is not remembered as "no holes")."""

import errno
import os

import pytest

from overlaybd.cache import sparse
from overlaybd.image import open_image
from tests.helpers.image import sha256_of
from tests.helpers.registry import push_image, service_config, write_cfg
from tests.helpers.tools import fill, tmpfs


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch):
    """Probe results are kept per st_dev, and a new tmpfs may get the number of an old one."""
    monkeypatch.setattr(sparse, "_HOLE_SUPPORT", {})


def test_probe_on_a_full_disk_raises_the_cause(tmp_path):
    with tmpfs(tmp_path / "fs", "256k") as fs:
        filler = fill(fs)
        with pytest.raises(OSError) as ei:
            sparse.reports_holes(str(fs))
        assert ei.value.errno == errno.ENOSPC and ei.value.filename == str(fs)
        assert not [n for n in os.listdir(fs) if n.startswith(".hole-probe")]
        os.unlink(filler)
        assert sparse.reports_holes(str(fs)) is True


def reads_golden(cfg, svc, manifest):
    img = open_image(cfg, svc)
    try:
        assert sha256_of(img) == manifest["merged"]["sha256"]
    finally:
        img.close()


@pytest.mark.registry
def test_full_cache_disk_warns_with_the_real_cause(tmp_path, registry_none, golden_manifest):
    from loguru import logger
    base, lowers = push_image(registry_none, "img/fullcache", golden_manifest["stacks"]["lz4"])
    warnings = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")
    try:
        with tmpfs(tmp_path / "cache", "256k") as cache:
            svc = service_config(tmp_path)
            filler = fill(cache)
            reads_golden(write_cfg(tmp_path, base, lowers), svc, golden_manifest)
            full = [w for w in warnings if "no space left on the cache disk" in w]
            assert full and all(str(cache) in w for w in full), warnings
            assert not [w for w in warnings if "does not report holes" in w], warnings
            os.unlink(filler)                 # room again: this time the cache is used
            reads_golden(write_cfg(tmp_path, base, lowers), svc, golden_manifest)
            cached = [f for _, _, fs in os.walk(cache) for f in fs if f.startswith("sha256:")]
            assert cached
    finally:
        logger.remove(sink)
