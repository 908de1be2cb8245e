"""Block codecs of ZFile (spec §2.4): LZ4 raw blocks and zstd frames, level 3.

Byte-exactness with upstream: upstream compresses LZ4 blocks with ``LZ4_compress_default``.
The ``lz4`` Python package compresses through the streaming API, which picks other matches
and so other (valid) bytes.  The compressor therefore calls ``LZ4_compress_default`` in the
system liblz4 (Debian's ``liblz4-1``) through ctypes, and falls back to the ``lz4`` package
only when that library is missing (``LZ4_EXACT`` says which one is in use).  Decompression
output does not depend on this and always uses the ``lz4`` package.  zstd blocks come from
``zstandard``'s one-shot compressor, which writes the same frame as ``ZSTD_compress``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

import lz4.block
import zstandard

from ..abi.zfile import ALGO_LZ4, ALGO_ZSTD

ZSTD_LEVEL = 3


def _load_liblz4():
    for name in (ctypes.util.find_library("lz4"), "liblz4.so.1"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            fn = lib.LZ4_compress_default
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        fn.restype = ctypes.c_int
        return fn
    return None


_LZ4_DEFAULT = _load_liblz4()
LZ4_EXACT = _LZ4_DEFAULT is not None
_tls = threading.local()


_LZ4_DST = 64 * 1024 + 512      # upstream's buffer: block_size + 512 >= LZ4_compressBound


def _lz4_compress_exact(data) -> bytes:
    src = bytes(data)
    n = len(src)
    if n > 64 * 1024:
        raise ValueError(f"LZ4 block of {n} bytes > 64 KiB")
    buf = getattr(_tls, "lz4buf", None)
    if buf is None:
        buf = _tls.lz4buf = ctypes.create_string_buffer(_LZ4_DST)
    r = _LZ4_DEFAULT(src, buf, n, _LZ4_DST)
    if r <= 0:
        raise ValueError(f"LZ4_compress_default failed (returned {r})")
    return ctypes.string_at(buf, r)


def _lz4_compress_fallback(data) -> bytes:
    out = lz4.block.compress(data, store_size=False)
    if not out:
        raise ValueError("lz4 compression returned nothing")
    return out


def _zstd_compress(data) -> bytes:
    cctx = getattr(_tls, "zstd_cctx", None)
    if cctx is None:
        cctx = _tls.zstd_cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return cctx.compress(data)


def compressor(algo: int):
    """A thread-safe ``f(block) -> compressed bytes`` for the algorithm id."""
    if algo == ALGO_LZ4:
        return _lz4_compress_exact if LZ4_EXACT else _lz4_compress_fallback
    if algo == ALGO_ZSTD:
        return _zstd_compress
    raise ValueError(f"unsupported compression algorithm id {algo}")


def _zstd_decompress(data, block_size):
    dctx = getattr(_tls, "zstd_dctx", None)
    if dctx is None:
        dctx = _tls.zstd_dctx = zstandard.ZstdDecompressor()
    return dctx.decompress(data, max_output_size=block_size)


def decompressor(algo: int):
    """``f(compressed, block_size) -> bytes`` (at most block_size for LZ4; zstd frames carry
    their size, so callers check the length).  Raises on corrupt input."""
    if algo == ALGO_LZ4:
        return lz4.block.decompress
    if algo == ALGO_ZSTD:
        return _zstd_decompress
    raise ValueError(f"unsupported compression algorithm id {algo}")


# Exceptions a decompressor raises on corrupt input.
DECOMPRESS_ERRORS = (lz4.block.LZ4BlockError, zstandard.ZstdError, ValueError, MemoryError)
