"""The prefetch trace file (spec §11): a 24-byte header, then 24-byte records.

Little-endian, x86-64 natural alignment (the padding is part of the format and written as
zeros).  Layouts and constants only; loading policy lives in ``overlaybd.prefetch.trace``.

Header: ``u32 magic`` @0, 4 pad, ``u64 data_size`` @8 (24 x records), ``u32 checksum`` @16,
4 pad.  Record: ``char op`` @0 ('R' read, 'W' write), 3 pad, ``u32 layer_index`` @4 (index
in the config's ``lowers``, 0 = bottom), ``u64 count`` @8, ``i64 offset`` @16.  ``checksum``
is the raw CRC-32C chained over the records (seed 0 for the first, the previous result for
the next), padding included.
"""

import struct

MAGIC = 0xC2EF1820          # IEEE CRC-32 (zlib) of b"Container Image Trace Format"
MAGIC_TEXT = b"Container Image Trace Format"

HEADER = struct.Struct("<I4xQI4x")
RECORD = struct.Struct("<c3xIQq")
HEADER_SIZE = HEADER.size   # 24
RECORD_SIZE = RECORD.size   # 24

OP_READ = b"R"
OP_WRITE = b"W"
OPS = (OP_READ, OP_WRITE)

MAX_IO_SIZE = 1 << 20       # upstream's replay buffer: records are replayed in pieces this big
MAX_LIST_SIZE = 64 << 10    # a file list (non-binary trace) may not be larger


def pack_header(data_size: int, checksum: int) -> bytes:
    return HEADER.pack(MAGIC, data_size, checksum)


def unpack_header(block):
    """(magic, data_size, checksum) of the first 24 bytes of ``block``."""
    return HEADER.unpack_from(block, 0)


def pack_record(op: bytes, layer_index: int, count: int, offset: int) -> bytes:
    return RECORD.pack(op, layer_index, count, offset)
