"""Files the daemon creates that hold image data are 0600, its folders 0700, whatever the
umask; a credential file others can read gets one warning."""

import hashlib
import json
import os
import stat
import sys

import pytest
from loguru import logger

from overlaybd.cache import open_remote_layer, start_background_download
from overlaybd.image import open_image
from overlaybd.image.settings import ServiceConfig
from overlaybd.registry import CredentialProvider
from tests.helpers.env import GOLDEN
from tests.helpers.image import write_config
from tests.helpers.registry import service_config


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture(params=[0, 0o022], ids=["umask000", "umask022"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.mark.registry
def test_file_cache_folder_and_blobs_are_private(registry_none, tmp_path, umask):
    data = os.urandom(300_000)
    url = registry_none.push(data)
    cache = tmp_path / "opt" / "cache"                  # neither folder exists yet
    svc = service_config(tmp_path, cacheConfig={"cacheDir": str(cache)})
    f = open_remote_layer(url, {"digest": url.rsplit("/", 1)[1], "size": len(data)}, svc)
    try:
        assert f.pread(len(data), 0) == data
    finally:
        f.close()
    blobs = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert blobs and all(mode(p) == 0o600 for p in blobs)
    assert mode(cache) == 0o700
    assert mode(tmp_path / "opt") == 0o755              # a parent we made: not world-writable


@pytest.mark.registry
def test_download_files_are_private(registry_none, tmp_path, umask):
    data = os.urandom(200_000)
    url = registry_none.push(data)
    d = tmp_path / "layer"
    svc = service_config(tmp_path, cacheConfig={"cacheType": "download"},
                         download={"enable": True, "delay": 0, "delayExtra": 1, "maxMBps": 0})
    lower = {"digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data), "dir": str(d)}
    f = open_remote_layer(url, lower, svc)
    try:
        assert f.pread(1000, 0) == data[:1000]          # the download cache fills .download
        assert mode(d) == 0o700 and mode(d / ".download") == 0o600
        h = start_background_download([f], svc.download)
        assert h.done.wait(60)
        assert h.results == {str(d): "switched"}
    finally:
        f.close()
    assert (d / "overlaybd.commit").read_bytes() == data
    assert mode(d / "overlaybd.commit") == 0o600


def test_result_file_is_private(tmp_path, umask):
    rf = tmp_path / "init-debug.log"
    svc = ServiceConfig.from_dict({"enableAudit": False})
    open_image(str(write_config(tmp_path / "c.json", [GOLDEN / "layer1.lsmt"], resultFile=str(rf))),
               svc).close()
    assert rf.read_text() == "success" and mode(rf) == 0o600


@pytest.fixture
def warnings():
    got = []
    hid = logger.add(lambda m: got.append(m.record["message"]), level="WARNING")
    yield got
    logger.remove(hid)


@pytest.mark.parametrize("perm, who", [(0o644, "group and others"), (0o604, "others"),
                                       (0o640, "group"), (0o600, None), (0o620, None)],
                         ids=["0644", "0604", "0640", "0600", "0620"])
def test_credential_file_readable_by_others_warns_once(tmp_path, warnings, perm, who):
    cred = tmp_path / "cred.json"
    cred.write_text(json.dumps({"auths": {"reg.io": {"auth": "dTpw"}}}))
    os.chmod(cred, perm)
    p = CredentialProvider("file", str(cred))
    p.check_file()
    for _ in range(3):
        assert p.get("https://reg.io/v2/a/blobs/sha256:00") == ("u", "p")
    assert CredentialProvider("file", str(cred)).get("https://reg.io/v2/a/blobs/x/y") == ("u", "p")
    mine = [m for m in warnings if str(cred) in m]
    if who is None:
        assert mine == []
    else:
        assert mine == [f"credential file {cred} is readable by {who} (mode 0{perm:o}); it holds "
                        "registry passwords: chmod 600 it"]


def test_daemon_warns_about_an_exposed_credential_file_at_start(tmp_path, monkeypatch):
    from overlaybd.tools import tcmu as tool
    cred = tmp_path / "cred.json"
    cred.write_text("{}")
    os.chmod(cred, 0o644)
    log = tmp_path / "obd.log"
    cfg = tmp_path / "overlaybd.json"
    cfg.write_text(json.dumps({"logConfig": {"logPath": str(log)},
                               "credentialConfig": {"mode": "file", "path": str(cred)}}))
    monkeypatch.setattr(tool, "MODULE_DIR", str(tmp_path / "no-such-module"))
    try:
        assert tool.main([str(cfg)]) == 1
    finally:
        logger.remove()
        logger.add(sys.stderr)
    lines = [x for x in log.read_text().splitlines() if f"credential file {cred}" in x]
    assert len(lines) == 1 and "|WARN |" in lines[0] and "mode 0644" in lines[0]
