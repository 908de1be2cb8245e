"""The one read engine of every LSMT file (spec §1.6 step 4).

A *view* (sealed layer, merged layers, writable layer, writable over merged) holds an index
(``SegmentIndex`` columns: offset, length, moffset, zeroed, tag; in sectors) and its layer
files by tag.  ``segments(off, end)`` maps a byte range to a list of segments
``(start, stop, source, pos)``: bytes ``[start, stop)`` are read from ``source`` at ``pos``,
or are zeros when ``source`` is None (a zeroed entry, or a hole: ``_hole`` fills it, with
zeros here and from the lower layers in a stack).  ``pread`` and ``preadinto`` are built on
it and nothing else; a request that one segment covers is read straight into the caller's
buffer (``pread``: returned without a copy).  Requests must be 512-byte aligned in offset and
length; reads past the virtual size come back short, like a file.
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
import threading
from bisect import bisect_right
from functools import partial

from ..errors import OverlaybdError
from ..io import LocalFile, file_name

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


def check_aligned(n: int, off: int, path, what="read") -> None:
    if off < 0 or n < 0 or (n | off) & 511:
        field = "offset" if off < 0 or off & 511 else "length"
        raise AlignmentError(f"{what} arguments must be 512-byte aligned "
                             f"(offset {off}, length {n})", path=path, field=field)


class Source:
    """One layer file as the engine reads it.  ``pread(n, pos)`` and ``readinto(mv, pos)``
    are the fastest calls the file offers (``os.pread``/``os.preadv`` on a plain local
    file's descriptor ``fd``, else the file's own ``pread`` and ``preadinto``), bound once so
    a read costs no extra Python frame.  ``retry`` finishes a short read: once more for the
    remainder; if that hits end of file the rest reads as zeros, any other short result is an
    error naming the view (``owner``), the slot and the file."""

    __slots__ = ("file", "fd", "pread", "readinto", "slot", "owner")

    def __init__(self, f, slot: int, owner):
        self.file = f
        self.fd = f.fd if type(f) is LocalFile else None
        self.slot = slot
        self.owner = owner
        if self.fd is not None:
            self.pread = partial(os.pread, self.fd)
            self.readinto = self._preadv
        else:
            self.pread = f.pread
            self.readinto = getattr(f, "preadinto", None) or self._via_pread

    def _preadv(self, mv, pos: int) -> int:
        return os.preadv(self.fd, [mv], pos)

    def _via_pread(self, mv, pos: int) -> int:
        data = self.file.pread(len(mv), pos)[:len(mv)]
        mv[:len(data)] = data
        return len(data)

    def retry(self, mv, pos: int, got: int) -> None:
        """The first read of ``mv`` at ``pos`` returned ``got`` bytes: finish it."""
        want = len(mv)
        got2 = self.readinto(mv[got:], pos + got)
        if got2 == 0:
            zero_fill(mv[got:])
        elif got + got2 != want:
            raise OverlaybdError(f"short read from layer slot {self.slot} "
                                 f"({file_name(self.file)}): {got}+{got2} of {want} "
                                 f"bytes at offset {pos}", path=self.owner, errno=_errno.EIO)

    def pread_short(self, data, n: int, pos: int) -> bytes:
        """``pread(n, pos)`` returned ``data``, fewer than ``n`` bytes: finish it."""
        buf = bytearray(n)
        buf[:len(data)] = data
        self.retry(memoryview(buf), pos, len(data))
        return bytes(buf)


class SectorView:
    """Base of every LSMT file object.  Subclasses set ``size`` and ``path``, then call
    ``_set_index(index)`` and ``_set_files(files)``; a stack overrides ``_hole``."""

    size = 0
    path = None
    index = None
    _cols = ((), (), (), (), ())
    _srcs = ()

    def _set_index(self, index) -> None:
        self.index = index
        self._cols = index.columns()       # the arrays themselves: inserts update them in place

    def _set_files(self, files, any_tag: bool = False) -> None:
        """Layer files by tag.  ``any_tag``: one file that every tag reads (a writable
        layer's data file, whatever tag stacking gave its entries)."""
        self._files = list(files)
        self._srcs = [Source(f, t, self.path) for t, f in enumerate(self._files)]
        if any_tag:
            self._srcs *= 256

    # -- the map --------------------------------------------------------------------------
    def segments(self, off: int, end: int):
        """``[off, end)`` (512-byte aligned) as a sequence of segments ``(start, stop, source,
        pos)`` in order, covering it exactly (see the module docstring)."""
        offs, lens, moffs, zeros, tags = self._cols
        srcs = self._srcs
        i = bisect_right(offs, off >> 9) - 1
        if i >= 0:
            o = offs[i]
            b = (o + lens[i]) << 9
            if b >= end:                            # entry i covers it all (the common case)
                if zeros[i]:
                    return ((off, end, None, 0),)
                return ((off, end, srcs[tags[i]], ((moffs[i] - o) << 9) + off),)
            if b <= off:
                i += 1                              # entry i is the first to end past off
        else:
            i = 0
        count = len(offs)
        out = []
        pos = off
        try:
            while pos < end:
                a = offs[i] << 9 if i < count else end
                if a > pos:                         # a hole up to entry i (or the end)
                    if a > end:
                        a = end
                    self._hole(out, pos, a)
                    pos = a
                    continue
                b = (offs[i] + lens[i]) << 9
                if b > end:
                    b = end
                if zeros[i]:
                    out.append((pos, b, None, 0))
                else:
                    out.append((pos, b, srcs[tags[i]], (moffs[i] << 9) + pos - a))
                pos = b
                i += 1
        except IndexError:
            raise OverlaybdError(f"index entry {i} refers to layer slot {tags[i]} but only "
                                 f"{len(self._files)} files are open", path=self.path,
                                 field="tag") from None
        return out

    def _hole(self, out: list, a: int, b: int) -> None:
        """Bytes ``[a, b)`` that no entry maps read as zeros."""
        out.append((a, b, None, 0))

    # -- the file protocol ----------------------------------------------------------------
    def pread(self, n: int, off: int) -> bytes:
        if (n | off) & 511 or off < 0 or n < 0:
            check_aligned(n, off, self.path)
        end = off + n
        if end > self.size:
            end = self.size
            if end <= off:
                return b""
        segs = self.segments(off, end)
        if len(segs) == 1:                          # one extent or one hole: no copy
            _, _, src, pos = segs[0]
            if src is None:
                return bytes(end - off)
            fd = src.fd             # os.pread inline: a partial() call costs ~0.1 us more
            data = os.pread(fd, end - off, pos) if fd is not None else src.pread(end - off, pos)
            return data if len(data) == end - off else src.pread_short(data, end - off, pos)
        mv = scratch(end - off)     # a per-thread buffer: a fresh 1 MiB one costs far more
        self._copy(mv, off, segs)
        return bytes(mv)

    def preadinto(self, buf, off: int) -> int:
        mv = buf if type(buf) is memoryview else memoryview(buf)    # (the daemon's slices are)
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
        segs = self.segments(off, end)
        if len(segs) == 1 and segs[0][2] is not None:   # one extent: straight into mv
            src, pos = segs[0][2:]
            fd = src.fd
            got = os.preadv(fd, [mv], pos) if fd is not None else src.readinto(mv, pos)
            if got < end - off:
                src.retry(mv, pos, got)
        else:
            self._copy(mv, off, segs)
        return end - off

    @staticmethod
    def _copy(mv, off: int, segs) -> None:
        """Fill ``mv`` (which starts at byte ``off``) from ``segs``."""
        preadv = os.preadv
        for a, b, src, pos in segs:
            piece = mv[a - off:b - off]
            if src is None:
                piece[:] = zero_view(b - a)[:b - a]
                continue
            fd = src.fd
            got = preadv(fd, [piece], pos) if fd is not None else src.readinto(piece, pos)
            if got < b - a:
                src.retry(piece, pos, got)
