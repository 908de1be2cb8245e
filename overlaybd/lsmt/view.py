"""The read engine shared by every LSMT file: turn index rows into bytes (spec §1.6 step 4).

A *view* answers ``pread``/``preadinto`` from rows ``(offset, length, moffset, zeroed, tag)``
(sectors): a hole or a zeroed row reads as zeros, a data row reads ``length`` sectors at
``moffset`` from ``files[tag]``.  Requests must be 512-byte aligned in offset and length;
reads past the virtual size come back short, like a file.
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
import threading
from bisect import bisect_right

from ..errors import OverlaybdError
from ..io import LocalFile

_ZERO = bytes(1 << 20)
_SCRATCH = threading.local()


class AlignmentError(OverlaybdError, ValueError):
    """A read/write/discard whose offset or length is not a multiple of 512."""

    errno = _errno.EFAULT


def zero_view(n: int):
    """A read-only memoryview of at least ``n`` zero bytes (a shared, reusable buffer)."""
    global _ZERO
    if n > len(_ZERO):
        _ZERO = bytes(1 << max(20, (n - 1).bit_length()))
    return memoryview(_ZERO)


def zero_fill(mv) -> None:
    """Zero a writable memoryview."""
    n = len(mv)
    mv[:] = zero_view(n)[:n]


def scratch(n: int):
    """A writable memoryview of ``n`` bytes from this thread's reusable buffer.  The buffer is
    page-aligned anonymous memory: the kernel copies into a 16-byte-misaligned bytearray
    several times slower on some CPUs."""
    view = getattr(_SCRATCH, "view", None)
    if view is None or len(view) < n:
        view = memoryview(mmap.mmap(-1, 1 << max(20, (n - 1).bit_length())))
        _SCRATCH.view = view
    return view[:n]


def file_name(f) -> str:
    """A name for error messages: the file's ``path`` if it has one."""
    return str(getattr(f, "path", None) or f)


def check_aligned(n: int, off: int, path, what="read") -> None:
    if off < 0 or n < 0 or (n | off) & 511:
        field = "offset" if off < 0 or off & 511 else "length"
        raise AlignmentError(f"{what} arguments must be 512-byte aligned "
                             f"(offset {off}, length {n})", path=path, field=field)


class SectorView:
    """Base of every LSMT file object.  Subclasses set ``size``, ``path`` and
    ``_set_files(files)`` and implement ``_rows(first_sector, end_sector)``."""

    size = 0
    path = None

    def _set_files(self, files) -> None:
        """``files`` by tag.  Plain local files are read with ``os.preadv`` on their fd."""
        self._files = list(files)
        self._fds = [f.fd if type(f) is LocalFile else None for f in self._files]
        self._into = [getattr(f, "preadinto", None) for f in self._files]

    def _rows(self, first: int, end: int):
        raise NotImplementedError

    # -- public protocol ------------------------------------------------------------------
    def pread(self, n: int, off: int) -> bytes:
        check_aligned(n, off, self.path)
        end = min(off + n, self.size)
        if end <= off:
            return b""
        rows = self._rows(off >> 9, (end + 511) >> 9)
        if not rows:
            return bytes(end - off)
        mv = scratch(end - off)
        self.fill(mv, off, end, rows, True)
        return bytes(mv)

    def preadinto(self, buf, off: int) -> int:
        mv = memoryview(buf).cast("B")
        n = len(mv)
        check_aligned(n, off, self.path)
        end = min(off + n, self.size)
        if end <= off:
            return 0
        self.fill(mv[:end - off], off, end, self._rows(off >> 9, (end + 511) >> 9), True)
        return end - off

    # -- engine ---------------------------------------------------------------------------
    def fill(self, mv, off: int, end: int, rows, zero_holes: bool) -> None:
        """Write [off, end) into ``mv`` (which starts at byte ``off``).  Rows are sorted and
        trimmed to the request.  Holes are zeroed only if ``zero_holes``."""
        pos = off
        for o, l, m, z, t in rows:
            a = o << 9
            b = (o + l) << 9
            if b > end:
                b = end
            if a >= b:
                continue
            if zero_holes and a > pos:
                zero_fill(mv[pos - off:a - off])
            if z:
                if zero_holes:
                    zero_fill(mv[a - off:b - off])
            else:
                self.read_into(t, mv[a - off:b - off], m << 9)
            pos = b
        if zero_holes and pos < end:
            zero_fill(mv[pos - off:end - off])

    def _raw_read(self, t: int, mv, pos: int) -> int:
        fd = self._fds[t]
        if fd is not None:
            return os.preadv(fd, [mv], pos)
        into = self._into[t]
        if into is not None:
            return into(mv, pos)
        data = self._files[t].pread(len(mv), pos)[:len(mv)]
        mv[:len(data)] = data
        return len(data)

    def read_into(self, t: int, mv, pos: int) -> None:
        """Fill ``mv`` from ``files[t]`` at ``pos``.  A short read is retried once for the
        remainder; if the retry hits end of file the rest reads as zeros, any other short
        result is an error."""
        if t >= len(self._files):
            raise OverlaybdError(f"index entry refers to layer slot {t} but only "
                                 f"{len(self._files)} files are open", path=self.path,
                                 field="tag")
        got = self._raw_read(t, mv, pos)
        if got < len(mv):
            self.short_read(t, mv, pos, got)

    def short_read(self, t: int, mv, pos: int, got: int) -> None:
        """The first read of ``mv`` returned ``got`` bytes: retry once for the rest."""
        want = len(mv)
        got2 = self._raw_read(t, mv[got:], pos + got)
        if got2 == 0:
            zero_fill(mv[got:])
        elif got + got2 != want:
            raise OverlaybdError(f"short read from layer slot {t} "
                                 f"({file_name(self._files[t])}): {got}+{got2} of {want} "
                                 f"bytes at offset {pos}", path=self.path, errno=_errno.EIO)


