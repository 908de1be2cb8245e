"""The merged read-only view of a stack of sealed layers (spec §1.6)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..abi.lsmt import MAX_INDEX_SIZE, MAX_LAYERS
from ..errors import FormatError, OverlaybdError
from ..io import file_name
from .index import SegmentIndex, merge_indexes
from .ro import SealedLayer, open_ro
from .view import SectorView

PARALLEL_LOAD = 32


class MergedFile(SectorView):
    """One index over several sealed layers; entry tag = layer slot (0 = top).

    ``layers`` are the SealedLayers bottom first (as given); ``files`` are the layer files by
    slot (top first).  ``size`` is the virtual size of the top-most layer whose size is > 0.
    """

    def __init__(self, layers, index: SegmentIndex, vsize: int, own: bool = True):
        self.layers = list(layers)
        self._set_index(index)
        self.size = vsize
        self.virtual_size = vsize
        self.own = own
        self.files = [layer.file for layer in reversed(self.layers)]
        self.path = "merged[" + ", ".join(layer.path for layer in self.layers) + "]"
        self._set_files(self.files)

    def allocated_sectors(self) -> int:
        """st_blocks-like count of allocated (non-zeroed) 512-byte sectors."""
        return self.index.block_count()

    def close(self) -> None:
        if self.own:
            for layer in self.layers:
                layer.close()
        self.own = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"MergedFile({len(self.layers)} layers, entries={len(self.index)})"


def _open_layer(f):
    return f if isinstance(f, SealedLayer) else open_ro(f)


def open_merged(files, own: bool = True) -> MergedFile:
    """Open decoded layer files (BOTTOM first; file objects or SealedLayers) as one view.
    ``own``: ``close()`` closes the layer files."""
    files = list(files)
    if not files:
        raise OverlaybdError("no layers to merge", field="layers")
    if len(files) > MAX_LAYERS:
        raise OverlaybdError(f"too many layers ({len(files)} > {MAX_LAYERS})", field="layers")
    if len(files) == 1:
        layers = [_open_layer(files[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(PARALLEL_LOAD, len(files))) as pool:
            layers = list(pool.map(_open_layer, files))
    vsize = 0
    for layer in reversed(layers):
        if layer.virtual_size > 0:
            vsize = layer.virtual_size
            break
    try:
        index = merge_indexes([layer.index for layer in reversed(layers)], MAX_INDEX_SIZE)
    except ValueError as e:
        raise FormatError(str(e), path=", ".join(file_name(f) for f in files),
                          field="index_size") from e
    return MergedFile(layers, index, vsize, own=own)


def add_top_layer(merged: MergedFile, f, own: bool = True) -> MergedFile:
    """A new view with layer ``f`` (a file object or SealedLayer, e.g. a just close_sealed
    upper) on top of ``merged``'s layers, reusing the merged index: its tags move down one
    slot and the new layer becomes slot 0 (the live-snapshot "restack").  ``merged`` must not
    be used afterwards (the new view owns its layers if ``own``)."""
    if len(merged.layers) + 1 > MAX_LAYERS:
        raise OverlaybdError(f"too many layers ({len(merged.layers) + 1} > {MAX_LAYERS})",
                             field="layers")
    top = _open_layer(f)
    o, ln, mo, zr, tg = merged.index.numpy()
    lower = SegmentIndex.from_numpy(o, ln, mo, zr, tg.astype(np.uint8) + np.uint8(1))
    try:
        index = merge_indexes([top.index, lower], MAX_INDEX_SIZE, keep_tags=True)
    except ValueError as e:
        raise FormatError(str(e), path=top.path, field="index_size") from e
    vsize = top.virtual_size or merged.size
    merged.own = False
    return MergedFile(merged.layers + [top], index, vsize, own=own)
