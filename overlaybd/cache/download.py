"""Background download of remote layers into ``<dir>/overlaybd.commit`` (spec §8).

``start_background_download(layers, download_cfg)`` starts one thread per device.  It sleeps
``delay + random[0, delayExtra)`` seconds, then processes the layers one by one: for each
``blockSize`` chunk of ``<dir>/.download`` that still has a hole, read it from the registry
(bypassing the cache, 2 attempts; audited as ``bk_download``; throttled to ``maxMBps``) and
write it; verify the SHA-256 against ``digest``; rename to ``overlaybd.commit``; switch the
layer's reads to it.  A failed job goes to the back of the queue until ``tryCnt`` attempts are
used.  ``handle.stop()`` (device close) aborts everything.
"""

import hashlib
import os
import random
import threading
import time
from collections import deque

from loguru import logger

from .. import audit, log
from ..io import PRIVATE_FILE, make_private_dir, pwrite_all
from ..registry.blob import RegistryBlob
from .sparse import holes

POLL = 0.2
_busy_dirs = set()
_busy_lock = threading.Lock()


class Throttle:
    """At most ``mbps`` MiB per 1 s window (<= 0: unlimited)."""

    def __init__(self, mbps):
        self.limit = int(mbps) << 20 if mbps and mbps > 0 else 0
        self.window, self.used = time.monotonic(), 0

    def wait(self, nbytes, stop):
        if not self.limit:
            return
        now = time.monotonic()
        if now - self.window >= 1.0:
            self.window, self.used = now, 0
        self.used += nbytes
        if self.used >= self.limit:
            stop.wait(max(0.0, self.window + 1.0 - now))
            self.window, self.used = time.monotonic(), 0


class DownloadHandle:
    def __init__(self, layers, cfg):
        self.cfg = cfg
        self.stopped = threading.Event()
        self.done = threading.Event()
        self.results = {}                   # dir -> "switched" | "failed: ..."
        self.thread = threading.Thread(target=self._run, args=(list(layers),), daemon=True,
                                       name="bk-download")
        self.thread.start()

    def stop(self, wait=True):
        self.stopped.set()
        if wait and self.thread is not threading.current_thread():
            self.thread.join()

    def _run(self, layers):
        try:
            delay = self.cfg.delay + random.randrange(max(1, self.cfg.delay_extra))
            end = time.monotonic() + delay
            while time.monotonic() < end:
                if self.stopped.wait(min(POLL, max(0.0, end - time.monotonic()))):
                    return
            queue = deque((sw, 0, False) for sw in layers if sw.lower.get("dir") and not sw.local)
            while queue and not self.stopped.is_set():
                sw, tries, full = queue.popleft()
                d = sw.lower["dir"]
                with _busy_lock:
                    busy = d in _busy_dirs
                    if not busy:
                        _busy_dirs.add(d)
                if busy:
                    queue.append((sw, tries, full))
                    self.stopped.wait(POLL)
                    continue
                try:
                    self._job(sw, full)
                    self.results[d] = "switched"
                except Exception as e:              # noqa: BLE001 - any failure: retry later or drop
                    tries += 1
                    mismatch = isinstance(e, DigestMismatch)
                    logger.warning("background download failed: {}", log.kv(
                        blob=sw.url, dir=d, attempt=tries, tries=self.cfg.try_cnt, error=e))
                    if getattr(sw, "meter", None) is not None:
                        sw.meter.download_finished(False)
                    self.results[d] = f"failed: {e}"
                    if tries < self.cfg.try_cnt and not self.stopped.is_set():
                        queue.append((sw, tries, full or mismatch))
                finally:
                    with _busy_lock:
                        _busy_dirs.discard(d)
                self.stopped.wait(POLL)
        finally:
            self.done.set()

    def _job(self, sw, full):
        d = sw.lower["dir"]
        commit = os.path.join(d, "overlaybd.commit")
        if not os.path.exists(commit):
            self._download(sw, os.path.join(d, ".download"), full)
            if self.stopped.is_set():
                return
            os.rename(os.path.join(d, ".download"), commit)
            logger.info("background download done: {}", log.kv(blob=sw.url, path=commit))
        sw.switch_to(commit)
        if getattr(sw, "meter", None) is not None:
            sw.meter.download_finished(True)

    def _download(self, sw, dest, full):
        size = int(sw.lower.get("size") or sw.size)
        digest = sw.lower.get("digest") or ""
        bs = max(4096, int(self.cfg.block_size or 262144))
        meter = getattr(sw, "meter", None)

        def on_read(off, n, dt):
            audit.io_event("bk_download", sw.url, off, n, dt)
            if meter is not None:
                meter.registry_read("bk_download", n, dt)
        src = RegistryBlob(sw.url, sw.ctx, size=size, on_read=on_read)
        throttle = Throttle(self.cfg.max_mbps)
        make_private_dir(os.path.dirname(dest))
        fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
            buf = bytearray(bs)
            for off in range(0, size, bs):
                if self.stopped.is_set():
                    return
                n = min(bs, size - off)
                if full or holes(fd, off, off + n):     # else resumed / filled by the cache
                    mv = memoryview(buf)[:n]
                    _twice(src.fetch_into, mv, off)
                    _twice(pwrite_all, fd, mv, off)
                    throttle.wait(n, self.stopped)
                if meter is not None:
                    meter.download_progress(off + n, size)
            os.fsync(fd)
            got = "sha256:" + _sha256_fd(fd, size)
        finally:
            os.close(fd)
        if digest and got != digest:
            raise DigestMismatch(f"{dest}: sha256 {got} does not match digest {digest}")


class DigestMismatch(Exception):
    pass


def _twice(op, *args):
    try:
        return op(*args)
    except Exception:                   # noqa: BLE001 - RemoteError or OSError: one more attempt
        return op(*args)


def _sha256_fd(fd, size):
    h = hashlib.sha256()
    off = 0
    while off < size:
        chunk = os.pread(fd, min(8 << 20, size - off), off)
        if not chunk:
            break
        h.update(chunk)
        off += len(chunk)
    return h.hexdigest()


def start_background_download(layers, download_cfg):
    """Start background download for ``layers`` (SwitchFiles from ``open_remote_layer``) with
    the image's effective ``download`` settings.  Returns a handle; call ``handle.stop()``
    when the device closes.  Returns None when download is disabled or nothing qualifies."""
    if not download_cfg or not getattr(download_cfg, "enable", False):
        return None
    todo = [sw for sw in layers if getattr(sw, "lower", {}).get("dir") and not sw.local]
    if not todo:
        return None
    return DownloadHandle(todo, download_cfg)
