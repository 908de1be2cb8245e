"""Remote layers: the on-disk blob caches and background download (spec §7, §8).

Entry points for the image opener:

* ``open_remote_layer(url, lower, svc) -> SwitchFile`` -- a file object (``size``, ``pread``,
  ``preadinto``, ``evict``, ``close``, ``path``) over the blob bytes as the registry serves them,
  with caching / P2P as configured.  Raises ``RemoteError`` whose ``reason`` is the resultFile
  text of spec §4 (``failed to open remote file <url>: Authentication failed`` ...).
* ``start_background_download(switch_files, download_cfg) -> handle | None`` -- per device open,
  after all layers are open; ``handle.stop()`` at device close.
"""

import os
import socket
from urllib.parse import urlsplit

from loguru import logger

from .. import audit
from ..errors import RemoteError
from ..io import LocalFile, make_private_dir
from ..registry.blob import RegistryBlob, context_for
from .download import start_background_download
from .eviction import store_for
from .filecache import CachedBlob, known_size
from .sparse import no_space, reports_holes
from .switch import SwitchFile

__all__ = ["SwitchFile", "open_remote_layer", "p2p_reachable", "start_background_download"]


def p2p_reachable(address, timeout=0.5):
    """True when a TCP connection to the P2P proxy's host:port succeeds."""
    u = urlsplit(address if "://" in address else "http://" + address)
    try:
        with socket.create_connection((u.hostname or "localhost", u.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


def _download_audit(url, meter=None):
    """The on_read of a registry blob read by the cache layer: audit line + metrics."""
    if meter is None:
        return lambda off, n, dt: audit.io_event("download", url, off, n, dt)

    def on_read(off, n, dt):
        audit.io_event("download", url, off, n, dt)
        meter.registry_read("download", n, dt)
    return on_read


def open_remote_layer(url, lower, svc, meter=None):
    """Open the blob at ``url`` (repoBlobUrl/digest) for the config.v1.json ``lower`` entry.
    ``meter``: its :class:`overlaybd.metrics.LayerMeter` (None: metrics off)."""
    audit.configure_from(svc)
    lower = dict(lower or {})
    d = lower.get("dir") or ""
    commit = os.path.join(d, "overlaybd.commit") if d else ""
    if commit and os.path.exists(commit):       # downloaded earlier: no registry needed
        return SwitchFile(LocalFile(commit), url, lower, None, local=True, meter=meter)
    ctx = context_for(svc)
    size_hint = int(lower.get("size") or 0)
    p2p = getattr(svc, "p2p", None)
    if p2p is not None and p2p.enable and p2p_reachable(p2p.address):
        pctx = ctx.with_p2p(p2p.address)
        blob = RegistryBlob(url, pctx, on_read=_download_audit(url, meter))
        return SwitchFile(blob, url, lower, pctx, meter=meter)

    cache = svc.cache
    ctype = cache.type or "file"
    if ctype == "ocf":          # not implemented: warned once at start (settings.NOT_IMPLEMENTED)
        ctype = "file"
    if ctype == "download":
        if not (d and size_hint):
            blob = RegistryBlob(url, ctx, on_read=_download_audit(url, meter))
            return SwitchFile(blob, url, lower, ctx, meter=meter)
        make_private_dir(d)
        path, store = os.path.join(d, ".download"), None
    else:
        store = store_for(cache.dir, cache.size_gb)
        make_private_dir(store.root)                 # it may have been cleaned by hand
        path = os.path.join(store.root, url.rstrip("/").rsplit("/", 1)[-1])
    try:
        sparse_ok = reports_holes(os.path.dirname(path))
    except OSError as e:
        why = "no space left on the cache disk" if no_space(e) else "cannot write there"
        logger.warning("cache {}: {} ({}), so {} is read without the cache", e.filename, why,
                       e.strerror, url)
        blob = RegistryBlob(url, ctx, on_read=_download_audit(url))
        return SwitchFile(blob, url, lower, ctx)
    if not sparse_ok:
        logger.warning("cache {} is on a filesystem that does not report holes (SEEK_HOLE): "
                       "presence of cached data cannot be known there, so {} is read without "
                       "the cache; put the cache on ext4, xfs, btrfs or tmpfs",
                       os.path.dirname(path), url)
        blob = RegistryBlob(url, ctx, on_read=_download_audit(url, meter))
        return SwitchFile(blob, url, lower, ctx, meter=meter)

    size = known_size(path, size_hint)
    blob = None
    if size is None:
        blob = RegistryBlob(url, ctx, on_read=_download_audit(url, meter))
        size = blob.size
    source = (lambda: blob) if blob else (lambda: RegistryBlob(url, ctx, size=size,
                                                               on_read=_download_audit(url, meter)))
    try:
        cached = CachedBlob(path, size, source, cache.refill_size, store, url=url, meter=meter)
    except OSError as e:
        raise RemoteError(f"cannot open cache file {path}: {e.strerror}", path=path, errno=e.errno,
                          reason=f"failed to open remote file {url}: cache file {path}: {e.strerror}") from e
    return SwitchFile(cached, url, lower, ctx, meter=meter)
