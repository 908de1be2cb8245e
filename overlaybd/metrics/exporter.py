"""The Prometheus endpoint (``exporterConfig``), served by a thread of the supervisor.

``GET http://<address>:<port><uriPrefix>`` answers the text format (``text/plain;
version=0.0.4``) rendered by ``prometheus_client`` from a :func:`overlaybd.metrics.snapshot.snapshot`;
``?format=json`` answers that snapshot as JSON (for scripts); any other path is 404.  The
address defaults to 127.0.0.1 (upstream listens on every interface; ``exporterConfig.address``
says where).  Never on the read path: a scrape reads shared memory and psutil, and the
sampler thread wakes once per window.

Upstream's gauges keep their names and labels so existing dashboards keep working:
``OverlayBD_Alive{node}``, and for ``pread`` (reads through the cache layer) and ``download``
(registry reads): ``OverlayBD_Read_Throughtput`` (sic, bytes/s), ``OverlayBD_QPS``,
``OverlayBD_MaxLatency`` (us) -- over the last complete window of ``updateInterval`` us -- and
``OverlayBD_Count`` (bytes, cumulative).  Upstream's template declares the labels
``node,type,mode`` but fills in one value, which lands in ``node``; we render the same
(``node="pread",type="",mode=""``).

Why not prometheus_client's multiprocess mode: it keeps one mmap file per metric type per pid
in a directory that must be wiped at every start and grows with every worker restart, needs an
environment variable set before import in every process, and takes ~4 us per increment (lock,
dict, struct); worker slabs here survive restarts and an increment is a word add.  So
prometheus_client only renders (a custom collector) and parses (tests).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from loguru import logger
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import generate_latest

from . import G_DL_BYTES, G_DL_READS, GLOBAL, enable, key, pread_totals, reset_max, totals
from .snapshot import snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIN_WINDOW = 0.1


class Windows:
    """Upstream's windowed gauges: reads/s, bytes/s and max latency over the last complete
    window (photon counts 1 s and 5 s windows; upstream's ``updateInterval`` was unused)."""

    def __init__(self, seconds: float):
        self.seconds = max(MIN_WINDOW, seconds)
        self.values: dict = {}
        self._prev = None
        self._stop = threading.Event()
        self._thread = None

    def tick(self) -> None:
        tot = totals()
        g = tot.get(key(GLOBAL), [0] * 32)
        now = time.monotonic()
        maxima = reset_max()
        counts = {"pread": pread_totals(tot), "download": (g[G_DL_READS], g[G_DL_BYTES])}
        if self._prev is not None:
            t0, prev = self._prev
            dt = max(now - t0, 1e-6)
            self.values = {
                name: {"qps": (counts[name][0] - prev[name][0]) / dt,
                       "throughput": (counts[name][1] - prev[name][1]) / dt,
                       "max_latency_us": maxima[name]}
                for name in ("pread", "download")}
        self._prev = (now, counts)

    def start(self) -> None:
        self.tick()
        self._thread = threading.Thread(target=self._run, name="metrics-window", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 -- the sampler must outlive a bad reading
                logger.error("metrics: window sample failed: {}", e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def families(snap: dict):
    """Prometheus metric families for a snapshot."""
    node = snap["node"]
    alive = GaugeMetricFamily("OverlayBD_Alive", "overlaybd-tcmu is serving", labels=["node"])
    alive.add_metric([node], 1)
    yield alive
    up = snap["upstream"]
    for name, doc, field in (("OverlayBD_Read_Throughtput", "Bytes / sec", "throughput"),
                             ("OverlayBD_QPS", "reads / sec", "qps"),
                             ("OverlayBD_MaxLatency", "us", "max_latency_us")):
        f = GaugeMetricFamily(name, doc, labels=["node", "type", "mode"])
        for t in ("pread", "download"):
            f.add_metric([t, "", ""], up[t][field])
        yield f
    f = GaugeMetricFamily("OverlayBD_Count", "Bytes", labels=["node", "type"])
    for t in ("pread", "download"):
        f.add_metric([t, ""], up[t]["count"])
    yield f
    yield from _layer_families(snap["layers"])
    yield from _registry_families(snap["registry"])
    c = snap["cache"]
    f = CounterMetricFamily("overlaybd_cache_evictions", "eviction passes of the file cache")
    f.add_metric([], c["evictions"])
    yield f
    f = CounterMetricFamily("overlaybd_cache_evict_target_bytes",
                            "bytes eviction passes set out to free (audit actualEvict)")
    f.add_metric([], c["evict_target_bytes"])
    yield f
    f = CounterMetricFamily("overlaybd_cache_evicted_bytes",
                            "bytes dropped from the cache: lru (eviction passes) or checksum "
                            "(a range that failed its CRC)", labels=["reason"])
    for reason, n in c["evicted_bytes"].items():
        f.add_metric([reason], n)
    yield f
    yield from _prefetch_families(snap["prefetch"])
    yield from _service_families(snap)


def _counter(name, doc, labels, rows, value):
    f = CounterMetricFamily(name, doc, labels=labels)
    for row in rows:
        f.add_metric([row[k] for k in labels], value(row))
    return f


def _gauge(name, doc, labels, rows, value):
    f = GaugeMetricFamily(name, doc, labels=labels)
    for row in rows:
        f.add_metric([row[k] for k in labels], value(row))
    return f


def _layer_families(layers):
    lb = ["config", "layer"]
    yield _counter("overlaybd_layer_reads", "reads through the cache layer", lb, layers,
                   lambda r: r["reads"])
    yield _counter("overlaybd_layer_read_bytes", "bytes read through the cache layer", lb, layers,
                   lambda r: r["read_bytes"])
    yield _counter("overlaybd_layer_cache_hit_reads", "reads served from the cache alone", lb,
                   layers, lambda r: r["hit_reads"])
    yield _counter("overlaybd_layer_cache_hit_bytes", "bytes served from the cache alone", lb,
                   layers, lambda r: r["hit_bytes"])
    for what, doc in (("reads", "registry data reads"), ("bytes", "bytes fetched from the registry")):
        f = CounterMetricFamily(f"overlaybd_layer_registry_{what}", f"{doc}, by audit event",
                                labels=[*lb, "event"])
        for r in layers:
            for ev, v in r["registry"].items():
                f.add_metric([r["config"], r["layer"], ev], v[what])
        yield f
    yield _counter("overlaybd_layer_refills", "cache fills from the registry (misses, read-ahead)",
                   lb, layers, lambda r: r["refills"])
    yield _counter("overlaybd_layer_refill_bytes", "bytes of cache fills", lb, layers,
                   lambda r: r["refill_bytes"])
    yield _counter("overlaybd_layer_evicted_bytes", "bytes dropped after a checksum failure", lb,
                   layers, lambda r: r["evicted_bytes"])
    bk = [r for r in layers if r["background_download"]["size"]]
    yield _gauge("overlaybd_background_download_bytes", "bytes of the layer in its local file",
                 lb, bk, lambda r: r["background_download"]["done_bytes"])
    yield _gauge("overlaybd_background_download_size_bytes", "size of the layer", lb, bk,
                 lambda r: r["background_download"]["size"])
    yield _gauge("overlaybd_background_download_completed", "1 once verified and switched to", lb,
                 bk, lambda r: r["background_download"]["completed"])
    yield _counter("overlaybd_background_download_failures", "failed download attempts", lb,
                   layers, lambda r: r["background_download"]["failures"])


def _registry_families(reg):
    h = HistogramMetricFamily("overlaybd_registry_read_duration_seconds",
                              "registry data reads (with their retries), by audit event",
                              labels=["event"])
    for ev, v in sorted(reg["reads"].items()):
        h.add_metric([ev], list(v["buckets"].items()), v["sum_seconds"])
    yield h
    f = CounterMetricFamily("overlaybd_registry_errors", "failed registry requests (each "
                            "attempt), by kind", labels=["kind"])
    for kind, n in reg["errors"].items():
        f.add_metric([kind], n)
    yield f
    f = CounterMetricFamily("overlaybd_registry_failed_reads", "registry reads that failed for good")
    f.add_metric([], reg["failed_reads"])
    yield f


def _prefetch_families(rows):
    for field, doc in (("done", "trace reads issued"), ("total", "trace reads to issue"),
                       ("bytes", "bytes read by trace replay"), ("failed", "trace reads that failed")):
        yield _gauge(f"overlaybd_prefetch_{field}", doc, ["config"], rows, lambda r, f=field: r[f])


def _service_families(snap):
    yield _gauge("overlaybd_device_info", "a device being served", ["device", "config", "uio", "dev_id"],
                 [{**d, "uio": str(d["uio"])} for d in snap["devices"]], lambda r: 1)
    f = GaugeMetricFamily("overlaybd_inflight_commands", "block I/O commands in flight")
    f.add_metric([], snap["inflight_commands"])
    yield f
    procs = snap["processes"]
    lb = ["process", "worker"]
    workers = [p for p in procs if p["process"] == "worker"]
    yield _counter("overlaybd_worker_restarts", "worker processes replaced", ["worker"], workers,
                   lambda r: r["restarts"])
    yield _counter("overlaybd_process_cpu_seconds", "CPU time (user + system)", lb, procs,
                   lambda r: r["cpu_seconds"])
    yield _gauge("overlaybd_process_resident_memory_bytes", "RSS", lb, procs, lambda r: r["rss_bytes"])
    yield _gauge("overlaybd_process_open_fds", "open file descriptors", lb, procs, lambda r: r["fds"])
    yield _gauge("overlaybd_process_threads", "threads", lb, procs, lambda r: r["threads"])


class _Collector:
    def __init__(self, exporter):
        self.exporter = exporter

    def collect(self):
        yield from families(self.exporter.snapshot())


class Exporter:
    """``Exporter(cfg, daemon).start()``; ``.port`` is the port bound (``cfg.port`` 0: any)."""

    def __init__(self, cfg, daemon=None, node: str | None = None):
        self.cfg = cfg
        self.daemon = daemon
        self.node = node or socket.gethostname() or "unknown"
        self.prefix = cfg.uri_prefix if cfg.uri_prefix.startswith("/") else "/" + cfg.uri_prefix
        self.windows = Windows(cfg.update_interval / 1e6)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self.server = None
        self._thread = None
        self.port = None
        self.scrapes = 0                    # answered requests (200)

    def snapshot(self) -> dict:
        return snapshot(self.daemon, self.windows.values, self.node)

    def start(self) -> Exporter:
        address = getattr(self.cfg, "address", "") or "127.0.0.1"
        server_cls = _Server6 if ":" in address else _Server
        self.server = server_cls((address, self.cfg.port), _handler(self))
        self.port = self.server.server_address[1]
        self.windows.start()
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics-http",
                                        daemon=True)
        self._thread.start()
        logger.info("metrics exporter: http://{}:{}{} (window {:g}s)", address, self.port,
                    self.prefix, self.windows.seconds)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self._thread.join()
            self.server = None
        self.windows.stop()


def start(cfg, daemon, workers: int) -> Exporter:
    """Count in ``workers + 1`` slabs (call before the engine forks) and serve them.
    Raises OSError when the address cannot be bound."""
    enable(workers + 1)
    return Exporter(cfg, daemon).start()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _handler(exporter):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):           # noqa: N802 -- http.server's naming
            u = urlsplit(self.path)
            if u.path != exporter.prefix:
                return self._send(404, "text/plain; charset=utf-8", b"not found\n")
            try:
                exporter.scrapes += 1
                if "format=json" in u.query.split("&"):
                    body = json.dumps(exporter.snapshot()).encode()
                    return self._send(200, "application/json", body)
                return self._send(200, CONTENT_TYPE, generate_latest(exporter.registry))
            except Exception as e:  # noqa: BLE001 -- a failed scrape must not kill the server
                logger.error("metrics: scrape failed: {}", e)
                return self._send(500, "text/plain; charset=utf-8", f"{e}\n".encode())

        def _send(self, code, ctype, body):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            logger.debug("metrics: {} {}", self.address_string(), fmt % args)

    return Handler
