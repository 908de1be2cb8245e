"""Sealed (read-only) LSMT layers (spec §1.3): open and validate, then read as a view."""

from __future__ import annotations

import numpy as np

from ..abi.lsmt import (
    ENTRY_SIZE,
    HT_SPACE,
    INVALID_OFFSET,
    MAX_OFFSET,
    MAX_RO_INDEX_SIZE,
    HeaderTrailer,
    decode_entries,
)
from ..errors import FormatError
from ..io import file_name, read_exact
from .index import _NP_TYPES, SegmentIndex
from .view import SectorView

DATA_BEGIN = HT_SPACE >> 9          # first sector a mapping may point at
LOAD_CHUNK = 1 << 16                # index entries decoded per step


def file_size(f) -> int:
    size = getattr(f, "size", None)
    if size is None:
        raise FormatError("file object has no size", path=file_name(f), field="size")
    return int(size)


def read_header(f, name: str) -> HeaderTrailer:
    """The header at offset 0: LSMT magic and the is_header flag (upstream ``verify_ht``)."""
    ht = HeaderTrailer.unpack(read_exact(f, HT_SPACE, 0, "header", name))
    if not ht.magic_ok:
        raise FormatError("bad LSMT magic in header", path=name, field="magic")
    if not ht.is_header:
        raise FormatError(f"header flags 0x{ht.flags:x} lack the header bit", path=name,
                          field="flags")
    return ht


def validate_mappings(off, length, moff, zeroed, begin: int, end: int, name: str,
                      check_order: bool = True, prev_end: int = 0, base: int = 0) -> None:
    """Upstream's checks on a loaded index: sorted and non-overlapping (if ``check_order``;
    the first entry must not start before ``prev_end``); data entries map inside
    [begin, end) sectors, zeroed ones have begin <= moffset <= end.  ``base`` numbers the
    entries in messages."""
    off = off.astype(np.int64, copy=False)
    ln = length.astype(np.int64)
    mo = moff.astype(np.int64, copy=False)
    if check_order and off.size:
        if int(off[0]) < prev_end:
            raise FormatError(f"index entry {base} at offset {int(off[0])} is unsorted or "
                              f"overlaps the previous one ending at {prev_end}", path=name,
                              field="index")
        bad = np.flatnonzero(off[1:] < off[:-1] + ln[:-1])
        if bad.size:
            k = int(bad[0])
            raise FormatError(f"index entries {base + k} and {base + k + 1} are unsorted or "
                              f"overlap (offset {int(off[k])}+{int(ln[k])} > "
                              f"{int(off[k + 1])})", path=name, field="index")
    z = zeroed != 0
    mend = mo + ln
    ok = np.where(z, (begin <= mo) & (mo <= end),
                  (begin <= mo) & (mo < end) & (begin < mend) & (mend <= end))
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        raise FormatError(f"index entry {base + k} (offset {int(off[k])}, length {int(ln[k])}, "
                          f"moffset {int(mo[k])}, zeroed {int(z[k])}) maps outside the data "
                          f"area [{begin}, {end}) sectors", path=name, field="moffset")


def decode_valid(raw, name: str):
    """Decode packed entries, drop padding (offset 2^50-1) and empty entries, force tags to 0."""
    off, length, moff, zeroed, tag = decode_entries(raw)
    keep = (off != np.uint64(INVALID_OFFSET)) & (length != 0)
    if not keep.all():
        off, length, moff, zeroed = off[keep], length[keep], moff[keep], zeroed[keep]
    return off, length, moff, zeroed, np.zeros(off.shape, dtype=np.uint8)


