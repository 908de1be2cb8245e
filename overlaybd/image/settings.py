"""The global service config, ``/etc/overlaybd/overlaybd.json`` (spec §5).

Every upstream field is parsed under its current and legacy names; unknown keys are ignored;
a wrong type is a ConfigError naming the file and the field.  New keys of this implementation:
``workerConfig`` (the worker engine), ``proxyConfig`` (an HTTP(S) forward proxy for blob
reads), ``logConfig.fileMode`` (the mode of the log and audit files) and
``prefetchConfig.learn*`` (learned prefetch) and ``exporterConfig.address`` (where the metrics
endpoint listens).  Every field is declared once, in the dataclasses below: its JSON key,
legacy key, type, default and bounds (``schema.setting``); parsing, the defaults and the
shipped ``conf/overlaybd.json`` (:func:`shipped_config`, ``make conf``) follow from them.
"""

import json
import os
from dataclasses import dataclass, field

from loguru import logger

from .. import REGISTRY_TIMEOUT, SERVICE_CONFIG, USER_AGENT
from ..cpus import default_workers
from .schema import Obj, json_name, load_json, read, section, setting, shipped

DEFAULT_PATH = SERVICE_CONFIG
CACHE_TYPES = ("file", "download", "ocf")


def _at_least_1(v):
    return max(1, v)


def _rotations(v):
    return min(30, max(1, v))


def _power_of_two(v):
    if v & (v - 1):
        raise ValueError(f"must be a power of two, got {v}")
    return v


def _refill(v):
    if v % 4096 or v & (v - 1):
        raise ValueError(f"must be a power of two multiple of 4096, got {v}")
    return v


def _port(v):
    if v > 65535:
        raise ValueError(f"must be a TCP port (0-65535), got {v}")
    return v


def _file_mode(text):
    """An octal permission string ("0640"): read/write bits only, the owner's rw always set."""
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if mode < 0 or mode & ~0o666 or mode & 0o600 != 0o600:
        raise ValueError(f"must be an octal file mode between \"0600\" and \"0666\" without "
                         f"execute bits, got {text!r}")
    return mode


# The settings table: each field below is one overlaybd.json field, declared once -- its JSON
# key, legacy key, type, default, bounds and whether conf/overlaybd.json ships it.  Parsing
# (schema.read), the defaults and conf/overlaybd.json (schema.shipped, `make conf`) follow.
# The annotations are the JSON types (no `from __future__ import annotations` here: they must be
# classes, not strings).

@dataclass
class LogConfig:
    level: int = setting("logLevel", 1, legacy="logLevel", choices=(0, 1, 2, 3, 4), shipped=True)
    path: str = setting("logPath", "/var/log/overlaybd.log", legacy="logPath", shipped=True)
    size_mb: int = setting("logSizeMB", 10, minimum=0, convert=_at_least_1, shipped=True)
    rotate_num: int = setting("logRotateNum", 3, convert=_rotations, shipped=True)
    file_mode: int = setting("fileMode", 0o600, json_type=str, encode="{:04o}".format,
                             convert=_file_mode, always=True)  # new: the log and the audit file


@dataclass
class CacheConfig:
    type: str = setting("cacheType", "file", legacy="cacheType", choices=CACHE_TYPES, shipped=True)
    dir: str = setting("cacheDir", "/opt/overlaybd/registry_cache", legacy="registryCacheDir",
                       shipped=True)
    size_gb: float = setting("cacheSizeGB", 4, legacy="registryCacheSizeGB", minimum=0,
                             shipped=True)
    refill_size: int = setting("refillSize", 262144, minimum=4096, convert=_refill, always=True)
    block_size: int = setting("blockSize", 65536, minimum=4096)


@dataclass
class GzipCacheConfig:
    enable: bool = setting("enable", False, shipped=True)
    dir: str = setting("cacheDir", "/opt/overlaybd/gzip_cache", shipped=True)
    size_gb: float = setting("cacheSizeGB", 4, minimum=0, shipped=True)
    refill_size: int = setting("refillSize", 1048576, minimum=4096)


@dataclass
class CredentialConfig:
    mode: str = setting("mode", "file", shipped=True)
    path: str = setting("path", "/opt/overlaybd/cred.json", legacy="credentialFilePath",
                        selected_default="", shipped=True)
    timeout: int = setting("timeout", 1, minimum=0)
    client_cert_path: str = setting("client_cert_path", "")
    client_key_path: str = setting("client_key_path", "")
    server_ca_path: str = setting("server_ca_path", "")


@dataclass
class DownloadConfig:
    enable: bool = setting("enable", False, shipped=True)
    delay: int = setting("delay", 300, minimum=0, shipped=True, shipped_value=600)
    delay_extra: int = setting("delayExtra", 30, minimum=0, convert=lambda v: v or 30,
                               shipped=True)
    max_mbps: int = setting("maxMBps", 100, shipped=True)
    try_cnt: int = setting("tryCnt", 5, minimum=1)
    block_size: int = setting("blockSize", 262144, minimum=4096)


@dataclass
class P2PConfig:
    enable: bool = setting("enable", False)
    address: str = setting("address", "http://localhost:9731/accelerator")


@dataclass
class ExporterConfig:
    enable: bool = setting("enable", False)
    uri_prefix: str = setting("uriPrefix", "/metrics")
    port: int = setting("port", 9863, minimum=0, convert=_port)
    # us: the window of the rate and max-latency gauges
    update_interval: int = setting("updateInterval", 60000000, minimum=1)
    address: str = setting("address", "127.0.0.1")   # new: where to listen (upstream: everywhere)


@dataclass
class CertConfig:
    cert_file: str = setting("certFile", "")
    key_file: str = setting("keyFile", "")
    ca_file: str = setting("caFile", "")          # new: an extra CA trusted for registries


