"""Opening an image: config.v1.json -> the merged (and possibly writable) virtual disk.

Layer resolution (spec §4): each lower is opened locally if one of its candidate paths exists,
else remotely (repoBlobUrl + '/' + digest) through ``overlaybd.cache``; then tar -> zfile
decoding (``overlaybd.detect``); then all lowers are merged (``overlaybd.lsmt``); an upper is
stacked on top.  The resultFile gets exactly ``success`` or ``failed:<reason>``.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor

from loguru import logger

from .. import detect, log, lsmt, metrics, process
from ..cache import SwitchFile, open_remote_layer, start_background_download
from ..cache.blockcache import BlockCache
from ..directio import open_local
from ..errors import OverlaybdError, ReadOnlyError
from ..io import PRIVATE_FILE
from ..prefetch.recorder import wrap_layers
from ..shm.counter import SharedCounter
from ..zfile import ZFile
from .config import load_image_config, unimplemented_fields
from .settings import load_service_config, warn_unimplemented

OPEN_PARALLEL = 32


class ImageOpenError(OverlaybdError):
    """Opening an image failed; ``reason`` is what the resultFile says after ``failed:``."""

    def __init__(self, reason, cause=None):
        super().__init__(reason)
        self.reason = reason
        self.__cause__ = cause


class Image:
    """The virtual disk of an image: a file object with the writable calls when it has an upper."""

    def __init__(self, config, view, upper, layers, svc, download=None, recorder=None,
                 sources=()):
        self.config = config
        self.sources = list(sources)       # per lower: the undecoded blob file (for its name)
        self.download = download
        self.recorder = recorder            # the prefetch Sink recording this image's reads
        self.lower = None                   # the merged lowers alone (file-list prefetch)
        self.svc = svc
        self.view = view
        self.upper = upper
        self.layers = layers
        self.read_only = upper is None
        self.size = view.size
        self.path = config.path
        self.pread = view.pread
        self.preadinto = getattr(view, "preadinto", None) or self._preadinto

    def _preadinto(self, buf, off):
        data = self.view.pread(len(buf), off)
        buf[:len(data)] = data
        return len(data)

    def _check_writable(self):
        if self.read_only:
            raise ReadOnlyError("image is read-only (no upper layer)", path=self.path)

    def pwrite(self, data, off):
        self._check_writable()
        return self.view.pwrite(data, off)

    def discard(self, off, n):
        self._check_writable()
        return self.view.discard(off, n)

    def fsync(self):
        if self.upper is not None:
            self.view.fsync()

    def close(self):
        if self.download is not None:
            self.download.stop()
            self.download = None
        if self.recorder is not None:
            self.recorder.stop()
            self.recorder = None
        for obj in [self.view, *self.layers]:
            try:
                obj.close()
            except Exception as e:  # noqa: BLE001 -- closing must not stop at the first error
                logger.warning("closing {}: {}", getattr(obj, "path", obj), e)
        self.layers = self.sources = []


def open_lower(cfg, i, lower, svc, cache_bytes=0):
    """Open lower ``i`` and decode it (tar -> zfile).  Returns (decoded file, source): the
    source is a ``SwitchFile`` for remote layers (background download switches it).
    ``cache_bytes``: put a ZFile under this process's decompressed-block cache of that budget
    (0: none)."""
    src = None
    for cand in lower.local_candidates():
        if os.path.exists(cand):
            try:
                src = open_local(cand, svc.io_engine)
            except OverlaybdError as e:
                raise ImageOpenError(f"failed to open local file {cand}", e) from e
            if svc.enable_audit and svc.audit_path:
                src = SwitchFile(src, cand, local=True)  # audits slow local reads (file:pread)
            break
    if src is None:
        if not lower.digest:
            raise ImageOpenError(f"failed to open local file {lower.file or lower.dir}")
        if not cfg.repo_blob_url:
            raise ImageOpenError("empty repoBlobUrl")
        url = cfg.blob_url(lower)
        try:
            src = open_remote_layer(url, lower.raw, svc, metrics.layer(cfg.path, lower.digest))
        except OverlaybdError as e:
            reason = getattr(e, "reason", None) or f"failed to open remote file {url}: {e}"
            raise ImageOpenError(reason, e) from e
    try:
        decoded = detect.open_blob(src)
        if cache_bytes and isinstance(decoded, ZFile):  # this process's decompressed-block cache
            decoded = BlockCache.shared(decoded, decoded.block_size, cache_bytes)
        return decoded, src
    except OverlaybdError as e:
        src.close()
        raise ImageOpenError(f"failed to open layer {i}: {e}", e) from e


def _open_lowers(cfg, svc, cache_bytes=0):
    """[(decoded file, source)] for every lower, opened in parallel."""
    if not cfg.lowers:
        return []
    with ThreadPoolExecutor(min(OPEN_PARALLEL, len(cfg.lowers))) as ex:
        futs = [ex.submit(open_lower, cfg, i, lo, svc, cache_bytes)
                for i, lo in enumerate(cfg.lowers)]
        files, first_err = [], None
        for f in futs:
            try:
                files.append(f.result())
            except OverlaybdError as e:
                first_err = first_err or e
    if first_err is not None:
        for f, _ in files:
            f.close()
        raise first_err
    return files


def open_image(config_path, svc=None, write_result=True, allocator=None, download=True,
               quiet=False, record=None, cache_bytes=0):
    """Open the image of ``config_path``.  ``svc`` is a ServiceConfig, a path to
    overlaybd.json, or None for the default.  Writes the resultFile unless told not to.
    ``allocator``: shared data-position allocator of the upper when several processes write
    it (see ImageOpener).  ``download``: run background download from this process.
    ``quiet``: a repeat open (in a worker) that does not repeat the not-implemented warnings;
    others warn about the image's fields, and about overlaybd.json's when they read it.
    ``record``: a prefetch RecordSpec: record the reads each lower serves once open.
    ``cache_bytes``: read ZFile layers through this process's decompressed-block cache of that
    budget (0, the default: none -- tools, and a second instance read from other threads such
    as the prefetch replay's: that cache is not thread-safe)."""
    if svc is None or isinstance(svc, (str, os.PathLike)):
        svc = load_service_config(svc)
        if not quiet:
            warn_unimplemented(svc)
    cfg = None
    try:
        cfg = load_image_config(config_path, svc.download)
        _check_unimplemented(cfg, quiet)
        img = _assemble(cfg, svc, allocator, download, record, cache_bytes)
    except OverlaybdError as e:
        reason = getattr(e, "reason", None) or str(e)
        # the caller reports it once: the daemon logs "device ...: <reason>", a tool prints it
        logger.debug("open image {}: {}", config_path, reason)
        if write_result:
            result_file = cfg.result_file if cfg else _result_file_of(config_path)
            write_result_file(result_file, f"failed:{reason}")
        if isinstance(e, ImageOpenError):
            raise
        raise ImageOpenError(reason, e) from e
    if write_result:
        write_result_file(cfg.result_file, "success")
    logger.info("opened image {}: {} layers, {} bytes, {}", config_path, len(cfg.lowers),
                img.size, "read-only" if img.read_only else "writable")
    if write_result:            # the open that reports (the daemon's first): which blobs it reads
        for i, lower in enumerate(cfg.lowers):
            blob = getattr(img.sources[i], "url", None) or getattr(img.sources[i], "path", "")
            logger.info("image layer: {}", log.kv(config=cfg.path, index=i, digest=lower.digest,
                                                  blob=blob))
    return img


def _check_unimplemented(cfg, quiet):
    """Refuse an image that needs a feature we lack (serving it could return wrong bytes);
    warn about the ones that only cost speed."""
    for field, refused, missing in unimplemented_fields(cfg):
        if refused:
            raise ImageOpenError(f"{field} is set: {missing}")
        if not quiet:
            logger.warning("{}: {} is set: {}", cfg.path, field, missing)


def _assemble(cfg, svc, allocator=None, start_download=True, record=None, cache_bytes=0):
    opened = _open_lowers(cfg, svc, cache_bytes)
    layers, sink = wrap_layers([f for f, _ in opened], record if opened else None)
    try:
        lower_view = None
        if layers:
            try:
                lower_view = lsmt.open_merged(layers)
            except OverlaybdError as e:
                raise ImageOpenError(f"failed to open layer: {e}", e) from e
        upper = None
        if cfg.upper is not None:
            try:
                upper = lsmt.open_rw(cfg.upper.data, cfg.upper.index, allocator=allocator)
            except OverlaybdError as e:
                raise ImageOpenError(f"failed to open upper layer: {e}", e) from e
            view = lsmt.stack(upper, lower_view)
        else:
            view = lower_view
    except BaseException:
        for f in layers:
            f.close()
        if sink is not None:
            sink.stop()
        raise
    if sink is not None:
        sink.arm()                      # from here on only the device's reads are recorded
    download = None
    if start_download and not _recording(cfg):
        remote = [src for _, src in opened if getattr(src, "ctx", None) is not None]
        if remote:
            download = start_background_download(remote, cfg.download)
    img = Image(cfg, view, upper, layers, svc, download, sink, [src for _, src in opened])
    img.lower = lower_view
    return img


def _recording(cfg):
    """Record mode (spec §11: the trace file exists and is empty): background download stays
    off, so that the trace holds every read the workload makes."""
    p = cfg.record_trace_path
    try:
        return bool(p) and os.path.getsize(p) == 0
    except OSError:
        return False


def _result_file_of(config_path):
    """Best effort: the resultFile named by a config that failed to parse."""
    try:
        with open(config_path) as f:
            rf = json.load(f).get("resultFile", "")
    except (OSError, ValueError, AttributeError):
        return ""
    if isinstance(rf, str) and rf and not os.path.isabs(rf):
        rf = os.path.join(os.path.dirname(os.path.abspath(config_path)), rf)
    return rf if isinstance(rf, str) else ""


def write_result_file(path, text):
    """Truncate and write ``text`` (no newline), as upstream does once per open attempt."""
    if not path:
        return
    try:                    # 0600: it can name private registries and paths
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                          PRIVATE_FILE), "w") as f:
            f.write(text)
    except OSError as e:
        logger.error("cannot write resultFile {}: {}", path, e.strerror)


