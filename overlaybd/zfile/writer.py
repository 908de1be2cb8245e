"""ZFile writer (spec §2.6): the streaming builder behind ``overlaybd-zfile``,
``overlaybd-commit -z`` and ``overlaybd-merge``.

Layout written: header (flags 0x13) -> blocks, each followed by its CRC when ``verify`` ->
jump table -> trailer (0x16); with ``overwrite_header`` the header at offset 0 is rewritten
at close with the final index info and flags 0x1B.  ``write()`` takes any sizes; with
``threads > 1`` runs of blocks (about 1 MiB each) are compressed in that many forked
processes (``parallel.CompressorPool``) and written in order, so the bytes do not depend on
the count.
"""

from __future__ import annotations

import sys
from array import array

from ..abi import zfile as abi
from ..crc import crc32c_raw
from ..errors import OverlaybdError
from . import codec
from .parallel import CompressorPool, block_bound, compress_into

TASK_BYTES = 1 << 20         # raw bytes per compression run / per output write


class OutputSink:
    """Sequential writes plus positioned patches over either a file with
    ``pwrite(data, off)`` (LocalFile, TarWriter...) or a Python binary stream (``write``;
    ``seek``/``tell`` for patches).  Offsets are relative to where the output started."""

    def __init__(self, out, need_seek=False):
        self.out = out
        self.pos = 0                      # sequential write position
        self.use_pwrite = hasattr(out, "pwrite")
        self.base = 0
        self._at = 0                      # stream position (relative), streams only
        if not self.use_pwrite:
            if not hasattr(out, "write"):
                raise TypeError(f"{out!r} has neither write() nor pwrite()")
            self.seekable = bool(getattr(out, "seekable", lambda: False)())
            if need_seek and not self.seekable:
                raise OverlaybdError("output must be seekable (header rewrite at close)",
                                     path=getattr(out, "name", None))
            if self.seekable:
                self.base = out.tell()

    def write(self, data):
        self.pwrite(data, self.pos)

    def pwrite(self, data, off):
        n = len(data)
        if self.use_pwrite:
            mv = memoryview(data)
            done = 0
            while done < n:
                w = self.out.pwrite(mv[done:], off + done)
                if not w:
                    raise OverlaybdError(f"short write at offset {off + done}",
                                         path=getattr(self.out, "path", None))
                done += w
        else:
            if off != self._at:
                self.out.seek(self.base + off)
            self.out.write(data)
            self._at = off + n
        if off + n > self.pos:
            self.pos = off + n
        if not self.use_pwrite and self._at != self.pos:
            self.out.seek(self.base + self.pos)     # leave a stream at its end
            self._at = self.pos


