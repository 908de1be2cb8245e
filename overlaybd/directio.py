"""Local layer files read with ``O_DIRECT`` (``ioEngine: 1``), and the opener that picks it.

Upstream's ``ioEngine`` 1 reads local layer files through libaio with ``O_DIRECT``.  What that
buys is memory, not speed: a layer's bytes are cached once, in the page cache of the block
device the kernel builds over the image, instead of twice (once more under the layer files).
``DirectFile`` gives the same: every read goes to the disk through an aligned bounce buffer
(``O_DIRECT`` wants the offset, the length and the buffer address aligned to the logical block
size; 4 KiB covers every disk) and the wanted bytes are copied out of it.

A file system that refuses ``O_DIRECT`` (tmpfs, some FUSE and network file systems answer
EINVAL at open) gets positional reads instead, with one warning naming the file.  ``ioEngine:
2`` (POSIX aio upstream) is served as 0; the settings warn about it once.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

from loguru import logger

from .errors import OverlaybdError
from .io import LocalFile, pread_by_preadinto

ALIGN = 4096
BOUNCE = 1 << 20                 # bounce buffer per thread; larger reads go in pieces

_tls = threading.local()


def _bounce():
    buf = getattr(_tls, "bounce", None)
    if buf is None:
        buf = _tls.bounce = memoryview(mmap.mmap(-1, BOUNCE))      # page-aligned
    return buf


class DirectFile(LocalFile):
    """A read-only local file opened with ``O_DIRECT``; reads of any offset and length."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.fd = -1
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as e:
            raise OverlaybdError(f"failed to open local file {self.path} with O_DIRECT: "
                                 f"{e.strerror}", errno=e.errno) from e
        self.size = os.fstat(self.fd).st_size

    def pread(self, n, off):
        return pread_by_preadinto(self, n, off)

    def preadinto(self, buf, off):
        mv = memoryview(buf).cast("B")
        n = min(len(mv), max(0, self.size - off))
        bounce = _bounce()
        done = 0
        while done < n:
            pos = off + done
            a = pos - pos % ALIGN
            want = min(n - done, BOUNCE - (pos - a))
            length = -(-(pos - a + want) // ALIGN) * ALIGN
            try:
                got = os.preadv(self.fd, [bounce[:length]], a)
            except OSError as e:
                raise OSError(e.errno, e.strerror, self.path) from None
            take = min(want, got - (pos - a))
            if take <= 0:
                break                                   # end of file
            mv[done:done + take] = bounce[pos - a:pos - a + take]
            done += take
        return done

    def pwrite(self, data, off):
        raise OSError(errno.EROFS, "read-only", self.path)


def open_local(path, io_engine=0):
    """A lower's local file for ``ioEngine``: 1 = ``DirectFile`` (positional reads, with a
    warning, where the file system refuses ``O_DIRECT``); 0 and 2 = ``LocalFile``."""
    if io_engine == 1:
        try:
            return DirectFile(path)
        except OverlaybdError as e:
            if e.errno != errno.EINVAL:
                raise
            logger.warning("ioEngine 1: {} is on a file system that refuses O_DIRECT; it is "
                           "read through the page cache (as ioEngine 0)", path)
    return LocalFile(path)
