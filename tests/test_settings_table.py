"""overlaybd.json's settings table (overlaybd/image/settings.py): every field declared once, and
parsing, defaults and the shipped conf/overlaybd.json follow from it."""

import dataclasses
import json
import pathlib

import pytest

import overlaybd
from overlaybd.errors import ConfigError
from overlaybd.image import schema
from overlaybd.image.settings import NOT_IMPLEMENTED, ServiceConfig, parse_download, shipped_config
from overlaybd.registry.client import HttpClient

REPO = pathlib.Path(__file__).resolve().parent.parent

# upstream's overlaybd.json fields (spec §5): the shipped file uses no other name
UPSTREAM = {
    "logConfig.logLevel", "logConfig.logPath", "logConfig.logSizeMB", "logConfig.logRotateNum",
    "cacheConfig.cacheType", "cacheConfig.cacheDir", "cacheConfig.cacheSizeGB",
    "gzipCacheConfig.enable", "gzipCacheConfig.cacheDir", "gzipCacheConfig.cacheSizeGB",
    "credentialConfig.mode", "credentialConfig.path", "ioEngine", "download.enable",
    "download.delay", "download.delayExtra", "download.maxMBps", "enableAudit", "auditPath",
    "registryFsVersion", "prefetchConfig.concurrency"}
OURS = {"workerConfig.chunkSizeKB", "workerConfig.cacheSizeMB", "workerConfig.heartbeatSec"}


def _keys(doc, prefix=""):
    for k, v in doc.items():
        if isinstance(v, dict):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield prefix + k


def _settings(cls=ServiceConfig, prefix=""):
    """(attribute path, JSON key path, Setting, field) for every row of the table."""
    for f in dataclasses.fields(cls):
        m = f.metadata.get("overlaybd.json")
        if isinstance(m, schema.Section):
            yield from _settings(f.type, f"{prefix}{f.name}.")
        elif m is not None:
            yield f"{prefix}{f.name}", schema.json_name(ServiceConfig, prefix + f.name), m, f


def _get(obj, dotted):
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


def _doc(json_path, value, **top):
    doc = dict(top)
    *parents, last = json_path.split(".")
    d = doc
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value
    return doc


def test_shipped_conf_is_the_tables():
    text = (REPO / "conf" / "overlaybd.json").read_text()
    assert text == shipped_config(), "conf/overlaybd.json differs from the table: run make conf"
    assert set(_keys(json.loads(text))) == UPSTREAM | OURS


def test_an_empty_file_gives_the_declared_defaults():
    s = ServiceConfig.from_dict({})
    s.raw = {}
    s.path = ""
    assert s == ServiceConfig()
    assert ServiceConfig().user_agent == f"overlaybd/{overlaybd.__version__}"
    assert HttpClient().user_agent == ServiceConfig().user_agent
    assert HttpClient().timeout == ServiceConfig().registry_timeout == 30
    assert ServiceConfig().credential.path == "/opt/overlaybd/cred.json"


def _other(m, f, default):
    """A valid non-default value for a row."""
    if m.choices:
        return next(c for c in m.choices if c != default)
    if m.json_type is str:                      # logConfig.fileMode
        return "0640", 0o640
    t = f.type
    if t is bool:
        return not default
    if t is str:
        return "/x/" + f.name
    v = default * 2 if default else 8
    return v, v


ROWS = list(_settings())


SELECTORS = {"logConfig": ("logPath", "/sel.log"), "cacheConfig": ("cacheType", "download"),
             "credentialConfig": ("mode", "http")}


def _selected(key, value):
    """A document setting ``key``, with its section selected (else its keys are not read)."""
    doc = _doc(key, value)
    section, _, name = key.partition(".")
    if section in SELECTORS and name != SELECTORS[section][0]:
        doc[section][SELECTORS[section][0]] = SELECTORS[section][1]
    return doc


