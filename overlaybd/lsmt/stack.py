"""A writable layer stacked over the merged read-only lowers (spec §1.7, "combo index")."""

from __future__ import annotations

from .merged import MergedFile
from .rw import WritableLayer
from .view import SectorView


class StackedFile(SectorView):
    """Reads walk the upper index, and every hole in it is mapped by the lowers' merged view;
    writes and discards go to the upper.  Upper entries carry tag n (lower slots 0..n-1, top
    first), as in upstream's combo index."""

    def __init__(self, upper: WritableLayer, lower: MergedFile):
        self.upper = upper
        self.lower = lower
        self.layers = list(lower.layers)
        n = len(lower.files)
        upper.set_rw_tag(n)
        if upper.vsize == 0:
            upper.update_vsize(lower.size)
        self.path = upper.path
        self._set_index(upper.index)
        self._set_files([upper.data], any_tag=True)

    @property
    def size(self) -> int:
        return self.upper.vsize

    @property
    def virtual_size(self) -> int:
        return self.upper.vsize

    def _hole(self, out, a, b):
        out += self.lower.segments(a, b)

    def pwrite(self, data, off: int) -> int:
        return self.upper.pwrite(data, off)

    def discard(self, off: int, n: int) -> None:
        self.upper.discard(off, n)

    def fsync(self) -> None:
        self.upper.fsync()

    def allocated_sectors(self) -> int:
        """Sectors allocated in the upper layer (upstream reports the writable index's)."""
        return self.upper.allocated_sectors()

    def close(self) -> None:
        self.upper.close()
        self.lower.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"StackedFile({self.upper!r} over {self.lower!r})"


def stack(upper: WritableLayer, lower: MergedFile | None):
    """The writable image: ``upper`` over ``lower`` (or ``upper`` itself if there are no
    lowers).  An upper with virtual size 0 takes the lowers' size (header updated too)."""
    if lower is None:
        return upper
    return StackedFile(upper, lower)
