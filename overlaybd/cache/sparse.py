"""Sparse-file primitives: which ranges of a file hold data, byte-range locks (holes are
punched with :func:`overlaybd.io.punch_hole`).

Presence is the file's allocated extents (``SEEK_DATA``/``SEEK_HOLE``), so it is shared by
every process that opens the same cache file and survives restarts.  ``RangeLock`` serializes
work on overlapping byte ranges between threads (a condition variable) and between processes
(open-file-description ``fcntl`` locks, which are not dropped when another descriptor of the
same file is closed).
"""

import errno
import fcntl
import os
import struct
import threading
from contextlib import contextmanager

PAGE = 4096
F_OFD_SETLKW = getattr(fcntl, "F_OFD_SETLKW", 38)


def align_down(x, a=PAGE):
    return x - x % a


def align_up(x, a=PAGE):
    return -(-x // a) * a


_HOLE_SUPPORT = {}
_HOLE_LOCK = threading.Lock()


def reports_holes(directory):
    """True when files in ``directory`` report their holes (``SEEK_HOLE`` finds one in a fresh
    sparse file).  Filesystems without it (hostfs, some FUSE and network filesystems) call a
    whole file data, which would make an empty cache file look fully cached: the caches must
    not be used there.  Probed once per filesystem (st_dev).  Raises OSError naming
    ``directory`` when the probe file cannot be written (a full disk, a quota, no permission):
    that says nothing about holes, so it is not remembered."""
    dev = os.stat(directory).st_dev
    with _HOLE_LOCK:
        if dev not in _HOLE_SUPPORT:
            _HOLE_SUPPORT[dev] = _probe_holes(directory)
        return _HOLE_SUPPORT[dev]


def _probe_holes(directory):
    fd = -1
    path = os.path.join(directory, f".hole-probe.{os.getpid()}.{threading.get_ident()}")
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            os.ftruncate(fd, 1 << 20)
            os.pwrite(fd, b"x" * PAGE, 512 << 10)
        except OSError as e:
            raise OSError(e.errno, e.strerror, directory) from None
        try:
            return os.lseek(fd, 0, os.SEEK_HOLE) == 0 and \
                os.lseek(fd, 0, os.SEEK_DATA) == 512 << 10
        except OSError:
            return False
    finally:
        if fd >= 0:
            os.close(fd)
            os.unlink(path)


def no_space(e):
    """True when OSError ``e`` means the disk (or the user's quota) is full."""
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def holes(fd, start, end):
    """The holes (unallocated ranges) of ``[start, end)`` as a list of (s, e), in order.
    Bytes at or past the end of the file count as a hole."""
    out = []
    pos = start
    while pos < end:
        try:
            h = os.lseek(fd, pos, os.SEEK_HOLE)
        except OSError as e:
            if e.errno != errno.ENXIO:          # pos at/after EOF
                raise
            out.append((pos, end))
            break
        if h >= end:
            break
        try:
            d = os.lseek(fd, h, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:          # no data after h
                raise
            d = end
        out.append((h, min(d, end)))
        pos = d
    return out


def fully_present(fd, start, end):
    """True when every byte of ``[start, end)`` is allocated."""
    if start >= end:
        return True
    try:
        return os.lseek(fd, start, os.SEEK_HOLE) >= end
    except OSError as e:
        if e.errno == errno.ENXIO:
            return False
        raise


def allocated_bytes(fd_or_path):
    st = os.fstat(fd_or_path) if isinstance(fd_or_path, int) else os.stat(fd_or_path)
    return st.st_blocks * 512


def _flock(fd, typ, start, n):
    # struct flock on Linux x86-64/aarch64: short l_type, short l_whence, off_t l_start,
    # off_t l_len, pid_t l_pid (must be 0 for OFD locks), padded to 32 bytes.
    fcntl.fcntl(fd, F_OFD_SETLKW, struct.pack("hhxxxxqqi4x", typ, os.SEEK_SET, start, n, 0))


class RangeLock:
    """Exclusive locks on byte ranges of one open file, for threads and processes alike."""

    def __init__(self, fd):
        self.fd = fd
        self.cond = threading.Condition()
        self.held = []

    @contextmanager
    def hold(self, start, end):
        with self.cond:
            while any(s < end and start < e for s, e in self.held):
                self.cond.wait()
            self.held.append((start, end))
        try:
            _flock(self.fd, fcntl.F_WRLCK, start, end - start)
            try:
                yield
            finally:
                _flock(self.fd, fcntl.F_UNLCK, start, end - start)
        finally:
            with self.cond:
                self.held.remove((start, end))
                self.cond.notify_all()
