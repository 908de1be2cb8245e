"""Sorted LSMT indexes held as parallel arrays (spec §1.2, §1.4 "Index0", §1.6, §1.7).

Columns (``array.array``, 20 bytes per entry, all in 512-byte sectors):
``off`` ('q'), ``length`` ('H'), ``moff`` ('q'), ``zeroed`` ('B'), ``tag`` ('B').
Entries are sorted by ``off`` and never overlap.  ``array.array`` keeps per-call lookups cheap
(``bisect`` runs in C on it) while numpy views over the same memory do the bulk work
(decode, validation, merge, compress).

A *row* is a tuple ``(offset, length, moffset, zeroed, tag)``; lookups and tests use rows.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right

import numpy as np

from ..abi.lsmt import MAX_INDEX_SIZE, MAX_LENGTH

_BIG = np.int64(1 << 62)
_TYPES = ("q", "H", "q", "B", "B")
_NP_TYPES = (np.int64, np.uint16, np.int64, np.uint8, np.uint8)


def _np_view(a: array, dtype):
    if len(a) == 0:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(a, dtype=dtype)


def _to_array(code, values, dtype):
    out = array(code)
    values = np.ascontiguousarray(values, dtype=dtype)
    if values.size:
        out.frombytes(values.tobytes())
    return out


class SegmentIndex:
    """A sorted, non-overlapping index.  Sealed and merged indexes only read it; the writable
    layer's Index0 is the same structure plus :meth:`insert`."""

    __slots__ = ("off", "length", "moff", "zeroed", "tag", "alloc")

    def __init__(self, off=None, length=None, moff=None, zeroed=None, tag=None):
        self.off = off if off is not None else array("q")
        self.length = length if length is not None else array("H")
        self.moff = moff if moff is not None else array("q")
        self.zeroed = zeroed if zeroed is not None else array("B")
        self.tag = tag if tag is not None else array("B")
        self.alloc = None

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_numpy(cls, off, length, moff, zeroed, tag) -> SegmentIndex:
        cols = [_to_array(c, v, d) for c, v, d in zip(_TYPES, (off, length, moff, zeroed, tag),
                                                      _NP_TYPES)]
        return cls(*cols)

    @classmethod
    def from_rows(cls, rows) -> SegmentIndex:
        """Rows may be 3-tuples (offset, length, moffset), 4-tuples (+tag) or full rows."""
        full = [_full_row(r) for r in rows]
        if not full:
            return cls()
        cols = list(zip(*full))
        return cls(*(array(c, v) for c, v in zip(_TYPES, cols)))

    def numpy(self):
        """Numpy views (offset, length, moffset, zeroed, tag) over the columns (no copy).
        Do not keep them across :meth:`insert`."""
        return tuple(_np_view(a, d) for a, d in zip(self.columns(), _NP_TYPES))

    def columns(self):
        return (self.off, self.length, self.moff, self.zeroed, self.tag)

    def __len__(self):
        return len(self.off)

    def rows(self):
        return list(zip(*self.columns()))

    def block_count(self) -> int:
        """Allocated (non-zeroed) sectors."""
        if self.alloc is None:
            _, length, _, zeroed, _ = self.numpy()
            self.alloc = int(length[zeroed == 0].sum(dtype=np.int64))
        return self.alloc

    def nbytes(self) -> int:
        return sum(a.itemsize * len(a) for a in self.columns())

    # -- lookup ---------------------------------------------------------------------------
    def first_at(self, sector: int) -> int:
        """Index of the first entry whose end is past ``sector``."""
        off = self.off
        i = bisect_right(off, sector) - 1
        if i < 0 or off[i] + self.length[i] <= sector:
            i += 1
        return i

    def lookup(self, offset: int, length: int, tag=None):
        """Rows inside [offset, offset+length) with the edges trimmed (upstream ``lookup``).
        ``tag`` overrides the rows' tag (used for a writable layer in a stack)."""
        out = []
        if length <= 0:
            return out
        end = offset + length
        off, ln, mo, zr, tg = self.columns()
        i = self.first_at(offset)
        n = len(off)
        while i < n and off[i] < end:
            o, l, m, z = off[i], ln[i], mo[i], zr[i]
            if o < offset:
                d = offset - o
                o, l = offset, l - d
                if not z:
                    m += d
            if o + l > end:
                l = end - o
            out.append((o, l, m, z, tg[i] if tag is None else tag))
            i += 1
        return out

    # -- writable Index0 ------------------------------------------------------------------
    def insert(self, o: int, l: int, m: int, z: int = 0, t: int = 0) -> None:
        """Insert a mapping; it trims, splits or removes every mapping it overlaps
        (newest write wins)."""
        if l <= 0:
            return
        if self.alloc is None:
            self.block_count()
        e = o + l
        off, ln, mo, zr, tg = self.columns()
        i = self.first_at(o)
        j = bisect_left(off, e, i)
        rows = []
        alloc = self.alloc + (0 if z else l)
        if i < j:
            for k in range(i, j):
                if not zr[k]:
                    alloc -= ln[k]
            oi = off[i]
            if oi < o:
                rows.append((oi, o - oi, mo[i], zr[i], tg[i]))
            rows.append((o, l, m, z, t))
            ol, ll = off[j - 1], ln[j - 1]
            if ol + ll > e:
                d = e - ol
                zl = zr[j - 1]
                rows.append((e, ll - d, mo[j - 1] + (0 if zl else d), zl, tg[j - 1]))
            for r in rows:
                if not r[3] and r[0] != o:
                    alloc += r[1]
        else:
            rows.append((o, l, m, z, t))
        self.alloc = alloc
        for col, code, vals in zip(self.columns(), _TYPES, zip(*rows)):
            col[i:j] = array(code, vals)


