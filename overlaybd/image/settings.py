"""The global service config, ``/etc/overlaybd/overlaybd.json`` (spec §5).

Every upstream field is parsed under its current and legacy names; unknown keys are ignored;
a wrong type is a ConfigError naming the file and the field.  New keys of this implementation:
``workerConfig`` (the worker engine), ``proxyConfig`` (an HTTP(S) forward proxy for blob
reads), ``logConfig.fileMode`` (the mode of the log and audit files) and
``prefetchConfig.learn*`` (learned prefetch) and ``exporterConfig.address`` (where the metrics
endpoint listens).  Attribute names are the snake_case of the JSON keys.
"""

import json
import os
from dataclasses import dataclass, field

from loguru import logger

from .. import USER_AGENT
from ..cpus import default_workers
from ..errors import ConfigError
from .schema import Obj, load_json

DEFAULT_PATH = "/etc/overlaybd/overlaybd.json"
CACHE_TYPES = ("file", "download", "ocf")


@dataclass
class LogConfig:
    level: int = 1
    path: str = "/var/log/overlaybd.log"
    size_mb: int = 10
    rotate_num: int = 3
    file_mode: int = 0o600          # logConfig.fileMode: the log and the audit file


@dataclass
class CacheConfig:
    type: str = "file"
    dir: str = "/opt/overlaybd/registry_cache"
    size_gb: float = 4
    refill_size: int = 262144
    block_size: int = 65536


@dataclass
class GzipCacheConfig:
    enable: bool = False
    dir: str = "/opt/overlaybd/gzip_cache"
    size_gb: float = 4
    refill_size: int = 1048576


@dataclass
class CredentialConfig:
    mode: str = "file"
    path: str = "/opt/overlaybd/cred.json"
    timeout: int = 1
    client_cert_path: str = ""
    client_key_path: str = ""
    server_ca_path: str = ""


@dataclass
class DownloadConfig:
    enable: bool = False
    delay: int = 300
    delay_extra: int = 30
    max_mbps: int = 100
    try_cnt: int = 5
    block_size: int = 262144


@dataclass
class P2PConfig:
    enable: bool = False
    address: str = "http://localhost:9731/accelerator"


@dataclass
class ExporterConfig:
    enable: bool = False
    uri_prefix: str = "/metrics"
    port: int = 9863
    update_interval: int = 60000000     # us: the window of the rate and max-latency gauges
    address: str = "127.0.0.1"          # new: where to listen (upstream: every interface)


@dataclass
class CertConfig:
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""          # new: an extra CA trusted for registries


@dataclass
class ServiceEndpoint:
    enable: bool = False
    address: str = "http://127.0.0.1:9862"


@dataclass
class ProxyConfig:
    http_proxy: str = ""
    https_proxy: str = ""
    no_proxy: str = ""
    ca_file: str = ""


@dataclass
class WorkerConfig:
    workers: int = field(default_factory=default_workers)
    chunk_size_kb: int = 1024
    cache_size_mb: int = 256
    heartbeat_sec: float = 5.0


@dataclass
class PrefetchConfig:
    concurrency: int = 16           # replay readers (upstream's prefetchConfig.concurrency)
    learn: bool = False             # new: learned prefetch (record each start, replay the next)
    learn_seconds: float = 30.0     # new: how long a start is recorded
    learn_max_mb: int = 1024        # new: at most this much read data per learned trace