class IndexView(SectorView):
    """A view over one SegmentIndex (``self.index``) that walks the index columns directly.
    A request covered by a single entry or a single hole costs one bisect and one ``pread``
    with no copies; others are gathered piece by piece."""

    index = None
    _cols = ()

    def _set_index(self, index) -> None:
        self.index = index
        self._cols = index.columns()

    def _rows(self, first, end):
        return self.index.lookup(first, end - first)

    def pread(self, n: int, off: int) -> bytes:
        if (n | off) & 511 or off < 0 or n < 0:
            check_aligned(n, off, self.path)
        end = off + n
        if end > self.size:
            end = self.size
            if end <= off:
                return b""
        offs, lens, moffs, zeros, tags = self._cols
        i = bisect_right(offs, off >> 9) - 1
        if i >= 0:
            o = offs[i]
            e = (o + lens[i]) << 9
            if e > off:
                if e >= end:                                # one entry covers it all
                    if zeros[i]:
                        return bytes(end - off)
                    t = tags[i]
                    pos = (moffs[i] << 9) + off - (o << 9)
                    fd = self._fds[t]
                    n = end - off
                    data = os.pread(fd, n, pos) if fd is not None else \
                        self._files[t].pread(n, pos)
                    if len(data) == n:
                        return data
                    buf = bytearray(n)
                    buf[:len(data)] = data
                    self.short_read(t, memoryview(buf), pos, len(data))
                    return bytes(buf)
                return self._gather(off, end, i)
        i += 1
        if i >= len(offs) or offs[i] << 9 >= end:       # one hole covers it all
            return bytes(end - off)
        return self._gather(off, end, i)

    def _gather(self, off: int, end: int, i: int) -> bytes:
        """Bytes [off, end) from entry ``i`` on, assembled in a reusable per-thread scratch
        buffer and copied out once (two live 1 MiB allocations per call cost far more)."""
        n = end - off
        mv = scratch(n)
        self._fill(mv, off, end, i, True)
        return bytes(mv)

    def preadinto(self, buf, off: int) -> int:
        mv = memoryview(buf)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        n = mv.nbytes
        if (n | off) & 511 or off < 0:
            check_aligned(n, off, self.path)
        end = off + n
        if end > self.size:
            end = self.size
            if end <= off:
                return 0
            mv = mv[:end - off]
        offs, lens, moffs, zeros, tags = self._cols
        i = bisect_right(offs, off >> 9) - 1
        if i >= 0:
            o = offs[i]
            e = (o + lens[i]) << 9
            if e > off:
                if e < end:
                    self._fill(mv, off, end, i, True)
                elif zeros[i]:
                    mv[:] = zero_view(end - off)[:end - off]
                else:                                       # one data entry covers it all
                    t = tags[i]
                    pos = (moffs[i] << 9) + off - (o << 9)
                    fd = self._fds[t]
                    got = os.preadv(fd, [mv], pos) if fd is not None else \
                        self._raw_read(t, mv, pos)
                    if got < end - off:
                        self.short_read(t, mv, pos, got)
                return end - off
        i += 1
        if i >= len(offs) or offs[i] << 9 >= end:       # one hole covers it all
            mv[:] = zero_view(end - off)[:end - off]
        else:
            self._fill(mv, off, end, i, True)
        return end - off

    def _fill(self, mv, off: int, end: int, i: int, zero_holes: bool) -> None:
        """Write [off, end) into ``mv`` walking the columns from entry ``i`` (the first whose
        end is past ``off``).  Holes and zeroed entries are written only if ``zero_holes``."""
        offs, lens, moffs, zeros, tags = self._cols
        fds = self._fds
        preadv = os.preadv
        zv = zero_view(end - off) if zero_holes else None
        count = len(offs)
        pos = 0                                 # positions below are relative to ``off``
        n = end - off
        while i < count:
            o = offs[i]
            a = (o << 9) - off
            if a >= n:
                break
            b = a + (lens[i] << 9)
            if b > n:
                b = n
            skip = 0
            if a < 0:
                skip = -a
                a = 0
            if zero_holes and a > pos:
                mv[pos:a] = zv[:a - pos]
            if zeros[i]:
                if zero_holes:
                    mv[a:b] = zv[:b - a]
            else:
                t = tags[i]
                fd = fds[t]
                piece = mv[a:b]
                src = (moffs[i] << 9) + skip
                if fd is not None:
                    got = preadv(fd, [piece], src)
                    if got < b - a:
                        self.short_read(t, piece, src, got)
                else:
                    self.read_into(t, piece, src)
            pos = b
            i += 1
        if zero_holes and pos < n:
            mv[pos:n] = zv[:n - pos]
