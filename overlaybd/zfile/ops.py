"""Whole-file ZFile operations behind ``overlaybd-zfile``: compress, decompress, verify."""

from __future__ import annotations

from ..abi import zfile as abi
from ..errors import FormatError
from .reader import ZFile
from .writer import ZFileWriter

CHUNK = 1 << 20


def _chunks(src):
    """Yield the bytes of ``src``: a file with ``pread``/``size`` or a stream with ``read``."""
    if hasattr(src, "pread") and hasattr(src, "size"):
        off = 0
        while off < src.size:
            data = src.pread(min(CHUNK, src.size - off), off)
            if not data:
                raise FormatError(f"short read at offset {off}", path=getattr(src, "path", None))
            off += len(data)
            yield data
        return
    while True:
        data = src.read(CHUNK)
        if not data:
            return
        yield data


def compress(src_file, out, algorithm="lz4", block_size=abi.DEFAULT_BLOCK_SIZE, verify=True,
             overwrite_header=False, threads=1) -> ZFileWriter:
    """Compress all of ``src_file`` (pread/size file or readable stream, e.g. stdin) into
    ``out``.  ``overlaybd-zfile`` uses the defaults (no header overwrite); ``overlaybd-commit
    -z`` sets ``overwrite_header``.  Returns the closed writer (``.final`` is the trailer)."""
    w = ZFileWriter(out, algorithm=algorithm, block_size=block_size, verify=verify,
                    overwrite_header=overwrite_header, threads=threads)
    with w:
        for data in _chunks(src_file):
            w.write(data)
    return w


def decompress(src_file, out) -> int:
    """Write the original bytes of the ZFile ``src_file`` to ``out`` (``write`` stream or
    ``pwrite`` file).  Returns the number of bytes written."""
    z = src_file if isinstance(src_file, ZFile) else ZFile(src_file)
    off = 0
    while off < z.size:
        data = z.pread(CHUNK, off)
        if hasattr(out, "pwrite"):
            out.pwrite(data, off)
        else:
            out.write(data)
        off += len(data)
    return off


def verify(src_file) -> int:
    """Upstream's ``--verify``: check every block's CRC (no decompression but the last block's,
    whose length must match original_file_size).  Returns the number of blocks checked;
    raises ChecksumError on the first bad block and FormatError when the file carries no
    block CRCs or is shorter than its jump table says."""
    z = src_file if isinstance(src_file, ZFile) else ZFile(src_file)
    if not z.verify:
        raise FormatError("ZFile has no per-block CRCs to verify", path=z.path, field="verify")
    n = z.nblocks
    if n:
        for i, j, off, length in z.runs(0, n):
            z.check_crcs(z.file.pread(length, off), i, j)
        _check_last_block(z)
    return n


def _check_last_block(z):
    """The last block must decompress to what original_file_size leaves for it: the one
    size the jump table cannot bound (the others must be block_size, checked on read)."""
    want = z.size - ((z.nblocks - 1) * z.block_size)
    try:
        z.pread(want, z.size - want)
    except FormatError as e:
        raise FormatError(f"the last block does not hold the {want} bytes original_file_size "
                          f"{z.size} leaves for it ({e.message})", path=z.path,
                          field="original_file_size") from e