def load_sealed_index(f, index_offset: int, count: int, name: str) -> SegmentIndex:
    """Read and validate ``count`` packed entries at ``index_offset`` chunk by chunk, straight
    into the final columns (keeps the memory added by a big index near 20 bytes/entry)."""
    index = SegmentIndex()
    if count == 0:
        return index
    cols = index.columns()
    for col in cols:
        col.extend(col.__class__(col.typecode, [0]) * count)
    views = [np.frombuffer(c, dtype=d) for c, d in zip(cols, _NP_TYPES)]
    n = 0
    prev_end = 0
    end = index_offset >> 9
    for start in range(0, count, LOAD_CHUNK):
        k = min(LOAD_CHUNK, count - start)
        raw = read_exact(f, k * ENTRY_SIZE, index_offset + start * ENTRY_SIZE, "index", name)
        off, length, moff, zeroed, _ = decode_valid(raw, name)
        validate_mappings(off, length, moff, zeroed, DATA_BEGIN, end, name,
                          prev_end=prev_end, base=n)
        m = off.size
        if m:
            for i, c in enumerate((off, length, moff, zeroed)):
                views[i][n:n + m] = c
            prev_end = int(off[-1]) + int(length[-1])
            n += m
    del views
    for col in cols:
        del col[n:]
    return index


class SealedLayer(SectorView):
    """A sealed LSMT layer read from any file object with ``pread`` and ``size``.

    Attributes: ``header`` and ``trailer`` (HeaderTrailer), ``virtual_size`` (= ``size``),
    ``uuid``/``parent_uuid`` (trailer text), ``index`` (SegmentIndex, tags 0), ``file``."""

    def __init__(self, f, header: HeaderTrailer, trailer: HeaderTrailer, index: SegmentIndex,
                 name: str):
        self.file = f
        self.path = name
        self.header = header
        self.trailer = trailer
        self._set_index(index)
        self.virtual_size = trailer.virtual_size
        self.size = trailer.virtual_size
        self.uuid = trailer.uuid
        self.parent_uuid = trailer.parent_uuid
        self._set_files([f])

    def allocated_sectors(self) -> int:
        return self.index.block_count()

    def close(self) -> None:
        close = getattr(self.file, "close", None)
        if close is not None:
            close()

    def __repr__(self):
        return f"SealedLayer({self.path!r}, entries={len(self.index)})"


def open_ro(f, name: str | None = None) -> SealedLayer:
    """Open a sealed layer: header, trailer, index, and every upstream validation (§1.3).
    Raises FormatError naming the file and the field on any inconsistency."""
    name = name or file_name(f)
    size = file_size(f)
    if size < 2 * HT_SPACE:
        raise FormatError(f"file of {size} bytes is too small for an LSMT header and trailer",
                          path=name, field="size")
    header = read_header(f, name)
    if not header.is_data_file:
        raise FormatError(f"header flags 0x{header.flags:x}: not a data file", path=name,
                          field="flags")
    trailer_off = size - HT_SPACE
    trailer = HeaderTrailer.unpack(read_exact(f, HT_SPACE, trailer_off, "trailer", name))
    if not trailer.magic_ok:
        raise FormatError("bad LSMT magic in trailer", path=name, field="magic")
    if trailer.is_header or not trailer.is_data_file or not trailer.is_sealed:
        raise FormatError(f"trailer flags 0x{trailer.flags:x} are not a sealed data-file "
                          "trailer", path=name, field="flags")
    if trailer.index_size > MAX_RO_INDEX_SIZE:
        raise FormatError(f"index_size {trailer.index_size} exceeds {MAX_RO_INDEX_SIZE}",
                          path=name, field="index_size")
    index_bytes = trailer.index_size * ENTRY_SIZE
    if trailer.index_offset > trailer_off or index_bytes > trailer_off - trailer.index_offset:
        raise FormatError(f"index ({trailer.index_size} entries at offset "
                          f"{trailer.index_offset}) runs past the trailer at {trailer_off}",
                          path=name, field="index_offset")
    if trailer.virtual_size > MAX_OFFSET << 9:
        raise FormatError(f"virtual_size {trailer.virtual_size} is beyond the addressable "
                          "range", path=name, field="virtual_size")
    index = load_sealed_index(f, trailer.index_offset, trailer.index_size, name)
    return SealedLayer(f, header, trailer, index, name)
