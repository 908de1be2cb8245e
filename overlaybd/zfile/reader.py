"""ZFile reader (spec §2.5): a file object over any source with ``pread``/``size``.

Hot path: one ``pread`` per run of consecutive blocks (at most 64 KiB of compressed bytes,
as upstream's MAX_READ_SIZE), block offsets from a prefix-sum ``array``, the CRC of each
block *and its stored CRC* checked in one crc32c call (the result is a constant for an
intact block, see ``overlaybd.crc``), then decompression; all per-block steps run as C-level
``map`` loops.  Any failure in a run drops to a per-block path that evicts and refetches a
bad block from a source that can (``evict(off, n)``), at most ``BLOCK_RETRIES`` times; a
failed open (trailer / jump table) evicts the whole file and reloads, at most ``OPEN_RETRIES``
times, as upstream does for a cached copy.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_right
from itertools import repeat
from operator import sub

import numpy as np
from crc32c import crc32c as _std_crc

from ..abi import zfile as abi
from ..crc import crc32c_raw, std_seed
from ..errors import ChecksumError, FormatError
from . import codec

try:   # the optional C accelerator (overlaybd/zfile/_zfast.c), LZ4 files only
    from . import _zfast
    if not _zfast.lz4_ok() or os.environ.get("OVERLAYBD_ZFAST") == "0":
        _zfast = None
except ImportError:
    _zfast = None

BLOCK_RETRIES = 3                      # evict-and-refetch attempts for one bad block
OPEN_RETRIES = 2                       # evict-all-and-reload attempts for bad metadata
_SX = std_seed(abi.BLOCK_CRC_SEED)     # standard-CRC seed of the per-block CRC
_GOOD = 0xFFFFFFFF                     # std CRC of an intact block followed by its CRC
_GOOD_SET = {_GOOD}
MAX_READ = abi.MAX_BLOCK_SIZE
FAST_SPAN = 4 << 20                    # compressed bytes per source read on the C path


def _path(f):
    return getattr(f, "path", None) or repr(f)


def _read_exact(f, n, off, what, path):
    data = f.pread(n, off)
    if len(data) != n:
        raise FormatError(f"truncated: {what} needs {n} bytes at offset {off}, got {len(data)}",
                          path=path, field=what)
    return data


def read_header(f, path=None):
    """The parsed first 512 bytes if they are a ZFile header, else None.

    Raises FormatError when the magic matches but the digest does not verify."""
    path = path or _path(f)
    block = f.pread(abi.HT_SPACE, 0)
    if len(block) < abi.HT_SPACE:
        return None
    ht = abi.HeaderTrailer.unpack(block)
    if not ht.magic_ok or not ht.is_header:
        return None
    if ht.has_digest and not abi.digest_ok(block):
        raise FormatError(f"ZFile header digest mismatch (stored {ht.digest:#010x}, "
                          f"computed {abi.compute_digest(block):#010x})",
                          path=path, field="digest")
    return ht


def is_zfile(f) -> bool:
    """True if ``f`` starts with a ZFile header (upstream's is_zfile).  A header whose magic
    matches but whose digest fails raises FormatError."""
    return read_header(f) is not None


class ZFile:
    """A ZFile opened for reading; ``size`` is the original (decompressed) size.  Safe to read
    from several threads.  ``close()`` closes ``f`` too unless ``own`` is False."""

    def __init__(self, f, path=None, own=True):
        self.file = f
        self._own = own
        self.path = path or _path(f)
        self._evict = getattr(f, "evict", None)
        self.retries = 0          # evict-and-refetch attempts made so far (for tests/stats)
        attempt = 0
        while True:
            try:
                self._open()
                break
            except FormatError:
                # like upstream: a source that can evict (a cache) may hold bad metadata;
                # drop the whole cached copy and load again, at most OPEN_RETRIES more times
                if self._evict is None or attempt >= OPEN_RETRIES:
                    raise
                attempt += 1
                self.retries += 1
                self._evict(0, f.size)
        self._dec = codec.decompressor(self.algo)
        # multi-block reads go through _zfast.decode when it is built and liblz4 is there
        self.fast = _zfast is not None and self.algo == abi.ALGO_LZ4

    def _open(self):
        f = self.file
        header = read_header(f, self.path)
        if header is None:
            raise FormatError("not a ZFile (bad magic or not a header)", path=self.path,
                              field="magic")
        self.header = header
        self.trailer = None
        if header.is_header_overwritten:
            info = header
        else:
            if not header.is_data_file:
                raise FormatError("ZFile header is not of a data file", path=self.path,
                                  field="flags")
            info = self.trailer = self._read_trailer()
        self.info = info
        self._check_options(info)
        self.block_size = info.block_size
        self._shift = info.block_size.bit_length() - 1
        self.algo = info.algo
        self.algorithm = abi.ALGO_NAMES[info.algo]
        self.verify = bool(info.verify)
        self.size = info.original_file_size
        self.nblocks = info.index_size
        self._offs = self._load_jump_table(info)
        if header.is_header_overwritten:
            self._check_trailer_agrees(header)

    # -- open --------------------------------------------------------------------------------
    def _read_trailer(self):
        fsize = self.file.size
        if fsize < 2 * abi.HT_SPACE:
            raise FormatError(f"truncated: file of {fsize} bytes cannot hold header and trailer",
                              path=self.path, field="trailer")
        block = _read_exact(self.file, abi.HT_SPACE, fsize - abi.HT_SPACE, "trailer", self.path)
        t = abi.HeaderTrailer.unpack(block)
        if not t.magic_ok:
            raise FormatError("ZFile trailer magic mismatch (truncated or not sealed?)",
                              path=self.path, field="trailer magic")
        if t.is_header or not t.is_data_file or not t.is_sealed:
            raise FormatError(f"ZFile trailer flags {t.flags:#x} are not trailer|data|sealed",
                              path=self.path, field="trailer flags")
        if t.has_digest and not abi.digest_ok(block):
            raise FormatError("ZFile trailer digest mismatch", path=self.path,
                              field="trailer digest")
        return t

    # what the rewritten header and the trailer must both say about the data
    AGREED = ("index_offset", "index_size", "original_file_size", "index_crc", "block_size",
              "algo", "verify", "dict_size")

    def _check_trailer_agrees(self, header):
        """A rewritten header (flag 0x8) carries the final index info, and upstream reads only
        it; the trailer its writer also left at the end must say the same, or one of the two
        describes other data than the file holds.  An end block that is no trailer at all is
        left alone, as upstream does."""
        fsize = self.file.size
        block = self.file.pread(abi.HT_SPACE, fsize - abi.HT_SPACE)
        if len(block) != abi.HT_SPACE:
            return
        t = abi.HeaderTrailer.unpack(block)
        if not t.magic_ok or t.is_header or not t.is_data_file or not t.is_sealed or \
                (t.has_digest and not abi.digest_ok(block)):
            return
        for name in self.AGREED:
            h_val, t_val = getattr(header, name), getattr(t, name)
            if h_val != t_val:
                raise FormatError(f"the rewritten header says {name} {h_val} but the trailer "
                                  f"says {t_val}", path=self.path, field=f"trailer {name}")
        self.trailer = t

    def _check_options(self, info):
        p = self.path
        if info.algo not in (abi.ALGO_LZ4, abi.ALGO_ZSTD):
            raise FormatError(f"unsupported compression algorithm id {info.algo}", path=p,
                              field="algo")
        bs = info.block_size
        if bs <= 0 or bs & (bs - 1):
            raise FormatError(f"block_size {bs} is not a power of two", path=p,
                              field="block_size")
        if bs > abi.MAX_BLOCK_SIZE:
            raise FormatError(f"block_size {bs} > {abi.MAX_BLOCK_SIZE} (MAX_READ_SIZE)", path=p,
                              field="block_size")
        if info.dict_size or info.use_dict:
            raise FormatError("ZFile dictionaries are not supported", path=p, field="dict_size")
        if info.index_size > abi.MAX_INDEX_SIZE:
            raise FormatError(f"index_size {info.index_size} > {abi.MAX_INDEX_SIZE}", path=p,
                              field="index_size")
        trailer_offset = self.file.size - abi.HT_SPACE
        index_bytes = info.index_size * abi.JUMP_ENTRY_SIZE
        if info.index_offset < abi.HT_SPACE or index_bytes > trailer_offset - info.index_offset:
            raise FormatError(f"jump table of {info.index_size} blocks at {info.index_offset} "
                              f"does not fit before the trailer at {trailer_offset}", path=p,
                              field="index_size")
        # the jump table must describe exactly the original size: (n-1)*bs < size <= n*bs, so
        # that no block is past the end and no byte lacks a block (n = 0 iff size = 0)
        needed = -(-info.original_file_size // bs)
        if info.index_size != needed:
            raise FormatError(f"original_file_size {info.original_file_size} needs {needed} "
                              f"blocks of {bs} bytes but the jump table has index_size "
                              f"{info.index_size}", path=p, field="original_file_size")

    def _load_jump_table(self, info):
        p = self.path
        n = info.index_size
        table = _read_exact(self.file, n * 4, info.index_offset, "jump table", p) if n else b""
        if info.has_digest:
            crc = crc32c_raw(table)
            if crc != info.index_crc:
                raise FormatError(f"jump table CRC {crc:#010x} != index_crc "
                                  f"{info.index_crc:#010x}", path=p, field="index_crc")
        lens = np.frombuffer(table, dtype="<u4")
        start = abi.HT_SPACE + info.dict_size
        if n:
            floor = abi.CRC_SIZE if info.verify else 0
            bad = np.flatnonzero(lens <= floor)
            if bad.size:
                i = int(bad[0])
                raise FormatError(f"block {i} has stored length {int(lens[i])} (must be > "
                                  f"{floor})", path=p, field="block length")
            # upstream keeps offsets as uint16 partial sums in groups of 64 KiB / block_size
            # blocks and rejects a table whose in-group sum reaches 65535
            group = (abi.MAX_BLOCK_SIZE) // info.block_size
            if group > 1:
                padded = np.zeros(-(-n // group) * group, dtype=np.uint64)
                padded[:n] = lens
                worst = int(padded.reshape(-1, group)[:, :group - 1].sum(axis=1).max())
                if worst >= 0xFFFF:
                    raise FormatError(f"blocks of one {group}-block group add up to {worst} "
                                      "bytes (>= 65535, upstream ERANGE)", path=p,
                                      field="block length")
        offs = np.empty(n + 1, dtype=np.uint64)
        offs[0] = start
        np.cumsum(lens, dtype=np.uint64, out=offs[1:])
        offs[1:] += np.uint64(start)
        if int(offs[-1]) > info.index_offset:
            raise FormatError(f"blocks end at {int(offs[-1])}, past the jump table at "
                              f"{info.index_offset}", path=p, field="block length")
        out = array("Q")
        out.frombytes(offs.astype("<u8").tobytes())
        if sys.byteorder == "big":
            out.byteswap()
        return out

    # -- reads -------------------------------------------------------------------------------
    def block_range(self, i):
        """(file offset, stored length) of block ``i``, CRC included."""
        return self._offs[i], self._offs[i + 1] - self._offs[i]

    def pread(self, n, off) -> bytes:
        """Up to ``n`` decompressed bytes at ``off``; short only at the end."""
        size = self.size
        if off < 0 or n < 0:
            raise ValueError("negative offset or count")
        if n == 0 or off >= size:
            return b""
        end = off + n
        if end > size:
            end = size
        shift = self._shift
        first = off >> shift
        last = (end - 1) >> shift
        base = first << shift
        if first == last:
            data = self._block(first)
        elif self.fast:
            data = self._span(first, last + 1)
        else:
            data = b"".join(self._blocks(first, last + 1))
        if off == base and end - base == len(data):
            return data
        return data[off - base:end - base]

    def preadinto(self, buf, off) -> int:
        """Fill ``buf`` (writable bytes-like) from ``off``; returns the bytes copied.  On the C
        path, whole blocks are decompressed straight into ``buf``."""
        mv = memoryview(buf).cast("B")
        n = len(mv)
        bs = self.block_size
        if not self.fast or n < 2 * bs or off < 0 or off >= self.size:
            data = self.pread(n, off)
            mv[:len(data)] = data
            return len(data)
        end = min(off + n, self.size)
        shift = self._shift
        first = (off + bs - 1) >> shift         # first block wholly inside [off, end)
        stop = end >> shift                     # blocks [first, stop) are whole
        if end == self.size and end & (bs - 1):
            stop += 1                           # the file's short last block, read whole
        pos = 0
        if off & (bs - 1):                      # head: part of block first - 1
            pos = min(end, first << shift) - off
            mv[:pos] = self.pread(pos, off)
        if first < stop:
            ln = min(stop << shift, end) - (first << shift)
            self._span_into(mv[pos:pos + ln], first, stop)
            pos += ln
        if pos < end - off:                     # tail: the start of block ``stop``
            mv[pos:end - off] = self.pread(end - off - pos, off + pos)
        return end - off

    def _expected_len(self, i):
        """Decompressed length of block ``i``: block_size, or less for the last one."""
        return min(self.block_size, self.size - (i << self._shift))

    def _block(self, i):
        """Decompressed block ``i`` (fast path, single block)."""
        offs = self._offs
        a = offs[i]
        ln = offs[i + 1] - a
        if ln > MAX_READ:
            self._too_big(i, ln)
        raw = self.file.pread(ln, a)
        if len(raw) == ln:
            if self.fast:
                out = _zfast.decode(raw, offs, i, i + 1, self.block_size, self.size,
                                    self.verify, abi.BLOCK_CRC_SEED)
                return out if out.__class__ is bytes else self._block_slow(i, raw)
            try:
                if self.verify:
                    if _std_crc(raw, _SX) == _GOOD:
                        out = self._dec(memoryview(raw)[:-4], self.block_size)
                        if len(out) == self._expected_len(i):
                            return out
                else:
                    out = self._dec(raw, self.block_size)
                    if len(out) == self._expected_len(i):
                        return out
            except codec.DECOMPRESS_ERRORS:
                pass
        return self._block_slow(i, raw)

    def _runs(self, first, stop):
        """(i, j, raw) for consecutive sub-runs of blocks [first, stop): one source read per
        FAST_SPAN of compressed bytes (at least one block)."""
        offs = self._offs
        i = first
        while i < stop:
            a = offs[i]
            j = stop
            if offs[j] - a > FAST_SPAN:
                j = max(i + 1, bisect_right(offs, a + FAST_SPAN, i + 1, stop + 1) - 1)
            yield i, j, self.file.pread(offs[j] - a, a)
            i = j

    # The C path (``fast``): each sub-run is checked and decompressed by one _zfast call.  A
    # short read or any bad block hands that sub-run to ``_blocks``, whose per-block path
    # evicts, refetches and raises the precise error.

    def _span(self, first, stop):
        """Decompressed blocks [first, stop) as one bytes."""
        offs = self._offs
        parts = []
        for i, j, raw in self._runs(first, stop):
            out = i
            if len(raw) == offs[j] - offs[i]:
                out = _zfast.decode(raw, offs, i, j, self.block_size, self.size, self.verify,
                                    abi.BLOCK_CRC_SEED)
            if out.__class__ is not bytes:
                out = b"".join(self._blocks(i, j))
            parts.append(out)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _span_into(self, mv, first, stop):
        """Decompress blocks [first, stop) straight into ``mv`` (exactly their length)."""
        offs = self._offs
        shift = self._shift
        for i, j, raw in self._runs(first, stop):
            dst = mv[(i - first) << shift:]
            bad = i
            if len(raw) == offs[j] - offs[i]:
                bad = _zfast.decode_into(dst, raw, offs, i, j, self.block_size, self.size,
                                         self.verify, abi.BLOCK_CRC_SEED)
            if bad >= 0:
                data = b"".join(self._blocks(bad, j))
                dst[(bad - i) << shift:((bad - i) << shift) + len(data)] = data

    def _blocks(self, first, stop):
        """Decompressed blocks [first, stop) as a list of bytes."""
        offs = self._offs
        out = []
        i = first
        dec = self._dec
        bs = self.block_size
        verify = self.verify
        while i < stop:
            a = offs[i]
            # the largest j with offs[j] - a <= 64 KiB, i.e. blocks [i, j) fit in one read
            j = bisect_right(offs, a + MAX_READ, i + 1, stop + 1) - 1
            if j == i:
                self._too_big(i, offs[i + 1] - a)
            raw = self.file.pread(offs[j] - a, a)
            if len(raw) != offs[j] - a:
                out.extend(self._block_slow(k, None) for k in range(i, j))
                i = j
                continue
            mv = memoryview(raw)
            rel = list(map(sub, offs[i:j + 1], repeat(a)))
            starts = rel[:-1]
            ends = rel[1:]
            try:
                if verify:
                    crcs = set(map(_std_crc, map(mv.__getitem__, map(slice, starts, ends)),
                                   repeat(_SX)))
                    if crcs != _GOOD_SET:
                        raise ValueError("crc")
                    ends = list(map(sub, ends, repeat(4)))
                blocks = list(map(dec, map(mv.__getitem__, map(slice, starts, ends)),
                                  repeat(bs)))
                if (j << self._shift) >= self.size:
                    if set(map(len, blocks[:-1])) - {bs} or \
                            len(blocks[-1]) != self._expected_len(j - 1):
                        raise ValueError("length")
                elif set(map(len, blocks)) != {bs}:
                    raise ValueError("length")
            except codec.DECOMPRESS_ERRORS:
                blocks = [self._block_slow(k, raw[offs[k] - a:offs[k + 1] - a])
                          for k in range(i, j)]
            out.extend(blocks)
            i = j
        return out

    def _too_big(self, i, ln):
        raise FormatError(f"block {i} has stored length {ln} > {MAX_READ} (MAX_READ_SIZE)",
                          path=self.path, field="block length")

    def _check_block(self, i, raw):
        """(decompressed block, None) or (None, (error class, reason)) for block ``i``."""
        if self.verify:
            stored = struct.unpack_from("<I", raw, len(raw) - 4)[0]
            crc = crc32c_raw(memoryview(raw)[:-4], abi.BLOCK_CRC_SEED)
            if crc != stored:
                return None, (ChecksumError, f"expected {stored:#010x} but got {crc:#010x}")
            body = memoryview(raw)[:-4]
        else:
            body = raw
        try:
            out = self._dec(body, self.block_size)
        except codec.DECOMPRESS_ERRORS as e:
            return None, (FormatError, f"decompression failed: {e}")
        want = self._expected_len(i)
        if len(out) != want:
            return None, (FormatError, f"decompressed to {len(out)} bytes, expected {want}")
        return out, None

    def _block_slow(self, i, raw):
        """Read (if ``raw`` is None or short), check and decompress block ``i``, evicting and
        refetching it up to BLOCK_RETRIES times from a source that supports ``evict``."""
        a, ln = self.block_range(i)
        attempt = 0
        while True:
            if raw is None or len(raw) != ln:
                raw = self.file.pread(ln, a)
            if len(raw) != ln:
                out, why = None, (FormatError, f"truncated: needs {ln} bytes at offset {a}, "
                                               f"got {len(raw)}")
            else:
                out, why = self._check_block(i, raw)
            if out is not None:
                return out
            if self._evict is None or attempt >= BLOCK_RETRIES:
                break
            attempt += 1
            self.retries += 1
            self._evict(a, ln)
            raw = None
        cls, reason = why
        tried = f" after {attempt} evict-and-refetch retries" if self._evict else ""
        raise cls(f"block {i} at offset {a} (length {ln}): {reason}{tried}", path=self.path,
                  field="block crc" if cls is ChecksumError else "block")

    def close(self):
        """Drop the jump table and close the source if this object owns it."""
        self._offs = array("Q", [abi.HT_SPACE])
        self.nblocks = self.size = 0
        if self._own:
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"ZFile({self.path!r}, {self.algorithm}, bs={self.block_size}, size={self.size})"