class ZFileWriter:
    """Compress a byte stream into a ZFile.

    ``out``: a file with ``pwrite(data, off)`` or a binary stream with ``write``;
    ``algorithm``: "lz4" or "zstd"; ``block_size``: a power of two up to 64 KiB (the tools
    allow 4..64 KiB); ``verify``: append a CRC to every block; ``overwrite_header``: rewrite
    the header at close (needs a seekable output); ``threads``: compression processes (forked).
    """

    def __init__(self, out, algorithm="lz4", block_size=abi.DEFAULT_BLOCK_SIZE, verify=True,
                 overwrite_header=False, threads=1):
        if algorithm not in abi.ALGO_BY_NAME:
            raise ValueError(f"unknown algorithm {algorithm!r} (lz4 or zstd)")
        if block_size <= 0 or block_size & (block_size - 1) or block_size > abi.MAX_BLOCK_SIZE:
            raise ValueError(f"block_size {block_size} must be a power of two <= 64 KiB")
        self.algo = abi.ALGO_BY_NAME[algorithm]
        self.block_size = block_size
        self.verify = bool(verify)
        self.overwrite_header = overwrite_header
        self._sink = OutputSink(out, need_seek=overwrite_header)
        self._compress = codec.compressor(self.algo)
        self._task = max(TASK_BYTES // block_size, 1) * block_size
        self._buf, self._fill = None, 0   # the run being filled (a pool slot or _in) and its length
        self._lens = array("I")
        self._raw_size = 0
        self._closed = False
        self._pool = self._in = self._out = None
        if threads > 1:
            self._pool = CompressorPool(threads, self.algo, block_size, self.verify, self._task)
        else:
            self._in = bytearray(self._task)
            self._out = bytearray(self._task // block_size * block_bound(block_size))
        self._opts = abi.HeaderTrailer(block_size=block_size, algo=self.algo,
                                       verify=int(self.verify))
        self._sink.write(self._opts.with_flags(abi.FLAGS_HEADER).pack())

    # -- compression -------------------------------------------------------------------------
    def _emit(self, lens, stored):
        big = max(lens)
        if big > abi.MAX_BLOCK_SIZE:
            # upstream writes such a block and then cannot read it back (MAX_READ_SIZE)
            i = len(self._lens) + lens.index(big)
            raise OverlaybdError(f"block {i} compresses to {big} bytes > {abi.MAX_BLOCK_SIZE}: "
                                 "no ZFile reader could read it back; use a smaller block size",
                                 field="block_size")
        self._lens.extend(lens)
        self._sink.write(stored)

    def _flush(self):
        """Compress the run filled so far (the pool's slot, or inline)."""
        buf, n = self._buf, self._fill
        self._buf, self._fill = None, 0
        if self._pool is not None:
            buf.release()
            self._pool.submit(n, self._emit)
            return
        lens = compress_into(self._compress, buf[:n], self.block_size, self.verify, self._out, 0)
        buf.release()
        with memoryview(self._out) as out:
            self._emit(lens, out[:sum(lens)])

    # -- public ------------------------------------------------------------------------------
    def write(self, data) -> int:
        """Append ``data`` (any size) to the uncompressed stream.  Bytes are copied once, into
        the run being filled; a full run is compressed (or handed to a process) at once."""
        if self._closed:
            raise ValueError("write to a closed ZFileWriter")
        mv = memoryview(data).cast("B")
        n = len(mv)
        self._raw_size += n
        task = self._task
        pos = 0
        while pos < n:
            if self._buf is None:
                self._buf = (self._pool.take(self._emit) if self._pool is not None
                             else memoryview(self._in))
            k = min(n - pos, task - self._fill)
            self._buf[self._fill:self._fill + k] = mv[pos:pos + k]
            self._fill += k
            pos += k
            if self._fill == task:
                self._flush()
        return n

    def close(self):
        """Compress what is buffered, write jump table and trailer (and header overwrite)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._fill:
                self._flush()
            if self._pool is not None:
                self._pool.drain(self._emit)
        finally:
            self._drop_buffer()
            if self._pool is not None:
                self._pool.close()
        index_offset = self._sink.pos
        lens = self._lens
        if sys.byteorder == "big":
            lens = array("I", lens)
            lens.byteswap()
        table = lens.tobytes()
        self._sink.write(table)
        final = abi.HeaderTrailer(
            index_offset=index_offset, index_size=len(self._lens),
            original_file_size=self._raw_size, index_crc=crc32c_raw(table),
            block_size=self.block_size, algo=self.algo, verify=int(self.verify))
        self._sink.write(final.with_flags(abi.FLAGS_TRAILER).pack())
        if self.overwrite_header:
            self._sink.pwrite(final.with_flags(abi.FLAGS_HEADER_OVERWRITTEN).pack(), 0)
        self.final = final

    @property
    def raw_size(self) -> int:
        return self._raw_size

    @property
    def compressed_size(self) -> int:
        """Bytes written so far (the whole ZFile once closed)."""
        return self._sink.pos

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self._drop_buffer()
            if self._pool is not None:
                self._pool.close(cancel=True)

    def _drop_buffer(self):
        if self._buf is not None:
            self._buf.release()
            self._buf, self._fill = None, 0
