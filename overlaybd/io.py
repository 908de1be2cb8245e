"""The file protocol every module of the I/O stack implements, and the local-file source.

A *file* is any object with:

* ``size`` -- int, bytes readable (the virtual size for images);
* ``pread(n, off) -> bytes`` -- up to ``n`` bytes at ``off``; short only at end of file;
* ``close()``.

Optional capabilities, looked up with ``getattr``:

* ``preadinto(buf, off) -> int`` -- fill a writable buffer (memoryview) in place;
* ``evict(off, n)`` -- drop a cached byte range so the next read refetches it
  (cached sources implement it; ZFile uses it to retry a block whose CRC fails);
* ``pwrite(data, off)``, ``discard(off, n)``, ``fsync()`` -- writable files;
* ``path`` -- a name for error messages and audit lines.
"""

import errno
import os
import stat

from .errors import FormatError, OverlaybdError

# Files the daemon creates that hold image data (cache blobs, downloads, resultFiles) are
# private to its user; so are the folders it creates for them.  Existing ones keep their mode.
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def make_private_dir(path, mode=PRIVATE_DIR):
    """Create folder ``path`` (``mode``) if it is missing; missing parents get 0755, not the
    umask-dependent default (world-writable under umask 0)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        make_private_dir(parent, 0o755)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


class LocalFile:
    """A local file opened read-only (or read-write), read with ``os.pread``."""

    def __init__(self, path, writable=False):
        self.path = os.fspath(path)
        flags = os.O_RDWR if writable else os.O_RDONLY
        try:
            self.fd = os.open(self.path, flags | os.O_CLOEXEC)
        except OSError as e:
            raise OverlaybdError(f"failed to open local file {self.path}: {e.strerror}",
                                 errno=e.errno) from e
        st = os.fstat(self.fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(self.fd)
            self.fd = -1
            raise OverlaybdError("failed to open local file: it is a directory", path=self.path,
                                 errno=errno.EISDIR)
        self.size = st.st_size

    def pread(self, n, off):
        try:
            return os.pread(self.fd, n, off)
        except OSError as e:        # a read error on a descriptor names no file: name it
            raise OSError(e.errno, e.strerror, self.path) from None

    def preadinto(self, buf, off):
        try:
            return os.preadv(self.fd, [buf], off)
        except OSError as e:
            raise OSError(e.errno, e.strerror, self.path) from None

    def pwrite(self, data, off):
        n = os.pwrite(self.fd, data, off)
        if off + n > self.size:
            self.size = off + n
        return n

    def fsync(self):
        os.fsync(self.fd)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"LocalFile({self.path!r})"


class BytesFile:
    """An in-memory file; handy for tests and small headers."""

    def __init__(self, data, path="<memory>"):
        self.data = bytes(data)
        self.size = len(self.data)
        self.path = path

    def pread(self, n, off):
        return self.data[off:off + n]

    def close(self):
        pass


def fd_error(e, fd):
    """OSError ``e`` from a call on descriptor ``fd`` (such errors name no file), naming the
    file ``fd`` refers to."""
    if e.filename is not None:
        return e
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return e
    return OSError(e.errno, e.strerror, path)


def pread_by_preadinto(f, n, off):
    """``f.pread`` for files whose native read is ``preadinto``: clamp to ``f.size``, fill a
    fresh buffer, return its bytes."""
    n = min(n, f.size - off)
    if n <= 0:
        return b""
    buf = bytearray(n)
    got = f.preadinto(memoryview(buf), off)
    return bytes(buf) if got == n else bytes(buf[:got])


def read_exact(f, n, off, what="data", path=None):
    """Read exactly ``n`` bytes at ``off`` from ``f`` or raise a FormatError naming ``what``
    (the field) and ``path`` (default: the file's own)."""
    data = f.pread(n, off)
    if len(data) != n:
        raise FormatError(f"truncated: {what} needs {n} bytes at offset {off}, got {len(data)}",
                          path=path or getattr(f, "path", None), field=what)
    return data
