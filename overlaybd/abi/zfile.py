"""ZFile on-disk structures (spec §2.1, §2.2): the 512-byte header/trailer and the jump table.

Layouts, constants and codecs only; validation policy lives in ``overlaybd.zfile``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields, replace

from ..crc import crc32c_raw
from .common import FLAG_DATA, FLAG_HEADER, FLAG_SEALED, MagicFlags  # noqa: F401 (re-exported)

MAGIC0 = b"ZFile\x00\x01\x00"
MAGIC1 = b"tuji.yyf@Alibaba"   # 74 75 6A 69 2E 79 79 66 40 41 6C 69 62 61 62 61
HT_SPACE = 512           # a header or trailer occupies 512 bytes
HT_STRUCT_SIZE = 96      # the struct itself; the rest of the block is zero
DIGEST_OFFSET = 28

FLAG_HEADER_OVERWRITE = 1 << 3   # header rewritten at close with the final index info
FLAG_DIGEST = 1 << 4             # the digest field is valid
FLAG_INDEX_COMPRESSED = 1 << 5   # defined upstream, never used

# Flags as upstream writes them.
FLAGS_HEADER = FLAG_HEADER | FLAG_DATA | FLAG_DIGEST                              # 0x13
FLAGS_TRAILER = FLAG_DATA | FLAG_SEALED | FLAG_DIGEST                             # 0x16
FLAGS_HEADER_OVERWRITTEN = FLAG_HEADER | FLAG_DATA | FLAG_HEADER_OVERWRITE | FLAG_DIGEST  # 0x1B

ALGO_LZO = 0     # reserved upstream, unsupported
ALGO_LZ4 = 1
ALGO_ZSTD = 2
ALGO_NAMES = {ALGO_LZO: "lzo", ALGO_LZ4: "lz4", ALGO_ZSTD: "zstd"}
ALGO_BY_NAME = {"lz4": ALGO_LZ4, "zstd": ALGO_ZSTD}

DEFAULT_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 64 * 1024       # MAX_READ_SIZE: blocks and reads of compressed bytes
TOOL_BLOCK_SIZES = (4096, 8192, 16384, 32768, 65536)
MAX_INDEX_SIZE = 1_000_000_000   # blocks in the jump table
BLOCK_CRC_SEED = 100007           # seed of the per-block CRC (a prime upstream picked)
CRC_SIZE = 4
JUMP_ENTRY_SIZE = 4              # the jump table is u32 stored block lengths (CRC included)

_HT = struct.Struct("<8s16sIIQQQQIIIBBBBIIB7x")
assert _HT.size == HT_STRUCT_SIZE


@dataclass(frozen=True)
class HeaderTrailer(MagicFlags):
    """One ZFile header or trailer (field names follow spec §2.2)."""

    MAGICS = (MAGIC0, MAGIC1)

    magic0: bytes = MAGIC0
    magic1: bytes = MAGIC1
    size: int = HT_STRUCT_SIZE
    digest: int = 0
    flags: int = 0
    index_offset: int = 0
    index_size: int = 0            # number of blocks (u32 entries), not bytes
    original_file_size: int = 0
    index_crc: int = 0
    reserved0: int = 0
    block_size: int = DEFAULT_BLOCK_SIZE
    algo: int = ALGO_LZ4
    level: int = 0
    use_dict: int = 0
    padding0: int = 0
    reserved1: int = 0
    dict_size: int = 0
    verify: int = 1

    # -- flags ------------------------------------------------------------------------------



    @property
    def is_header_overwritten(self) -> bool:
        return bool(self.flags & FLAG_HEADER_OVERWRITE)

    @property
    def has_digest(self) -> bool:
        return bool(self.flags & FLAG_DIGEST)


    def with_flags(self, flags: int) -> HeaderTrailer:
        return replace(self, flags=flags)

    def as_dict(self) -> dict:
        """Fields as plain values (magics in hex), for tools that print them."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.hex() if isinstance(v, bytes) else v
        out["algorithm"] = ALGO_NAMES.get(self.algo, f"unknown({self.algo})")
        return out

    # -- codec ------------------------------------------------------------------------------
    def pack(self) -> bytes:
        """The 512-byte block; the digest is recomputed when FLAG_DIGEST is set."""
        block = bytearray(HT_SPACE)
        _HT.pack_into(block, 0, *(getattr(self, f.name) for f in fields(self)))
        struct.pack_into("<I", block, DIGEST_OFFSET, 0)
        if self.flags & FLAG_DIGEST:
            struct.pack_into("<I", block, DIGEST_OFFSET, crc32c_raw(block))
        return bytes(block)

    @classmethod
    def unpack(cls, block) -> HeaderTrailer:
        """Parse the first 96 bytes of a header/trailer block (no validation)."""
        return cls(*_HT.unpack_from(block, 0))


def compute_digest(block) -> int:
    """Digest of a 512-byte header/trailer block: raw CRC-32C with the digest field zeroed."""
    b = bytearray(block[:HT_SPACE])
    b[DIGEST_OFFSET:DIGEST_OFFSET + 4] = bytes(4)
    return crc32c_raw(b)


def digest_ok(block) -> bool:
    """True if the stored digest matches the block."""
    return struct.unpack_from("<I", block, DIGEST_OFFSET)[0] == compute_digest(block)
