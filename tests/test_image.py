"""Opening images from config.v1.json: every golden stack, resultFile, config errors."""

import json
import os
import shutil

import pytest

from overlaybd.errors import ConfigError
from overlaybd.image import ImageOpenError, load_image_config, open_image, parse_cfgstring
from overlaybd.image.settings import ServiceConfig, load_service_config
from tests.helpers.env import GOLDEN
from tests.helpers.image import sha256_of, write_config


@pytest.fixture
def svc(tmp_path):
    return ServiceConfig.from_dict({"enableAudit": False, "cacheConfig": {
        "cacheType": "file", "cacheDir": str(tmp_path / "cache")}})


@pytest.mark.parametrize("stack", ["plain", "lz4", "zstd", "mixed"])
def test_golden_stacks_read_as_manifest(tmp_path, golden_manifest, stack, svc):
    files = [GOLDEN / f for f in golden_manifest["stacks"][stack]]
    cfg = write_config(tmp_path / "config.v1.json", files, resultFile=str(tmp_path / "result"))
    img = open_image(str(cfg), svc)
    try:
        assert img.read_only and img.size == golden_manifest["virtual_size"]
        assert sha256_of(img) == golden_manifest["merged"]["sha256"]
        for r in golden_manifest["merged"]["ranges"]:
            assert sha256_of(img, r["offset"], r["length"]) == r["sha256"], r
    finally:
        img.close()
    assert (tmp_path / "result").read_text() == "success"


def test_partial_stacks_and_merged_files(tmp_path, golden_manifest, svc):
    layers = golden_manifest["layers"]
    for i, layer in enumerate(layers):
        files = [GOLDEN / lo["files"]["lz4"] for lo in layers[:i + 1]]
        img = open_image(str(write_config(tmp_path / f"c{i}.json", files)), svc, write_result=False)
        with_all = sha256_of(img)
        img.close()
        assert with_all == layer["view_of_layers_1_to_this_sha256"]
    for name in ("merged.lsmt", "merged.lz4.zfile"):
        img = open_image(str(write_config(tmp_path / "m.json", [GOLDEN / name])), svc,
                         write_result=False)
        assert sha256_of(img) == golden_manifest["merged"]["sha256"]
        img.close()


def test_relative_paths_and_dir_lowers(tmp_path, golden_manifest, svc):
    """The golden config uses relative paths; a lower given by dir finds overlaybd.commit."""
    for f in ("layer1.lsmt", "layer2.lsmt", "layer3.lsmt", "config.v1.json"):
        shutil.copy(GOLDEN / f, tmp_path / f)
    img = open_image(str(tmp_path / "config.v1.json"), svc, write_result=False)
    assert sha256_of(img) == golden_manifest["merged"]["sha256"]
    img.close()
    d = tmp_path / "layer1dir"
    d.mkdir()
    shutil.copy(GOLDEN / "layer1.lz4.zfile", d / "overlaybd.commit")
    img = open_image(str(write_config(tmp_path / "d.json", [{"dir": str(d)}])), svc,
                     write_result=False)
    assert sha256_of(img) == golden_manifest["layers"][0]["view_of_this_layer_alone_sha256"]
    img.close()


@pytest.mark.parametrize("doc,field", [
    ({"lowers": "x"}, "lowers"),
    ({"lowers": [{"file": 3}]}, "lowers[0].file"),
    ({"lowers": [{"digest": "sha256:xyz"}]}, "lowers[0].digest"),
    ({"lowers": [{"file": "a", "size": -1}]}, "lowers[0].size"),
    ({"lowers": [{"file": "a"}], "upper": {"index": "i"}}, "upper.data"),
    ({"lowers": [{"file": "a"}], "resultFile": ["r"]}, "resultFile"),
    ({"lowers": [{"file": "a"}], "accelerationLayer": "yes"}, "accelerationLayer"),
    ({"lowers": [{"file": "a"}], "download": {"enable": 1}}, "download.enable"),
    ({}, "lowers"),
])
def test_config_errors_name_the_field(tmp_path, doc, field):
    p = tmp_path / "config.v1.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as e:
        load_image_config(str(p))
    assert e.value.field == field and str(p) in str(e.value)


