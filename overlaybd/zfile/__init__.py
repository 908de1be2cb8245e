"""ZFile: seekable block compression of layer blobs (spec §2).

Public API: ``is_zfile(f)``, ``ZFile(f)`` (reader), ``ZFileWriter(out, ...)`` (streaming
builder), ``compress``, ``decompress``, ``verify``.
"""

from .codec import LZ4_EXACT
from .ops import compress, decompress, verify
from .reader import ZFile, is_zfile, read_header
from .writer import ZFileWriter

__all__ = ["LZ4_EXACT", "ZFile", "ZFileWriter", "compress", "decompress", "is_zfile",
           "read_header", "verify"]