class ImageOpener:
    """Opens an image in each engine process: ``ImageOpener(config, svc_path, cache_bytes)()``.

    Made in the supervisor (by the composition root, ``overlaybd.tools.tcmu``), sent to the
    workers.  ``cache_bytes``: each process's decompressed-block cache budget
    (``workerConfig.cacheSizeMB``; 0: no block cache).  A writable image gets a shared
    data-position counter, so that every worker appends to the upper without overlapping the
    others (the counter travels as a descriptor: it pickles only through the engine's channel).
    Background download runs in one process only: the first worker (or the supervisor when
    the engine is inline); the others' layers switch to the downloaded file when it appears."""

    def __init__(self, config_path, svc_path=None, cache_bytes=0):
        self.config_path = config_path
        self.svc_path = svc_path
        self.cache_bytes = cache_bytes
        self.allocator = None
        self.record = None              # a prefetch RecordSpec, set by the daemon's prefetch
        try:
            cfg = load_image_config(config_path)
        except OverlaybdError:
            cfg = None                    # opening will report it
        if cfg is not None and cfg.upper is not None:
            self.allocator = SharedCounter(0)

    def __call__(self):
        ctx = process.current()
        return open_image(self.config_path, self.svc_path, write_result=False,
                          allocator=self.allocator, download=ctx is None or ctx.index == 0,
                          quiet=True, record=self.record, cache_bytes=self.cache_bytes)
