"""Whole images from the real registry on loopback: the image opener over the cache."""

import hashlib
import re

import pytest

from overlaybd.image import ImageOpenError, open_image
from tests.helpers.image import sha256_of
from tests.helpers.registry import push_image, service_config, write_cfg

pytestmark = pytest.mark.registry


def test_token_registry_behind_cdn_reads_golden_image(tmp_path, registry_redirect, golden_manifest):
    names = golden_manifest["stacks"]["lz4"]
    base, lowers = push_image(registry_redirect, "img/golden", names)
    svc = service_config(tmp_path)
    registry_redirect.cred_file(svc.credential.path)
    img = open_image(write_cfg(tmp_path, base, lowers), svc)
    try:
        assert (tmp_path / "result").read_text() == "success"
        assert sha256_of(img) == golden_manifest["merged"]["sha256"]
    finally:
        img.close()
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert cached == sorted(lo["digest"] for lo in lowers)
    audit = (tmp_path / "audit.log").read_text().splitlines()
    line = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}\|AUDIT\|th=[0-9A-F]{16}\|"
                      r"download\[pathname=(\S+?)\]\[offset=\d+\]\[size=\d+\]\[latency=\d+\]$")
    urls = {m.group(1) for m in map(line.match, audit) if m}
    assert urls == {f"{base}/{lo['digest']}" for lo in lowers}


def test_wrong_password_result_file(tmp_path, registry_basic, golden_manifest):
    base, lowers = push_image(registry_basic, "img/pw", golden_manifest["stacks"]["lz4"][:1])
    svc = service_config(tmp_path)
    registry_basic.cred_file(svc.credential.path, password="wrong")
    with pytest.raises(ImageOpenError):
        open_image(write_cfg(tmp_path, base, lowers), svc)
    url = f"{base}/{lowers[0]['digest']}"
    assert (tmp_path / "result").read_text() == \
        f"failed:failed to open remote file {url}: Authentication failed"


def test_background_download_switches_and_survives_registry_stop(tmp_path, registry_factory,
                                                                 golden_manifest):
    inst = registry_factory("none")
    base, lowers = push_image(inst, "img/dl", golden_manifest["stacks"]["zstd"])
    for i, lo in enumerate(lowers):
        lo["dir"] = str(tmp_path / f"layer{i}")
    svc = service_config(tmp_path)
    cfg = write_cfg(tmp_path, base, lowers,
                    download={"enable": True, "delay": 0, "delayExtra": 1, "maxMBps": 0})
    img = open_image(cfg, svc)
    try:
        assert img.download is not None and img.download.done.wait(60)
        assert all(v == "switched" for v in img.download.results.values()), img.download.results
        assert sha256_of(img) == golden_manifest["merged"]["sha256"]
    finally:
        img.close()
    for lo in lowers:
        assert hashlib.sha256(open(f"{lo['dir']}/overlaybd.commit", "rb").read()).hexdigest() == \
            lo["digest"].split(":")[1]
    inst.stop()
    img = open_image(cfg, svc)          # after a "restart": local, with the registry gone
    try:
        assert sha256_of(img) == golden_manifest["merged"]["sha256"]
    finally:
        img.close()


def test_cache_dir_without_hole_reporting_is_bypassed(tmp_path, registry_none, golden_manifest,
                                                      monkeypatch):
    """On a filesystem that calls every byte data (hostfs, some FUSE mounts), an empty cache file
    would look fully cached: the layer must be read from the registry instead, never as zeros."""
    import overlaybd.cache as cache
    monkeypatch.setattr(cache, "reports_holes", lambda d: False)
    base, lowers = push_image(registry_none, "img/noholes", golden_manifest["stacks"]["lz4"])
    svc = service_config(tmp_path)
    img = open_image(write_cfg(tmp_path, base, lowers), svc)
    try:
        assert sha256_of(img) == golden_manifest["merged"]["sha256"]
    finally:
        img.close()
    assert not list((tmp_path / "cache").glob("sha256:*"))
