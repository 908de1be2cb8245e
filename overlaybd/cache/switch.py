"""``SwitchFile``: the per-layer file whose reads can move from the remote (cached) blob to the
local ``overlaybd.commit`` once background download finishes (spec §8 step 6).

Switching replaces the target in one assignment: reads already running finish on the old
target, later reads go to the local file; the old target stays open until ``close``.  Reads of
a local target that take >= 10 ms are audited as ``file:pread``.
"""

import os
import threading
import time

from .. import audit
from ..io import LocalFile

SLOW_LOCAL_READ = 0.010
WATCH_INTERVAL = 2.0        # how often a remote layer looks for a download made by another process


class SwitchFile:
    def __init__(self, target, url, lower=None, ctx=None, local=False, meter=None):
        self.target = target
        self.meter = meter                  # overlaybd.metrics.LayerMeter, or None
        self.url = url
        self.lower = dict(lower or {})
        self.ctx = ctx                      # RegistryContext, for background download
        self.local = local
        self.size = target.size
        self.retired = []
        self.lock = threading.Lock()
        d = self.lower.get("dir")
        self._watch = None if local or not d else os.path.join(d, "overlaybd.commit")
        self._next_look = 0.0

    def _look_for_download(self):
        """Several engine processes serve one image but only one downloads: the others switch
        when the verified ``overlaybd.commit`` appears (it is renamed into place only after
        its sha256 matched)."""
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + WATCH_INTERVAL
        if os.path.exists(self._watch):
            try:
                self.switch_to(self._watch)
            except (OSError, ValueError):
                return
            self._watch = None

    @property
    def path(self):
        return getattr(self.target, "path", self.url)

    def pread(self, n, off):
        if self._watch is not None:
            self._look_for_download()
        t = self.target
        if not self.local:
            return t.pread(n, off)
        t0 = time.monotonic()
        data = t.pread(n, off)
        self._audit_local(t, off, n, t0)
        return data

    def preadinto(self, buf, off):
        if self._watch is not None:
            self._look_for_download()
        t = self.target
        t0 = time.monotonic()
        f = getattr(t, "preadinto", None)
        if f is not None:
            k = f(buf, off)
        else:
            data = t.pread(len(buf), off)
            k = len(data)
            memoryview(buf)[:k] = data
        if self.local:
            self._audit_local(t, off, len(buf), t0)
        return k

    def _audit_local(self, t, off, n, t0):
        dt = time.monotonic() - t0
        if dt >= SLOW_LOCAL_READ:
            audit.io_event("file:pread", getattr(t, "path", ""), off, n, dt)

    def evict(self, off, n):
        ev = getattr(self.target, "evict", None)
        if ev is not None:
            ev(off, n)

    def switch_to(self, path):
        """Route all later reads to the local file at ``path`` (same bytes as the blob)."""
        f = LocalFile(path)
        if f.size != self.size:
            f.close()
            raise ValueError(f"{path}: size {f.size} differs from the blob's {self.size}")
        with self.lock:
            self.retired.append(self.target)
            self.target, self.local = f, True
            self._watch = None

    def close(self):
        with self.lock:
            for t in self.retired + [self.target]:
                t.close()
            self.retired = []