def test_unknown_keys_ignored_and_cfgstring(tmp_path):
    p = write_config(tmp_path / "c.json", [GOLDEN / "layer1.lsmt"], futureKey={"x": 1})
    assert len(load_image_config(str(p)).lowers) == 1
    assert parse_cfgstring("overlaybd//var/lib/x/config.v1.json;123") == \
        ("/var/lib/x/config.v1.json", "123")
    assert parse_cfgstring("overlaybd//a/b.json") == ("/a/b.json", "")


def test_result_file_reasons(tmp_path, svc):
    rf = tmp_path / "init-debug.log"
    # a missing local file
    cfg = write_config(tmp_path / "a.json", [tmp_path / "nope.lsmt"], resultFile=str(rf))
    with pytest.raises(ImageOpenError):
        open_image(str(cfg), svc)
    assert rf.read_text() == f"failed:failed to open local file {tmp_path / 'nope.lsmt'}"
    # a blob that is not a layer
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x01" * 10000)
    cfg = write_config(tmp_path / "b.json", [junk], resultFile=str(rf))
    with pytest.raises(ImageOpenError):
        open_image(str(cfg), svc)
    assert rf.read_text().startswith("failed:failed to open layer")
    # a remote layer without repoBlobUrl
    cfg = write_config(tmp_path / "c.json", [{"digest": "sha256:" + "a" * 64}], resultFile=str(rf))
    with pytest.raises(ImageOpenError):
        open_image(str(cfg), svc)
    assert rf.read_text() == "failed:empty repoBlobUrl"
    # a config with a type error still reports through its resultFile
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"lowers": [{"file": 1}], "resultFile": str(rf)}))
    with pytest.raises(ImageOpenError):
        open_image(str(p), svc)
    assert rf.read_text().startswith("failed:") and "lowers[0].file" in rf.read_text()
    # and success overwrites it
    cfg = write_config(tmp_path / "e.json", [GOLDEN / "layer1.lsmt"], resultFile=str(rf))
    open_image(str(cfg), svc).close()
    assert rf.read_text() == "success"


def test_service_config_fields(tmp_path):
    p = tmp_path / "overlaybd.json"
    p.write_text(json.dumps({"logConfig": {"logLevel": 0, "logPath": "/tmp/x.log",
                                           "logRotateNum": 99},
                             "registryCacheDir": "/tmp/legacy", "registryCacheSizeGB": 2,
                             "credentialFilePath": "/tmp/cred.json",
                             "download": {"enable": True, "delayExtra": 0},
                             "workerConfig": {"workers": 0, "chunkSizeKB": 256}}))
    s = load_service_config(str(p))
    assert (s.log.level, s.log.path, s.log.rotate_num) == (0, "/tmp/x.log", 30)
    assert (s.cache.type, s.cache.dir, s.cache.size_gb) == ("file", "/tmp/legacy", 2)
    assert (s.credential.mode, s.credential.path) == ("file", "/tmp/cred.json")
    assert s.download.enable and s.download.delay_extra == 30 and s.download.delay == 300
    assert (s.worker.workers, s.worker.chunk_size_kb) == (0, 256)
    for bad, field in [({"cacheConfig": {"cacheType": "memory"}}, "cacheConfig.cacheType"),
                       ({"cacheConfig": {"refillSize": 5000}}, "cacheConfig.refillSize"),
                       ({"ioEngine": 3}, "ioEngine"), ({"enableAudit": "no"}, "enableAudit")]:
        p.write_text(json.dumps(bad))
        with pytest.raises(ConfigError) as e:
            load_service_config(str(p))
        assert e.value.field == field
    with pytest.raises(ConfigError):
        load_service_config(str(tmp_path / "missing.json"))


def test_default_worker_count_follows_the_cpus_we_may_run_on(tmp_path):
    from overlaybd.cpus import default_workers
    p = tmp_path / "overlaybd.json"
    p.write_text("{}")
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(saved)})     # one CPU: inline, a worker only adds hand-offs
        assert load_service_config(str(p)).worker.workers == 0
        if len(saved) > 1:
            os.sched_setaffinity(0, set(sorted(saved)[:2]))   # two: inline still wins
            assert load_service_config(str(p)).worker.workers == 0
        if len(saved) > 2:
            os.sched_setaffinity(0, saved)
            assert load_service_config(str(p)).worker.workers == len(saved) - 1
    finally:
        os.sched_setaffinity(0, saved)
    assert [default_workers(n) for n in (1, 2, 3, 8)] == [0, 0, 2, 7]
