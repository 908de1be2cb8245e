"""The disk usage of one cache directory, shared by every process that caches into it.

``cacheConfig.cacheSizeGB`` bounds the directory, not one process: the supervisor and every
worker write cache files there.  Each process keeps its own LRU bookkeeping
(``eviction.CacheStore``), but the budget lives in one small file mapped by every process,
``/dev/shm/overlaybd-cache-usage.<hash of the directory's real path>`` (in the directory
itself, as ``.overlaybd-usage``, where there is no ``/dev/shm``; the cache directory keeps
only blob files, as upstream's):

=======  ===========================================================================
offset   u64
=======  ===========================================================================
0        ``measured``: allocated bytes found by the evictor's last pass
8        ``written``: growth reported by any process's cache writes since that pass
16       ``full``: cache writes fail with ENOSPC until a pass ends below the risk mark
24       ``request``: a writer crossed the risk mark; the evictor runs a pass now
64       the directory's real path (NUL-terminated), so a file whose directory is gone
         can be recognised and removed (:func:`sweep_stale`, run at every store's start)
=======  ===========================================================================

Updates hold a POSIX record lock on the file (released by the kernel if the holder dies).
One process is the evictor: whoever holds ``flock(LOCK_EX)`` on the file.  The others try
to take it at every timer tick, so a new one takes over within an interval when the evictor
exits.  ``flock`` and record locks are separate lock kinds on Linux, so they do not interact.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading

from loguru import logger

NAME = ".overlaybd-usage"
SHM_DIR = "/dev/shm"


_PREFIX = "overlaybd-cache-usage."
_PATH_AT = 64


def sweep_stale():
    """Remove the usage files in /dev/shm whose cache directory no longer exists."""
    try:
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(_PREFIX)]
    except OSError:
        return
    for n in names:
        p = os.path.join(SHM_DIR, n)
        try:
            with open(p, "rb") as f:
                f.seek(_PATH_AT)
                root = f.read(SIZE - _PATH_AT).split(b"\0", 1)[0]
            if root and not os.path.isdir(root):
                os.unlink(p)
        except OSError:
            pass


def usage_path(root):
    if os.path.isdir(SHM_DIR):
        key = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:20]
        return os.path.join(SHM_DIR, _PREFIX + key)
    return os.path.join(root, NAME)
SIZE = 4096
_U64 = struct.Struct("Q")
_MEASURED, _WRITTEN, _FULL, _REQUEST = 0, 8, 16, 24


class SharedUsage:
    def __init__(self, root):
        self.root = root
        self._open()

    def _open(self):
        root = self.root
        self.path = usage_path(root)
        self.fd = -1
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # blocks allocated now: a sparse page first touched on a full disk is a SIGBUS
            os.posix_fallocate(self.fd, 0, SIZE)
            self.mm = mmap.mmap(self.fd, SIZE)
            real = os.path.realpath(root).encode()[:SIZE - _PATH_AT - 1]
            self.mm[_PATH_AT:_PATH_AT + len(real) + 1] = real + b"\0"
        except OSError as e:
            if self.fd >= 0:
                os.close(self.fd)
            self.fd = -1                        # alone: no file locks, always the evictor
            self.mm = mmap.mmap(-1, SIZE)
            logger.warning("cache {}: cannot keep the shared usage file {} ({}): this process "
                           "accounts and evicts the cache alone", root, self.path, e.strerror)
        self.evictor = self.fd < 0
        self._tlock = threading.Lock()

    def _get(self, off):
        return _U64.unpack_from(self.mm, off)[0]

    def _put(self, off, v):
        _U64.pack_into(self.mm, off, v)

    def _locked(self, fn):
        with self._tlock:
            if self.fd < 0:
                return fn()
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
            try:
                return fn()
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)

    # -- any process ---------------------------------------------------------------------
    def try_become_evictor(self) -> bool:
        if not self.evictor:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.evictor = True
            except BlockingIOError:
                pass
        return self.evictor

    def add_written(self, n) -> int:
        """Report ``n`` more bytes in the directory; returns the estimated total."""
        def step():
            w = self._get(_WRITTEN) + max(0, n)
            self._put(_WRITTEN, w)
            return self._get(_MEASURED) + w
        return self._locked(step)

    def request_pass(self):
        """Stop cache writes and ask the evictor for a pass."""
        def step():
            self._put(_FULL, 1)
            self._put(_REQUEST, 1)
        self._locked(step)

    @property
    def total(self) -> int:
        return self._locked(lambda: self._get(_MEASURED) + self._get(_WRITTEN))

    @property
    def full(self) -> bool:
        return bool(self._get(_FULL))         # one aligned word: no lock needed to read it

    @property
    def requested(self) -> bool:
        return bool(self._get(_REQUEST))

    # -- the evictor ---------------------------------------------------------------------
    def publish(self, measured, full):
        """A pass measured ``measured`` bytes: growth reported before it is accounted."""
        def step():
            self._put(_MEASURED, measured)
            self._put(_WRITTEN, 0)
            self._put(_FULL, int(full))
            self._put(_REQUEST, 0)
        self._locked(step)

    def close(self):
        """Unmap and close.  The evictor's flock goes with the last descriptor of its open
        file: a forked child closing its inherited copy leaves the parent's lock alone."""
        if not self.mm.closed:
            self.mm.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.evictor = False

    def reopen_after_fork(self):
        """In a forked child: the inherited descriptor shares the parent's open file (and so
        its evictor lock); take a descriptor of our own, as a non-evictor."""
        self.close()
        self._open()
