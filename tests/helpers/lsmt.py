"""Helpers for the LSMT tests and benchmarks: hashing views, building layers quickly."""

from __future__ import annotations

import hashlib

import numpy as np

from overlaybd.abi.lsmt import (
    FLAG_DATA,
    FLAG_HEADER,
    FLAG_SEALED,
    HT_SPACE,
    INVALID_ENTRY,
    HeaderTrailer,
    encode_entries,
    pack_entry,
)

STEP = 4 << 20


def sha256_view(view, offset=0, length=None, step=STEP) -> str:
    """sha256 of ``length`` bytes of a view read through its ``pread`` in ``step`` chunks."""
    end = view.size if length is None else offset + length
    h = hashlib.sha256()
    pos = offset
    while pos < end:
        n = min(step, end - pos)
        data = view.pread(n, pos)
        assert len(data) == n, (pos, n, len(data))
        h.update(data)
        pos += n
    return h.hexdigest()


def nonzero_extents(view, step=STEP):
    """Byte runs [offset, length] that are not zero, merged across reads (sector granular)."""
    runs = []
    pos = 0
    while pos < view.size:
        data = np.frombuffer(view.pread(min(step, view.size - pos), pos), dtype=np.uint8)
        sec = data.reshape(-1, 512).any(axis=1)
        idx = np.flatnonzero(np.diff(np.concatenate(([0], sec.astype(np.int8), [0]))))
        for a, b in zip(idx[0::2], idx[1::2]):
            a, b = pos + int(a) * 512, pos + int(b) * 512
            if runs and runs[-1][0] + runs[-1][1] == a:
                runs[-1][1] += b - a
            else:
                runs.append([a, b - a])
        pos += len(data)
    return runs


def sealed_bytes(rows, data: bytes, vsize: int, uuid=bytes(16), parent=bytes(16),
                 pad_to=256, header_flags=FLAG_HEADER | FLAG_DATA | FLAG_SEALED,
                 trailer_flags=FLAG_DATA | FLAG_SEALED, index_size=None,
                 index_offset=None, raw_entries: bytes | None = None) -> bytes:
    """A sealed layer image: header, ``data`` (starting at sector 8), index from ``rows``
    ((offset, length, moffset[, zeroed[, tag]]) in sectors) padded to ``pad_to`` entries,
    trailer.  Keyword overrides produce malformed files."""
    ents = raw_entries
    if ents is None:
        ents = b"".join(pack_entry(*r) for r in rows)
        n = len(rows)
        if pad_to:
            ents += INVALID_ENTRY * (-n % pad_to)
    ioff = HT_SPACE + len(data) if index_offset is None else index_offset
    isize = len(ents) // 16 if index_size is None else index_size
    hdr = HeaderTrailer.new(header_flags, virtual_size=vsize, uuid=uuid, parent_uuid=parent)
    trl = HeaderTrailer.new(trailer_flags, index_offset=ioff, index_size=isize,
                            virtual_size=vsize, uuid=uuid, parent_uuid=parent)
    return hdr.pack() + data + ents + trl.pack()


def write_big_sealed(path, n_entries: int, sectors_per_entry: int = 1, gap: int = 1,
                     random_data: bool = False, seed: int = 1) -> int:
    """Write a sealed layer with ``n_entries`` data entries quickly (vectorised, no padding):
    entry i maps ``sectors_per_entry`` sectors at logical sector i*(spe+gap) to data sector
    8 + i*spe.  The data area is random or (default) a file hole.  Returns the virtual size."""
    spe = sectors_per_entry
    i = np.arange(n_entries, dtype=np.uint64)
    off = i * np.uint64(spe + gap)
    moff = np.uint64(8) + i * np.uint64(spe)
    ents = encode_entries(off, np.full(n_entries, spe), moff, np.zeros(n_entries),
                          np.zeros(n_entries))
    vsize = n_entries * (spe + gap) * 512
    data_bytes = n_entries * spe * 512
    hdr = HeaderTrailer.new(FLAG_HEADER | FLAG_DATA | FLAG_SEALED, virtual_size=vsize)
    trl = HeaderTrailer.new(FLAG_DATA | FLAG_SEALED, index_offset=HT_SPACE + data_bytes,
                            index_size=n_entries, virtual_size=vsize)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(hdr.pack())
        left = data_bytes
        while random_data and left:
            n = min(left, 16 << 20)
            f.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            left -= n
        f.seek(HT_SPACE + data_bytes)
        f.write(ents)
        f.write(trl.pack())
    return vsize