@pytest.mark.parametrize("attr,key,m,f", ROWS, ids=[r[1] for r in ROWS])
def test_every_field_is_read_under_its_key(attr, key, m, f):
    value = _other(m, f, _get(ServiceConfig(), attr))
    given, want = value if isinstance(value, tuple) else (value, value)
    assert _get(ServiceConfig.from_dict(_selected(key, given)), attr) == want
    with pytest.raises(ConfigError) as e:
        ServiceConfig.from_dict(_selected(key, [1]))            # no field is an array
    assert e.value.field == key


def test_legacy_keys_count_only_while_the_section_is_not_selected():
    legacy = {"logLevel": 3, "logPath": "/legacy.log", "cacheType": "download",
              "registryCacheDir": "/legacy/cache", "registryCacheSizeGB": 9,
              "credentialFilePath": "/legacy/cred.json"}
    s = ServiceConfig.from_dict(legacy)
    assert (s.log.level, s.log.path, s.cache.type, s.cache.dir, s.cache.size_gb,
            s.credential.mode, s.credential.path) == (3, "/legacy.log", "download", "/legacy/cache",
                                                      9, "file", "/legacy/cred.json")
    s = ServiceConfig.from_dict({**legacy, "logConfig": {"logPath": "/new.log", "logSizeMB": 0},
                                 "cacheConfig": {"cacheType": "file"},
                                 "credentialConfig": {"mode": "file"}})
    assert (s.log.level, s.log.path, s.log.size_mb, s.cache.dir, s.credential.path) == (
        1, "/new.log", 1, "/opt/overlaybd/registry_cache", "")   # a selected section: no path
    # read in either mode: the refill unit and the file mode
    s = ServiceConfig.from_dict({**legacy, "cacheConfig": {"refillSize": 1 << 20},
                                 "logConfig": {"fileMode": "0644"}})
    assert (s.cache.refill_size, s.log.file_mode, s.cache.dir) == (1 << 20, 0o644, "/legacy/cache")


@pytest.mark.parametrize("key,value,says", [
    ("workerConfig.chunkSizeKB", 768, "power of two"),
    ("cacheConfig.refillSize", 6 << 10, "power of two multiple of 4096"),
    ("exporterConfig.port", 70000, "TCP port"),
    ("logConfig.fileMode", "0755", "without execute bits"),
    ("download.tryCnt", 0, ">= 1"),
    ("ioEngine", 7, "one of"),
])
def test_checks_name_the_file_and_field(tmp_path, key, value, says):
    p = tmp_path / "overlaybd.json"
    with pytest.raises(ConfigError) as e:
        ServiceConfig.from_dict(_doc(key, value), str(p))
    assert (e.value.path, e.value.field) == (str(p), key)
    assert says in str(e.value)


def test_image_download_overrides_the_global_one():
    base = ServiceConfig.from_dict({"download": {"enable": True, "delay": 7}}).download
    d = parse_download(schema.Obj({"maxMBps": 5, "delayExtra": 0}, "config.v1.json"), base)
    assert (d.enable, d.delay, d.max_mbps, d.delay_extra, d.try_cnt) == (True, 7, 5, 30, 5)


def test_unimplemented_rows_use_the_tables_names():
    names = {attr: key for attr, key, _, _ in ROWS}
    assert [row[0] for row in NOT_IMPLEMENTED] == [names[row[1]] for row in NOT_IMPLEMENTED]


def test_readme_states_the_tables_defaults():
    """README's table of the keys this implementation adds gives the table's defaults."""
    text = (REPO / "README.md").read_text()
    table = text.split("Keys this implementation adds:", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    rows = {key: (m, f) for _, key, m, f in ROWS}
    checked = 0
    for line in table.splitlines()[2:]:
        key, default = (c.strip() for c in line.strip("|").split("|")[:2])
        key = key.split("`")[1]
        try:
            stated = json.loads(default)
        except ValueError:
            continue                            # prose ("0 on one or two CPUs, else ...")
        m, f = rows[key]
        value = f.default
        assert (m.encode(value) if m.encode else value) == stated, key
        checked += 1
    assert checked >= 10
