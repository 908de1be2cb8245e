"""One append-only file shared by every process of the service, with upstream's rotation.

The log (:mod:`overlaybd.log`) and the audit file (:mod:`overlaybd.audit`) both write through
:class:`LogFile`.  The supervisor and its forked workers each hold their own descriptor of the
same path; correctness across them comes from the file, not from per-process counters:

* every line is one ``write`` to an ``O_APPEND`` descriptor made while holding ``flock(LOCK_EX)``
  on that descriptor, so lines stay whole and each process's lines keep their order;
* after taking the lock, the descriptor's inode is compared with the path's: when another
  process has rotated the file (or logrotate moved it away) the descriptor is closed and the
  path opened again, so all processes write into the same current file;
* the size is the file's own (``fstat``), so a limit holds whichever process wrote the bytes, and
  a restarted service continues the file it finds instead of counting from 0;
* once a line takes the file past ``max_bytes`` the writer, still holding the lock, shifts the
  generations (``f.(k)`` -> ``f.(k+1)``, ``f`` -> ``f.1``, the one that would reach index
  ``max_files`` deleted; spec §10.1), so a file exceeds the limit by at most that one line.

After ``fork`` a child must not share the parent's open file description: ``flock`` locks belong
to it, so parent and child would not exclude each other.  A fork hook gives
every open :class:`LogFile` in the child a fresh thread lock and drops the inherited descriptor
(closing it, never unlocking it: an unlock would release the parent's lock); the child opens the
path on its next line (reset through :mod:`overlaybd.forksafe`).

:func:`reopen_all` (SIGHUP) closes every file's descriptor so the next line opens the path; from a
signal handler (``blocking=False``) a file that is being written is closed by that write instead.
Files are created ``mode`` (default 0600), missing folders ``dir_mode_for(mode)`` (0700).
"""

import errno
import fcntl
import os
import threading
import weakref

from . import forksafe
from .io import make_dirs, write_all

DEFAULT_MODE = 0o600
_REOPEN_TRIES = 64

_files = weakref.WeakSet()      # every open LogFile of this process, for SIGHUP


def dir_mode_for(mode):
    """The mode of a folder made for files of ``mode``: who may read a file may enter."""
    m = mode | 0o700
    for read, enter in ((0o040, 0o010), (0o004, 0o001)):
        if mode & read:
            m |= read | enter
    return m


class LogFile:
    """``write(str)`` appends one line; rotated past ``max_bytes``, ``max_files`` files kept."""

    def __init__(self, path, max_bytes, max_files, mode=DEFAULT_MODE):
        self.path = path
        self.max_bytes = max_bytes
        self.max_files = max(1, max_files)
        self.mode = mode
        self.fd = -1
        self._lock = threading.Lock()
        self._stale = False
        self._open()                 # fail now (unwritable folder) rather than at the first line
        _files.add(self)
        forksafe.track(self)

    # -- the descriptor ------------------------------------------------------------------------
    def _open(self):
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            self.fd = os.open(self.path, flags, self.mode)
        except FileNotFoundError:    # the folder is missing (first start, or removed by hand)
            make_dirs(os.path.dirname(self.path), dir_mode_for(self.mode))
            self.fd = os.open(self.path, flags, self.mode)

    def _close(self):
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)            # also drops our flock, if held

    def _current(self):
        """Our descriptor, locked, naming the file the path names now."""
        for _ in range(_REOPEN_TRIES):
            if self.fd < 0:
                self._open()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            st = os.fstat(self.fd)
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                return st
            self._close()               # rotated or moved away: follow the path
        raise OSError(errno.EAGAIN, "the file keeps being replaced", self.path)

    # -- writing -------------------------------------------------------------------------------
    def write(self, message):
        data = message.encode() if isinstance(message, str) else bytes(message)
        with self._lock:
            if self._stale:
                self._stale = False
                self._close()
            try:
                st = self._current()
                write_all(self.fd, data)
                if st.st_size + len(data) > self.max_bytes:
                    self._rotate()
            finally:
                if self.fd >= 0:
                    if self._stale:             # SIGHUP arrived while we wrote
                        self._stale = False
                        self._close()
                    else:
                        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _rotate(self):
        """Shift the generations; the caller holds the lock on the current file."""
        p, n = self.path, self.max_files
        for k in range(n - 1, 0, -1):
            src = p if k == 1 else f"{p}.{k - 1}"
            try:
                os.rename(src, f"{p}.{k}")
            except FileNotFoundError:
                pass
        if n == 1:
            os.unlink(p)
        self._close()               # the others notice the new inode; so do we, on the next line

    # -- life cycle ----------------------------------------------------------------------------
    def reopen(self, blocking=True):
        """Drop the descriptor; the next line opens the path (after logrotate: SIGHUP).  From a
        signal handler pass ``blocking=False``: a write in progress closes it when done."""
        self._stale = True
        if self._lock.acquire(blocking):
            try:
                if self._stale:
                    self._stale = False
                    self._close()
            finally:
                self._lock.release()

    def close(self):
        with self._lock:
            self._close()
        _files.discard(self)

    def _after_fork_in_child(self):
        self._lock = threading.Lock()
        self._stale = False
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)            # the parent's open file description stays as it is
            except OSError:
                pass


def reopen_all(blocking=True):
    """SIGHUP: every log and audit file of this process opens its path again."""
    for f in list(_files):
        f.reopen(blocking)
