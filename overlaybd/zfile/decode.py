"""How a run of ZFile blocks becomes bytes: two interchangeable strategies.

A *run* is blocks ``[i, j)`` whose stored bytes (payload, then the CRC when the file has
them) lie back to back in ``raw``, read from file offset ``offs[i]``.  A decoder checks each
block (CRC, decompressed length) and decompresses it:

* ``decode(raw, i, j, parts) -> int``: -1 when every block is good, the run's decompressed
  bytes appended to the list ``parts`` (as one or several pieces); else a block index ``b``
  from which on the run could not be decoded, and nothing appended;
* ``decode_into(dst, raw, i, j) -> int``: the same written into ``dst``; -1 when every block
  is good, else ``b`` with blocks ``[i, b)`` written.

``span`` is how many compressed bytes a run should hold at most: the C decoder is fastest
with long runs (one call), the Python one with runs that stay in the CPU cache.

A decoder never decides what a failure means: it only says where the run stops being good,
and the reader's checked per-block path (evict, refetch, a precise error) takes over from
``b``.  ``raw`` may be short (the source returned less); the decoders then report the first
block not wholly in it.

``CDecoder`` runs the whole run in C with the GIL released (``_zfast.c``, LZ4 only);
``PythonDecoder`` does the same with the lz4/zstandard packages and C-level ``map`` loops.
``decoder_for(zfile)`` picks one when a file is opened.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from functools import partial
from itertools import repeat
from operator import sub

from crc32c import crc32c as _std_crc

from ..abi import zfile as abi
from ..crc import std_seed
from . import codec

try:   # the optional C accelerator (overlaybd/zfile/_zfast.c), LZ4 files only
    from . import _zfast
    if not _zfast.lz4_ok() or os.environ.get("OVERLAYBD_ZFAST") == "0":
        _zfast = None
except ImportError:
    _zfast = None

MAX_STORED = abi.MAX_BLOCK_SIZE        # upstream's MAX_READ_SIZE: no block stores more
_SX = std_seed(abi.BLOCK_CRC_SEED)     # standard-CRC seed of the per-block CRC
_GOOD = 0xFFFFFFFF                     # std CRC of an intact block followed by its CRC
_GOOD_SET = {_GOOD}


def first_bad_crc(offs, raw, i, j) -> int:
    """Index of the first block of run ``[i, j)`` whose stored CRC does not match (or that
    is not wholly in ``raw``), -1 if every one matches.  One crc32c call per block, over the
    payload *and* its CRC: the result is a constant for an intact block (``overlaybd.crc``)."""
    rel = list(map(sub, offs[i:j + 1], repeat(offs[i])))
    whole = bisect_right(rel, len(raw)) - 1            # blocks [i, i + whole) are in raw
    mv = memoryview(raw)
    crcs = list(map(_std_crc, map(mv.__getitem__, map(slice, rel[:whole], rel[1:whole + 1])),
                    repeat(_SX)))
    if set(crcs) - _GOOD_SET:
        return i + next(k for k, c in enumerate(crcs) if c != _GOOD)
    return -1 if whole == j - i else i + whole


class PythonDecoder:
    """Checks and decompresses with the ``crc32c``, ``lz4`` and ``zstandard`` packages."""

    span = 64 << 10     # raw runs beyond the L2 cache made 1 MiB reads ~40% slower

    def __init__(self, z):
        self.offs = z._offs
        self.bs = z.block_size
        self.size = z.size
        self.shift = z.block_size.bit_length() - 1
        self.verify = z.verify
        self.dec = codec.decompressor(z.algo)

    def decode(self, raw, i, j, parts):
        offs = self.offs
        bs = self.bs
        a = offs[i]
        if len(raw) != offs[j] - a:
            return i
        try:
            if j == i + 1:                      # one block: no list machinery
                if len(raw) > MAX_STORED:
                    return i
                if self.verify:
                    if _std_crc(raw, _SX) != _GOOD:
                        return i
                    out = self.dec(memoryview(raw)[:-4], bs)
                else:
                    out = self.dec(raw, bs)
                if len(out) != min(bs, self.size - (i << self.shift)):
                    return i
                parts.append(out)
                return -1
            rel = list(map(sub, offs[i:j + 1], repeat(a)))
            starts, ends = rel[:-1], rel[1:]
            if max(map(sub, ends, starts)) > MAX_STORED:
                return i
            mv = memoryview(raw)
            if self.verify:
                crcs = set(map(_std_crc, map(mv.__getitem__, map(slice, starts, ends)),
                               repeat(_SX)))
                if crcs != _GOOD_SET:
                    return i
                ends = list(map(sub, ends, repeat(4)))
            blocks = list(map(self.dec, map(mv.__getitem__, map(slice, starts, ends)),
                              repeat(bs)))
        except codec.DECOMPRESS_ERRORS:
            return i
        lens = set(map(len, blocks))
        last = self.size - ((j - 1) << self.shift)
        if last < bs:                           # the run ends with the file's short block
            if len(blocks[-1]) != last or set(map(len, blocks[:-1])) - {bs}:
                return i
        elif lens != {bs}:
            return i
        parts += blocks
        return -1

    def decode_into(self, dst, raw, i, j):
        parts = []
        bad = self.decode(raw, i, j, parts)
        if bad < 0:
            out = parts[0] if len(parts) == 1 else b"".join(parts)
            dst[:len(out)] = out
        return bad


class CDecoder:
    """Checks and decompresses a whole LZ4 run in one ``_zfast`` call (GIL released); the
    file's arguments are bound once, so a run costs one C call and no Python frame."""

    span = 4 << 20

    def __init__(self, z):
        ctx = (z._offs, z.block_size, z.size, z.verify, abi.BLOCK_CRC_SEED)
        self.decode = partial(_zfast.decode, *ctx)
        self.decode_into = partial(_zfast.decode_into, *ctx)


def decoder_for(z, prefer_c=True):
    """The decoder for the opened ZFile ``z``: C for LZ4 when ``_zfast`` is built and
    liblz4.so.1 loads (and ``prefer_c``), else Python."""
    if prefer_c and _zfast is not None and z.algo == abi.ALGO_LZ4:
        return CDecoder(z)
    return PythonDecoder(z)
