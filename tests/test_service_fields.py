"""Every accepted field works or says it does not: one warning per inert overlaybd.json field at
start, TurboOCI images refused through their resultFile, the shipped config enables nothing
inert."""

import json
import pathlib
import re

import pytest
from loguru import logger

from overlaybd.image import ImageOpener, ImageOpenError, load_service_config, open_image
from overlaybd.image.config import NOT_IMPLEMENTED as IMAGE_NOT_IMPLEMENTED
from overlaybd.image.settings import NOT_IMPLEMENTED, ServiceConfig, unimplemented_fields
from overlaybd.lsmt import create_rw
from tests.helpers.env import GOLDEN
from tests.helpers.image import write_config

REPO = pathlib.Path(__file__).resolve().parent.parent

# a non-default value for every field that has ever been inert; the expected warnings come
# from the table, so a field that gets implemented (its row deleted) simply stops warning
INERT = {"gzipCacheConfig": {"enable": True}, "exporterConfig": {"enable": True, "port": 9999},
         "serviceConfig": {"enable": True}, "prefetchConfig": {"concurrency": 4}, "ioEngine": 2,
         "enableThread": True, "cacheConfig": {"cacheType": "ocf"}, "registryFsVersion": "v1"}


@pytest.fixture
def captured():
    """Loguru records (level name, message) while the test runs."""
    recs = []
    hid = logger.add(lambda m: recs.append((m.record["level"].name, m.record["message"])), level=0)
    yield recs
    logger.remove(hid)


def _warned_fields(lines):
    names = [row[0] for row in NOT_IMPLEMENTED]
    return {n: sum(1 for x in lines if f": {n} = " in x and "is not implemented" in x) for n in names}


def test_daemon_warns_once_per_inert_field_at_start(tmp_path, monkeypatch):
    from overlaybd.tools import tcmu as tool
    log = tmp_path / "obd.log"
    cfg = tmp_path / "overlaybd.json"
    cfg.write_text(json.dumps({**INERT, "logConfig": {"logPath": str(log)},
                               "cacheConfig": {"cacheType": "ocf", "cacheDir": str(tmp_path / "c")},
                               "credentialConfig": {"mode": "file", "path": str(tmp_path / "cred")}}))
    monkeypatch.setattr(tool, "MODULE_DIR", str(tmp_path / "no-such-module"))
    try:
        assert tool.main([str(cfg)]) == 1        # stops at the module check, after the warnings
    finally:
        logger.remove()
        logger.add(__import__("sys").stderr)
    lines = [x for x in log.read_text().splitlines() if "|WARN |" in x]
    assert _warned_fields(lines) == {row[0]: 1 for row in NOT_IMPLEMENTED}
    assert all(str(cfg) in x for x in lines if "is not implemented" in x)
    assert any("ioEngine = 2 is not implemented" in x for x in lines)


def test_defaults_and_shipped_config_warn_about_nothing(captured):
    assert unimplemented_fields(ServiceConfig()) == []
    shipped = load_service_config(str(REPO / "conf" / "overlaybd.json"))
    assert unimplemented_fields(shipped) == []
    assert shipped.gzip_cache.enable is False
    # inert settings under a disabled feature are not worth a warning; implemented values neither
    quiet = ServiceConfig.from_dict({"exporterConfig": {"port": 1}, "cacheConfig": {"cacheType": "download"},
                                     "registryFsVersion": "v2", "ioEngine": 1})
    assert unimplemented_fields(quiet) == []


def test_tool_with_service_config_warns_once_per_field(tmp_path, capsys):
    from overlaybd.tools import export
    svc = tmp_path / "overlaybd.json"
    svc.write_text(json.dumps({**INERT, "cacheConfig": {"cacheType": "ocf", "cacheDir": str(tmp_path / "c")},
                               "enableAudit": False}))
    cfg = write_config(tmp_path / "config.v1.json", [GOLDEN / "layer1.lsmt"])
    try:
        assert export.main(["--service_config_path", str(svc), "--length", "4096", str(cfg),
                            str(tmp_path / "out")]) == 0
    finally:
        logger.remove()
        logger.add(__import__("sys").stderr)
    lines = [x for x in capsys.readouterr().err.splitlines() if "|WARNING|" in x]
    assert _warned_fields(lines) == {row[0]: 1 for row in NOT_IMPLEMENTED}
    assert (tmp_path / "out").stat().st_size == 4096


def _svc(tmp_path):
    return ServiceConfig.from_dict({"enableAudit": False, "cacheConfig": {
        "cacheType": "file", "cacheDir": str(tmp_path / "cache")}})


REFUSED = [row[0] for row in IMAGE_NOT_IMPLEMENTED if row[2]]


@pytest.mark.parametrize("field", REFUSED)
@pytest.mark.parametrize("target_exists", [True, False])
def test_turbooci_image_is_refused_naming_the_field(tmp_path, field, target_exists):
    """A TurboOCI layer read as a plain layer would give wrong bytes: the open fails and the
    resultFile names the field, whether or not the target file exists."""
    target = tmp_path / "target.tar"
    if target_exists:
        target.write_bytes(b"\0" * 8192)
    key = field.split(".", 1)[1]
    value = "sha256:" + "b" * 64 if key == "targetDigest" else str(target)
    rf = tmp_path / "init-debug.log"
    lowers = [{"file": str(GOLDEN / "layer1.lsmt")}, {"file": str(GOLDEN / "layer2.lsmt")}]
    extra = {"resultFile": str(rf)}
    if field.startswith("lowers[]"):
        lowers[1][key] = value
        name = f"lowers[1].{key}"
    else:
        create_rw(str(tmp_path / "upper.data"), str(tmp_path / "upper.index"), 1 << 30).close()
        extra["upper"] = {"index": str(tmp_path / "upper.index"), "data": str(tmp_path / "upper.data"),
                          key: value}
        name = field
    cfg = write_config(tmp_path / "config.v1.json", lowers, **extra)
    with pytest.raises(ImageOpenError) as ei:
        open_image(str(cfg), _svc(tmp_path))
    text = rf.read_text()
    assert text == f"failed:{name} is set: {ei.value.reason.split(': ', 1)[1]}"
    assert re.fullmatch(rf"failed:{re.escape(name)} is set: TurboOCI .*not implemented", text)
    with pytest.raises(ImageOpenError):                 # the workers' opener refuses too
        ImageOpener(str(cfg))()


def test_readme_limitations_name_every_unimplemented_field():
    text = (REPO / "README.md").read_text()
    section = text.split("## Limitations", 1)[1].split("\n## ", 1)[0]
    for row in (*NOT_IMPLEMENTED, *IMAGE_NOT_IMPLEMENTED):
        parts = [p for p in row[0].split(".") if p not in ("lowers[]", "upper", "enable")]
        assert any(f"`{p}" in section for p in parts), row[0]