@dataclass
class ServiceConfig:
    path: str = ""
    log: LogConfig = field(default_factory=LogConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    gzip_cache: GzipCacheConfig = field(default_factory=GzipCacheConfig)
    credential: CredentialConfig = field(default_factory=CredentialConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    p2p: P2PConfig = field(default_factory=P2PConfig)
    exporter: ExporterConfig = field(default_factory=ExporterConfig)
    cert: CertConfig = field(default_factory=CertConfig)
    service: ServiceEndpoint = field(default_factory=ServiceEndpoint)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    io_engine: int = 0
    enable_audit: bool = True
    audit_path: str = "/var/log/overlaybd-audit.log"
    enable_thread: bool = False
    registry_fs_version: str = "v2"
    prefetch: PrefetchConfig = field(default_factory=PrefetchConfig)
    user_agent: str = USER_AGENT
    registry_timeout: float = 30.0
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, doc, path="<overlaybd.json>"):
        return _parse(Obj(doc, path))


# Fields accepted for compatibility whose feature is not implemented here: the daemon (and
# tools given --service_config_path) warn once per field set to a value listed here.  Rows:
# (JSON field, attribute path, values that are not implemented (None: any non-default value),
# what happens instead).  A change that implements a feature deletes its row (and README's
# Limitations line).
NOT_IMPLEMENTED = (
    ("gzipCacheConfig.enable", "gzip_cache.enable", None,
     "there is no gzip cache (it serves TurboOCI layers, which are refused)"),
    ("serviceConfig.enable", "service.enable", None, "no live-snapshot API is served"),
    ("ioEngine", "io_engine", (2,), "POSIX aio is not implemented: local layer files are read "
     "with pread (ioEngine 0)"),
    ("enableThread", "enable_thread", None, "devices are served by the worker processes"),
    ("cacheConfig.cacheType", "cache.type", ("ocf",), "the file cache is used instead"),
    ("registryFsVersion", "registry_fs_version", ("v1",),
     "the one registry client (v2 behaviour: TLS verified, GET challenges) is used"),
)


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


def _file_mode(o, key, default):
    """An octal permission string ("0640"): read/write bits only, the owner's rw always set."""
    text = o.get(key, str, default)
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if mode < 0 or mode & ~0o666 or mode & 0o600 != 0o600:
        raise ConfigError(f"must be an octal file mode between \"0600\" and \"0666\" without "
                          f"execute bits, got {text!r}", path=o.path, field=o.name(key))
    return mode


def _parse(o):
    s = ServiceConfig(path=o.path, raw=o.data)
    # logging: logConfig.* when logConfig.logPath is set, else the legacy top-level keys
    lc = o.obj("logConfig")
    if lc.get("logPath", str, ""):
        s.log = LogConfig(level=lc.get("logLevel", int, 1, choices=(0, 1, 2, 3, 4)),
                          path=lc.get("logPath", str, ""),
                          size_mb=max(1, lc.get("logSizeMB", int, 10, minimum=0)),
                          rotate_num=min(30, max(1, lc.get("logRotateNum", int, 3))))
    else:
        s.log = LogConfig(level=o.get("logLevel", int, 1, choices=(0, 1, 2, 3, 4)),
                          path=o.get("logPath", str, "/var/log/overlaybd.log"))
    s.log.file_mode = _file_mode(lc, "fileMode", "0600")
    # cache: cacheConfig.* when cacheConfig.cacheType is set, else legacy keys
    cc = o.obj("cacheConfig")
    refill = cc.get("refillSize", int, 262144, minimum=4096)
    if refill % 4096 or refill & (refill - 1):
        raise ConfigError(f"must be a power of two multiple of 4096, got {refill}",
                          path=o.path, field="cacheConfig.refillSize")
    if cc.get("cacheType", str, ""):
        s.cache = CacheConfig(type=cc.get("cacheType", str, "", choices=CACHE_TYPES),
                              dir=cc.get("cacheDir", str, CacheConfig.dir),
                              size_gb=cc.get("cacheSizeGB", float, 4, minimum=0),
                              refill_size=refill,
                              block_size=cc.get("blockSize", int, 65536, minimum=4096))
    else:
        s.cache = CacheConfig(type=o.get("cacheType", str, "file", choices=CACHE_TYPES),
                              dir=o.get("registryCacheDir", str, CacheConfig.dir),
                              size_gb=o.get("registryCacheSizeGB", float, 4, minimum=0),
                              refill_size=refill)
    gc = o.obj("gzipCacheConfig")
    s.gzip_cache = GzipCacheConfig(enable=gc.get("enable", bool, False),
                                   dir=gc.get("cacheDir", str, GzipCacheConfig.dir),
                                   size_gb=gc.get("cacheSizeGB", float, 4, minimum=0),
                                   refill_size=gc.get("refillSize", int, 1048576, minimum=4096))
    cr = o.obj("credentialConfig")
    mode = cr.get("mode", str, "")
    if mode:
        s.credential = CredentialConfig(
            mode=mode, path=cr.get("path", str, ""), timeout=cr.get("timeout", int, 1, minimum=0),
            client_cert_path=cr.get("client_cert_path", str, ""),
            client_key_path=cr.get("client_key_path", str, ""),
            server_ca_path=cr.get("server_ca_path", str, ""))
    else:
        s.credential = CredentialConfig(
            mode="file", path=o.get("credentialFilePath", str, CredentialConfig.path))
    s.download = parse_download(o.obj("download"))
    p2p = o.obj("p2pConfig")
    s.p2p = P2PConfig(enable=p2p.get("enable", bool, False),
                      address=p2p.get("address", str, P2PConfig.address))
    ex = o.obj("exporterConfig")
    s.exporter = ExporterConfig(enable=ex.get("enable", bool, False),
                                uri_prefix=ex.get("uriPrefix", str, "/metrics"),
                                port=ex.get("port", int, 9863, minimum=0),
                                update_interval=ex.get("updateInterval", int, 60000000, minimum=1),
                                address=ex.get("address", str, ExporterConfig.address))
    if s.exporter.port > 65535:
        raise ConfigError(f"must be a TCP port (0-65535), got {s.exporter.port}", path=o.path,
                          field="exporterConfig.port")
    ce = o.obj("certConfig")
    s.cert = CertConfig(cert_file=ce.get("certFile", str, ""), key_file=ce.get("keyFile", str, ""),
                        ca_file=ce.get("caFile", str, ""))
    sv = o.obj("serviceConfig")
    s.service = ServiceEndpoint(enable=sv.get("enable", bool, False),
                                address=sv.get("address", str, ServiceEndpoint.address))
    px = o.obj("proxyConfig")
    s.proxy = ProxyConfig(http_proxy=px.get("httpProxy", str, ""),
                          https_proxy=px.get("httpsProxy", str, ""),
                          no_proxy=px.get("noProxy", str, ""), ca_file=px.get("caFile", str, ""))
    wc = o.obj("workerConfig")
    s.worker = WorkerConfig(workers=wc.get("workers", int, default_workers(), minimum=0),
                            chunk_size_kb=wc.get("chunkSizeKB", int, 1024, minimum=4),
                            cache_size_mb=wc.get("cacheSizeMB", int, 256, minimum=0),
                            heartbeat_sec=wc.get("heartbeatSec", float, 5.0, minimum=0.1))
    if s.worker.chunk_size_kb & (s.worker.chunk_size_kb - 1):
        raise ConfigError(f"must be a power of two, got {s.worker.chunk_size_kb}",
                          path=o.path, field="workerConfig.chunkSizeKB")
    s.io_engine = o.get("ioEngine", int, 0, choices=(0, 1, 2))
    s.enable_audit = o.get("enableAudit", bool, True)
    s.audit_path = o.get("auditPath", str, "/var/log/overlaybd-audit.log")
    s.enable_thread = o.get("enableThread", bool, False)
    s.registry_fs_version = o.get("registryFsVersion", str, "v2", choices=("v1", "v2"))
    pf = o.obj("prefetchConfig")
    s.prefetch = PrefetchConfig(concurrency=pf.get("concurrency", int, 16, minimum=1),
                                learn=pf.get("learn", bool, False),
                                learn_seconds=pf.get("learnSeconds", float, 30.0, minimum=0.1),
                                learn_max_mb=pf.get("learnMaxMB", int, 1024, minimum=1))
    s.user_agent = o.get("userAgent", str, s.user_agent)
    return s


def parse_download(d, base=None):
    """A ``download`` object (global or per image); missing fields come from ``base``."""
    b = base or DownloadConfig()
    extra = d.get("delayExtra", int, b.delay_extra, minimum=0)
    return DownloadConfig(enable=d.get("enable", bool, b.enable),
                          delay=d.get("delay", int, b.delay, minimum=0),
                          delay_extra=extra or 30,
                          max_mbps=d.get("maxMBps", int, b.max_mbps),
                          try_cnt=d.get("tryCnt", int, b.try_cnt, minimum=1),
                          block_size=d.get("blockSize", int, b.block_size, minimum=4096))
