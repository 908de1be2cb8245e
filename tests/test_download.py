"""Background download (spec §8) against the real loopback registry."""

import hashlib
import os
import random
import threading

import pytest

from overlaybd.cache import open_remote_layer, start_background_download

# the registry fixtures (registry_none, registry_factory, ...) are used by name
from tests.helpers.registry import service_config

pytestmark = pytest.mark.registry
KiB = 1024


def _svc(tmp_path, **dl):
    return service_config(tmp_path, download={"enable": True, "delay": 0, "delayExtra": 1, "maxMBps": 0,
                                              "blockSize": 64 * KiB, "tryCnt": 2, **dl})


def _lower(url, data, d):
    return {"digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data), "dir": str(d)}


def _bk_lines(tmp_path):
    return [ln for ln in open(tmp_path / "audit.log").read().splitlines() if "|bk_download[" in ln]


def test_download_verifies_switches_and_survives_restart(registry_factory, tmp_path):
    reg = registry_factory("none")
    data = os.urandom(1536 * KiB + 99)
    url = reg.push(data)
    svc = _svc(tmp_path)
    lower = _lower(url, data, tmp_path / "layer")
    f = open_remote_layer(url, lower, svc)
    errors, stop = [], threading.Event()

    def reader():                          # keeps reading while the layer switches
        rnd = random.Random(1)
        while not stop.is_set():
            off = rnd.randrange(len(data))
            try:
                if f.pread(10000, off) != data[off:off + 10000]:
                    errors.append(f"wrong bytes at {off}")
            except Exception as e:         # noqa: BLE001 - any error fails the test
                errors.append(repr(e))
    t = threading.Thread(target=reader)
    t.start()
    h = start_background_download([f], svc.download)
    try:
        assert h.done.wait(60)
    finally:
        stop.set()
        t.join()
    assert errors == []
    commit = tmp_path / "layer" / "overlaybd.commit"
    assert h.results == {str(tmp_path / "layer"): "switched"}
    assert commit.read_bytes() == data and not (tmp_path / "layer" / ".download").exists()
    assert f.local and f.path == str(commit)
    assert f.pread(len(data), 0) == data
    lines = _bk_lines(tmp_path)
    assert len(lines) == -(-len(data) // (64 * KiB)) and f"[pathname={url}]" in lines[0]
    f.close()
    reg.stop()                             # "restart": the registry is gone, the layer is local
    g = open_remote_layer(url, lower, svc)
    try:
        assert g.local and g.pread(len(data), 0) == data
    finally:
        g.close()


def test_partial_download_is_resumed(registry_none, tmp_path):
    data = os.urandom(1024 * KiB)
    url = registry_none.push(data)
    d = tmp_path / "layer"
    d.mkdir()
    with open(d / ".download", "wb") as part:            # first half already there, rest a hole
        part.write(data[:512 * KiB])
        part.truncate(len(data))
    svc = _svc(tmp_path)
    f = open_remote_layer(url, _lower(url, data, d), svc)
    h = start_background_download([f], svc.download)
    assert h.done.wait(60)
    assert (d / "overlaybd.commit").read_bytes() == data
    offsets = sorted(int(ln.split("[offset=")[1].split("]")[0]) for ln in _bk_lines(tmp_path))
    assert offsets == list(range(512 * KiB, 1024 * KiB, 64 * KiB))
    f.close()


def test_digest_mismatch_fails_after_try_count(registry_none, tmp_path):
    data = os.urandom(200 * KiB)
    url = registry_none.push(data)
    svc = _svc(tmp_path, tryCnt=2)
    lower = {**_lower(url, data, tmp_path / "layer"), "digest": "sha256:" + "0" * 64}
    f = open_remote_layer(url, lower, svc)
    h = start_background_download([f], svc.download)
    assert h.done.wait(60)
    assert h.results[str(tmp_path / "layer")].startswith("failed: ")
    assert not (tmp_path / "layer" / "overlaybd.commit").exists()
    assert not f.local and f.pread(100, 0) == data[:100]
    # the second attempt re-downloaded every block (no hole skipping after a mismatch)
    assert len(_bk_lines(tmp_path)) == 2 * (200 * KiB // (64 * KiB) + 1)
    f.close()


def test_stop_during_delay_and_disabled_download(registry_none, tmp_path):
    data = os.urandom(10 * KiB)
    url = registry_none.push(data)
    svc = _svc(tmp_path, delay=3600)
    f = open_remote_layer(url, _lower(url, data, tmp_path / "layer"), svc)
    h = start_background_download([f], svc.download)
    h.stop()
    assert h.done.is_set() and not (tmp_path / "layer" / "overlaybd.commit").exists()
    assert start_background_download([f], _svc(tmp_path, enable=False).download) is None
    assert start_background_download([open_remote_layer(url, {}, svc)], svc.download) is None   # no dir
    f.close()
