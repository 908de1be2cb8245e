"""LSMT layers (spec §1): sealed layers, the merged view, writable layers, stacking, commit.

Public API::

    open_ro(f) -> SealedLayer                      # any file object with pread/size
    open_merged(files) -> MergedFile               # decoded layer files, BOTTOM first
    add_top_layer(merged, f) -> MergedFile         # restack: a sealed layer on top
    create_rw(data_path, index_path, vsize, sparse=False, uuid=None, parent_uuid=None)
    open_rw(data_path, index_path=None) -> WritableLayer
    stack(upper, lower) -> StackedFile | WritableLayer
    commit(src, out, uuid=None, parent_uuid=None, message=b"") -> trailer
    close_seal(layer) -> SealedLayer

Reads, writes and discards must be 512-byte aligned (AlignmentError otherwise).
"""

from ..abi.lsmt import MAX_INDEX_SIZE, MAX_LAYERS, MAX_LENGTH, MAX_RO_INDEX_SIZE
from .commit import NotSupportedError, close_seal, commit
from .index import SegmentIndex, combo_lookup, compress_rows, merge_indexes
from .merged import MergedFile, add_top_layer, open_merged
from .ro import SealedLayer, open_ro
from .rw import MAX_IO_SIZE, WritableLayer, create_rw, open_rw
from .stack import StackedFile, stack
from .view import AlignmentError

__all__ = [
    "MAX_INDEX_SIZE", "MAX_IO_SIZE", "MAX_LAYERS", "MAX_LENGTH", "MAX_RO_INDEX_SIZE",
    "AlignmentError", "MergedFile", "add_top_layer", "NotSupportedError", "SealedLayer", "SegmentIndex",
    "StackedFile", "WritableLayer", "close_seal", "combo_lookup", "commit", "compress_rows",
    "create_rw", "merge_indexes", "open_merged", "open_ro", "open_rw", "stack",
]
