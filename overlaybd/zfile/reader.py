"""ZFile reader (spec §2.5): a file object over any source with ``pread``/``size``.

Open: header, trailer (or the rewritten header), every upstream check of the options, and the
jump table as a prefix-sum ``array`` of block offsets.  A failed open evicts the whole file
from a source that can (``evict(off, n)``) and loads it again, at most ``OPEN_RETRIES`` times,
as upstream does for a cached copy.

Read: ``runs`` cuts the blocks a read needs into runs of consecutive blocks (as many
compressed bytes each as the decoder likes best); each run is one source ``pread`` and one call of the decoder chosen
at open (``decode.py``: C for LZ4 when built, else Python).  From the first block a decoder
refuses, the checked per-block path takes over: it evicts and refetches a bad block, at most
``BLOCK_RETRIES`` times, then raises an error naming the block.  ``pread``, ``preadinto``
and ``ops.verify`` all go through ``runs``.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_right

import numpy as np

from ..abi import zfile as abi
from ..crc import crc32c_raw
from ..errors import ChecksumError, FormatError
from ..io import file_name, read_exact
from . import codec
from .decode import MAX_STORED, CDecoder, decoder_for, first_bad_crc

BLOCK_RETRIES = 3                      # evict-and-refetch attempts for one bad block
OPEN_RETRIES = 2                       # evict-all-and-reload attempts for bad metadata


def read_header(f, path=None):
    """The parsed first 512 bytes if they are a ZFile header, else None.

    Raises FormatError when the magic matches but the digest does not verify."""
    path = path or file_name(f)
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
    from several threads.  ``close()`` closes ``f`` too unless ``own`` is False.
    ``accelerated=False`` keeps the reader on the Python decoder (tests, benchmarks)."""

    def __init__(self, f, path=None, own=True, accelerated=True):
        self.file = f
        self._own = own
        self.path = path or file_name(f)
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
        self._dec = codec.decompressor(self.algo)      # the checked per-block path's
        self._decoder = decoder_for(self, prefer_c=accelerated)
        self._span = self._decoder.span
        self._decode = self._decoder.decode             # looked up once: the hot path's call

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
        block = read_exact(self.file, abi.HT_SPACE, fsize - abi.HT_SPACE, "trailer", self.path)
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
        table = read_exact(self.file, n * 4, info.index_offset, "jump table", p) if n else b""
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
    # Every read goes the same way: ``runs`` cuts the blocks it needs into runs of consecutive
    # blocks, each run is read from the source in one ``pread`` and handed to the decoder
    # (C or Python, see ``decode.py``); where the decoder reports a bad block, the checked
    # per-block path (``_checked_block``: evict, refetch, a precise error) takes over.

    @property
    def fast(self) -> bool:
        """True when runs go through the C decoder."""
        return isinstance(self._decoder, CDecoder)

    def block_range(self, i):
        """(file offset, stored length) of block ``i``, CRC included."""
        return self._offs[i], self._offs[i + 1] - self._offs[i]

    def runs(self, first, stop):
        """Blocks ``[first, stop)`` as a sequence of runs ``(i, j, offset, length)``: blocks
        ``[i, j)``, stored at ``[offset, offset + length)`` of the file, at most the
        decoder's ``span`` bytes (but at least one block) per run."""
        offs = self._offs
        a = offs[first]
        ln = offs[stop] - a
        if ln <= self._span:                                # the common case: one run
            return ((first, stop, a, ln),)
        span = self._span
        out = []
        i = first
        while i < stop:
            a = offs[i]
            j = stop
            if offs[j] - a > span:
                j = max(i + 1, bisect_right(offs, a + span, i + 1, stop + 1) - 1)
            out.append((i, j, a, offs[j] - a))
            i = j
        return out

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
        decode = self._decode
        parts = []
        for i, j, a, ln in self.runs(first, ((end - 1) >> shift) + 1):
            raw = self.file.pread(ln, a)
            if decode(raw, i, j, parts) >= 0:
                parts.append(self._checked_run(raw, i, j, i))
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        base = first << shift
        if off == base and end - base == len(data):
            return data
        return data[off - base:end - base]

    def preadinto(self, buf, off) -> int:
        """Fill ``buf`` (writable bytes-like) from ``off``; returns the bytes copied.  Whole
        blocks are decoded straight into ``buf``; partial ones at either end go through
        ``pread``."""
        mv = memoryview(buf).cast("B")
        n = len(mv)
        bs = self.block_size
        if n < 2 * bs or off < 0 or off >= self.size:
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
            self._decoded_into(mv[pos:pos + ln], first, stop)
            pos += ln
        if pos < end - off:                     # tail: the start of block ``stop``
            mv[pos:end - off] = self.pread(end - off - pos, off + pos)
        return end - off

    def _decoded_into(self, mv, first, stop):
        """Decompress blocks ``[first, stop)`` into ``mv`` (exactly their length)."""
        decode_into = self._decoder.decode_into
        shift = self._shift
        for i, j, a, ln in self.runs(first, stop):
            raw = self.file.pread(ln, a)
            dst = mv[(i - first) << shift:]
            bad = decode_into(dst, raw, i, j)
            if bad >= 0:
                data = self._checked_run(raw, i, j, bad)
                dst[(bad - i) << shift:((bad - i) << shift) + len(data)] = data

    def _checked_run(self, raw, i, j, bad):
        """Blocks ``[bad, j)`` of run ``[i, j)`` (``raw`` as read) one by one through the
        checked path."""
        offs = self._offs
        a = offs[i]
        return b"".join([self._checked_block(k, raw[offs[k] - a:offs[k + 1] - a])
                         for k in range(bad, j)])

    def check_crcs(self, raw, i, j):
        """Raise the error of the first block of run ``[i, j)`` (``raw`` as read) whose CRC
        does not match or that ``raw`` lacks; the file must have CRCs."""
        bad = first_bad_crc(self._offs, raw, i, j)
        if bad >= 0:
            a = self._offs[bad] - self._offs[i]
            piece = raw[a:a + self.block_range(bad)[1]]
            raise self._block_error(bad, self._check_block(bad, piece, decompress=False)[1])

    def _expected_len(self, i):
        """Decompressed length of block ``i``: block_size, or less for the last one."""
        return min(self.block_size, self.size - (i << self._shift))

    def _check_block(self, i, raw, decompress=True):
        """(decompressed block, None) or (None, (error class, reason)) for block ``i``;
        only the length and the CRC are checked unless ``decompress``."""
        a, ln = self.block_range(i)
        if len(raw) != ln:
            return None, (FormatError, f"truncated: needs {ln} bytes at offset {a}, "
                                       f"got {len(raw)}")
        if self.verify:
            stored = struct.unpack_from("<I", raw, len(raw) - 4)[0]
            crc = crc32c_raw(memoryview(raw)[:-4], abi.BLOCK_CRC_SEED)
            if crc != stored:
                return None, (ChecksumError, f"expected {stored:#010x} but got {crc:#010x}")
            body = memoryview(raw)[:-4]
        else:
            body = raw
        if not decompress:
            return b"", None
        try:
            out = self._dec(body, self.block_size)
        except codec.DECOMPRESS_ERRORS as e:
            return None, (FormatError, f"decompression failed: {e}")
        want = self._expected_len(i)
        if len(out) != want:
            return None, (FormatError, f"decompressed to {len(out)} bytes, expected {want}")
        return out, None

    def _block_error(self, i, why, tried=""):
        cls, reason = why
        a, ln = self.block_range(i)
        return cls(f"block {i} at offset {a} (length {ln}): {reason}{tried}", path=self.path,
                   field="block crc" if cls is ChecksumError else "block")

    def _checked_block(self, i, raw):
        """Check and decompress block ``i`` (``raw``: its stored bytes as read, or a short
        piece, which is read again), evicting and refetching it up to BLOCK_RETRIES times
        from a source that supports ``evict``."""
        a, ln = self.block_range(i)
        if ln > MAX_STORED:
            raise FormatError(f"block {i} has stored length {ln} > {MAX_STORED} "
                              "(MAX_READ_SIZE)", path=self.path, field="block length")
        attempt = 0
        while True:
            if len(raw) != ln:
                raw = self.file.pread(ln, a)
            out, why = self._check_block(i, raw)
            if out is not None:
                return out
            if self._evict is None or attempt >= BLOCK_RETRIES:
                break
            attempt += 1
            self.retries += 1
            self._evict(a, ln)
            raw = b""
        raise self._block_error(i, why, f" after {attempt} evict-and-refetch retries"
                                if self._evict else "")

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