@dataclass
class ServiceEndpoint:
    enable: bool = setting("enable", False)
    address: str = setting("address", "http://127.0.0.1:9862")


@dataclass
class ProxyConfig:
    http_proxy: str = setting("httpProxy", "")
    https_proxy: str = setting("httpsProxy", "")
    no_proxy: str = setting("noProxy", "")
    ca_file: str = setting("caFile", "")


@dataclass
class WorkerConfig:
    workers: int = setting("workers", factory=default_workers, minimum=0)
    chunk_size_kb: int = setting("chunkSizeKB", 1024, minimum=4, convert=_power_of_two,
                                 shipped=True)
    cache_size_mb: int = setting("cacheSizeMB", 256, minimum=0, shipped=True)
    heartbeat_sec: float = setting("heartbeatSec", 5.0, minimum=0.1, shipped=True)


@dataclass
class PrefetchConfig:
    concurrency: int = setting("concurrency", 16, minimum=1, shipped=True)  # replay readers
    # new: learned prefetch (record each start, replay the next), for how long, how much
    learn: bool = setting("learn", False)
    learn_seconds: float = setting("learnSeconds", 30.0, minimum=0.1)
    learn_max_mb: int = setting("learnMaxMB", 1024, minimum=1)


@dataclass
class ServiceConfig:
    path: str = ""
    log: LogConfig = section("logConfig", LogConfig, selector="logPath")
    cache: CacheConfig = section("cacheConfig", CacheConfig, selector="cacheType")
    gzip_cache: GzipCacheConfig = section("gzipCacheConfig", GzipCacheConfig)
    credential: CredentialConfig = section("credentialConfig", CredentialConfig, selector="mode")
    io_engine: int = setting("ioEngine", 0, choices=(0, 1, 2), shipped=True)
    download: DownloadConfig = section("download", DownloadConfig)
    enable_audit: bool = setting("enableAudit", True, shipped=True)
    audit_path: str = setting("auditPath", "/var/log/overlaybd-audit.log", shipped=True)
    registry_fs_version: str = setting("registryFsVersion", "v2", choices=("v1", "v2"),
                                       shipped=True)
    prefetch: PrefetchConfig = section("prefetchConfig", PrefetchConfig)
    worker: WorkerConfig = section("workerConfig", WorkerConfig)
    p2p: P2PConfig = section("p2pConfig", P2PConfig)
    exporter: ExporterConfig = section("exporterConfig", ExporterConfig)
    cert: CertConfig = section("certConfig", CertConfig)
    service: ServiceEndpoint = section("serviceConfig", ServiceEndpoint)
    proxy: ProxyConfig = section("proxyConfig", ProxyConfig)
    enable_thread: bool = setting("enableThread", False)
    user_agent: str = setting("userAgent", USER_AGENT)
    registry_timeout: float = REGISTRY_TIMEOUT     # no JSON field
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, doc, path="<overlaybd.json>"):
        return _parse(Obj(doc, path))


# Fields accepted for compatibility whose feature is not implemented here: the daemon (and
# tools given --service_config_path) warn once per field set to a value listed here.  Rows:
# (JSON field (from the table), attribute path, values that are not implemented (None: any
# non-default value), what happens instead).  A change that implements a feature deletes its
# row (and README's Limitations line).
_INERT = (
    ("gzip_cache.enable", None,
     "there is no gzip cache (it serves TurboOCI layers, which are refused)"),
    ("service.enable", None, "no live-snapshot API is served"),
    ("io_engine", (2,), "POSIX aio is not implemented: local layer files are read "
     "with pread (ioEngine 0)"),
    ("enable_thread", None, "devices are served by the worker processes"),
    ("cache.type", ("ocf",), "the file cache is used instead"),
    ("registry_fs_version", ("v1",),
     "the one registry client (v2 behaviour: TLS verified, GET challenges) is used"),
)
NOT_IMPLEMENTED = tuple((json_name(ServiceConfig, attr), attr, values, instead)
                        for attr, values, instead in _INERT)


def _attr(obj, dotted):
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


def unimplemented_fields(svc):
    """[(JSON field, value, what happens instead)] for fields of ``svc`` set to a value whose
    feature is not implemented (see NOT_IMPLEMENTED)."""
    default = ServiceConfig()
    out = []
    for name, attr, values, instead in NOT_IMPLEMENTED:
        v = _attr(svc, attr)
        if (v in values) if values is not None else v != _attr(default, attr):
            out.append((name, v, instead))
    return out


def warn_unimplemented(svc):
    """Log one warning per field of ``svc`` that is set but not implemented."""
    for name, v, instead in unimplemented_fields(svc):
        logger.warning("{}: {} = {} is not implemented: {}", svc.path or "overlaybd.json", name,
                       json.dumps(v), instead)


def load_service_config(path=None):
    """Parse ``path`` (default /etc/overlaybd/overlaybd.json).  A missing default file gives
    the built-in defaults; a missing explicit file is an error."""
    if path is None:
        path = DEFAULT_PATH
        if not os.path.exists(path):
            svc = ServiceConfig()
            svc.path = path
            return svc
    return _parse(Obj(load_json(path), path))


def _parse(o):
    s = read(ServiceConfig, o)
    s.path, s.raw = o.path, o.data
    return s


def shipped_config():
    """conf/overlaybd.json: the settings the table marks ``shipped`` (``make conf`` writes it;
    a test checks the file against it)."""
    return json.dumps(shipped(ServiceConfig), indent=4) + "\n"


def parse_download(d, base=None):
    """A ``download`` object (global or per image); missing fields come from ``base``."""
    return read(DownloadConfig, d, base=base)