def _full_row(r):
    if len(r) == 3:
        return (r[0], r[1], r[2], 0, 0)
    if len(r) == 4:
        return (r[0], r[1], r[2], 0, r[3])
    return tuple(r)


# -- merge ("fill the gaps", §1.6 step 3) -----------------------------------------------------
def merge_indexes(indexes, max_size: int = MAX_INDEX_SIZE, keep_tags: bool = False
                  ) -> SegmentIndex:
    """Merge indexes given TOP FIRST into one; each entry's tag becomes its slot (0 = top),
    or stays as it is with ``keep_tags``.

    Every gap left by the layers above is filled from the next lower layer, edges trimmed;
    zeroed entries are real entries and mask lower layers.  Raises ValueError if the result
    would exceed ``max_size`` entries.
    """
    cur = None
    for slot, idx in enumerate(indexes):
        o, ln, mo, zr, tg = idx.numpy()
        o = o.astype(np.int64)
        ln = ln.astype(np.int64)
        mo = mo.astype(np.int64)
        zr = zr.astype(np.uint8)
        tg = tg.copy() if keep_tags else np.full(o.shape, slot, dtype=np.uint8)
        if cur is None:
            cur = [o, ln, mo, zr, tg]
        elif o.size:
            pieces = _fill_gaps(cur, o, ln, mo, zr, tg)
            if pieces[0].size:
                cur = _merge_sorted(cur, pieces)
        if cur[0].size > max_size:
            raise ValueError(f"merged index has {cur[0].size} entries (limit {max_size})")
    if cur is None:
        return SegmentIndex()
    return SegmentIndex.from_numpy(*cur)


def _fill_gaps(cur, o, ln, mo, zr, tg):
    """Pieces of the lower layer (o, ln, mo, zr, tg) that fall into the gaps of ``cur``."""
    c_off, c_len = cur[0], cur[1]
    gs = np.concatenate(([0], c_off + c_len))
    ge = np.concatenate((c_off, [_BIG]))
    keep = gs < ge
    gs, ge = gs[keep], ge[keep]
    e = o + ln
    j0 = np.searchsorted(ge, o, side="right")
    j1 = np.searchsorted(gs, e, side="left")
    cnt = np.maximum(j1 - j0, 0)
    total = int(cnt.sum())
    if total == 0:
        return [np.zeros(0, np.int64)] * 3 + [np.zeros(0, np.uint8)] * 2
    li = np.repeat(np.arange(o.size), cnt)
    first = np.cumsum(cnt) - cnt
    gi = j0[li] + (np.arange(total) - np.repeat(first, cnt))
    ps = np.maximum(o[li], gs[gi])
    pe = np.minimum(e[li], ge[gi])
    z = zr[li]
    pm = mo[li] + np.where(z != 0, 0, ps - o[li])
    return [ps, pe - ps, pm, z, tg[li]]


def _merge_sorted(a, b):
    cols = [np.concatenate((x, y)) for x, y in zip(a, b)]
    order = np.argsort(cols[0], kind="stable")
    return [c[order] for c in cols]


def combo_lookup(upper: SegmentIndex, upper_tag: int, lower, offset: int, length: int):
    """Writable-over-read-only lookup (§1.7): the upper index first, every gap from ``lower``
    (a SegmentIndex or None).  Upper rows carry ``upper_tag``."""
    up = upper.lookup(offset, length, tag=upper_tag)
    if lower is None:
        return up
    out = []
    pos = offset
    end = offset + length
    for r in up:
        if r[0] > pos:
            out.extend(lower.lookup(pos, r[0] - pos))
        out.append(r)
        pos = r[0] + r[1]
    if pos < end:
        out.extend(lower.lookup(pos, end - pos))
    return out


# -- compress (§1.5 step 3) -------------------------------------------------------------------
def compress_rows(rows):
    """Merge neighbours contiguous in logical and mapped space with the same zeroed flag and tag,
    while the combined length stays strictly below MAX_LENGTH (upstream ``compress_raw_index``).
    A zeroed row's mapped end is its moffset."""
    out = []
    if not rows:
        return out
    co, cl, cm, cz, ct = rows[0]
    for o, l, m, z, t in rows[1:]:
        if (co + cl == o and (cm if cz else cm + cl) == m and cz == z and ct == t
                and cl + l < MAX_LENGTH):
            cl += l
        else:
            out.append((co, cl, cm, cz, ct))
            co, cl, cm, cz, ct = o, l, m, z, t
    out.append((co, cl, cm, cz, ct))
    return out
