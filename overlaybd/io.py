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

import ctypes
import errno
import os
import stat

from .errors import FormatError, OverlaybdError

# Files the daemon creates that hold image data (cache blobs, downloads, resultFiles) are
# private to its user; so are the folders it creates for them.  Existing ones keep their mode.
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def make_dirs(path, mode, parents_mode=None):
    """Create folder ``path`` with ``mode`` and its missing parents with ``parents_mode``
    (default ``mode``), exactly: the umask takes no bits off.  Existing folders stay as they
    are."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        make_dirs(parent, mode if parents_mode is None else parents_mode, parents_mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    os.chmod(path, mode)


def make_private_dir(path, mode=PRIVATE_DIR):
    """Create folder ``path`` (``mode``) if it is missing; missing parents get 0755, not the
    umask-dependent default (world-writable under umask 0)."""
    make_dirs(path, mode, 0o755)


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


def file_name(f):
    """What to call file object ``f`` in a message: its ``path``, else its repr."""
    return str(getattr(f, "path", None) or f)


def chunks(src, size=1 << 20):
    """The bytes of ``src`` in pieces of at most ``size``: a file with ``pread``/``size`` (a
    short read before its end is a FormatError) or a stream with ``read``."""
    if hasattr(src, "pread") and hasattr(src, "size"):
        off = 0
        while off < src.size:
            data = src.pread(min(size, src.size - off), off)
            if not data:
                raise FormatError(f"short read at offset {off}", path=file_name(src))
            off += len(data)
            yield data
        return
    while data := src.read(size):
        yield data


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


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_fallocate = ctypes.CDLL(None, use_errno=True).fallocate
_fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_fallocate.restype = ctypes.c_int


def punch_hole(fd, off, n, path=None):
    """Deallocate ``[off, off+n)`` of ``fd`` keeping the file size (``fallocate(PUNCH_HOLE |
    KEEP_SIZE)``): the range reads back as zeros.  A failure is an OSError naming ``path`` (or
    the file ``fd`` refers to)."""
    if n <= 0:
        return
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, off, n) != 0:
        e = ctypes.get_errno()
        err = OSError(e, f"fallocate(punch hole, {off}, {n}): {os.strerror(e)}", path)
        raise fd_error(err, fd)


def pwrite_all(fd, data, off):
    """Write all of ``data`` at ``off`` through descriptor ``fd`` (``os.pwrite`` may take less);
    an OSError names the file."""
    mv = memoryview(data)
    try:
        while mv:
            n = os.pwrite(fd, mv, off)
            mv, off = mv[n:], off + n
    except OSError as e:
        raise fd_error(e, fd) from None


def write_all(out, data):
    """Write all of ``data`` to ``out``: a descriptor (``os.write``, which may take less) or a
    stream whose ``write`` returns how much it took (``None``: all of it)."""
    mv = memoryview(data)
    while mv:
        n = os.write(out, mv) if isinstance(out, int) else out.write(mv)
        if n is None:
            return
        mv = mv[n:]


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
    """Exactly ``n`` bytes at ``off`` of ``f`` (as ``bytes``), or a FormatError naming ``path``
    (default ``f.path``) and the field ``what``."""
    data = f.pread(n, off)
    if len(data) != n:
        raise FormatError(f"truncated: {what} needs {n} bytes at offset {off}, got {len(data)}",
                          path=path or getattr(f, "path", None), field=what)
    return data if isinstance(data, bytes) else bytes(data)
