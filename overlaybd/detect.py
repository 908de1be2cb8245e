"""Per-blob format detection (spec §2.5 last paragraph): tar, then ZFile, then LSMT.

``open_blob(f)`` peels the wrappers off a layer blob and returns the file the caller opens as
LSMT.  ``describe(f)`` reports every level with its header/trailer fields (for
``overlaybd-info``).
"""

from __future__ import annotations

from .abi import lsmt as lsmt_abi
from .abi import zfile as zfile_abi
from .tar import TarFile, is_tar
from .zfile import ZFile, is_zfile


def open_blob(f):
    """``f`` with a one-file tar and/or ZFile layer removed, as upstream opens every layer:
    a valid ustar header -> TarFile; then a ZFile header -> ZFile; else the file as is.
    A ZFile whose header digest fails raises FormatError."""
    if is_tar(f):
        f = TarFile(f)
    if is_zfile(f):
        return ZFile(f)
    return f


def _lsmt_block(f, off):
    block = f.pread(lsmt_abi.HT_SPACE, off)
    if len(block) != lsmt_abi.HT_SPACE:
        return None
    ht = lsmt_abi.HeaderTrailer.unpack(block)
    return ht if ht.magic_ok else None


def _lsmt_fields(ht) -> dict:
    return {
        "flags": ht.flags, "is_header": ht.is_header, "is_data_file": ht.is_data_file,
        "is_sealed": ht.is_sealed, "is_sparse": ht.is_sparse,
        "index_offset": ht.index_offset, "index_size": ht.index_size,
        "virtual_size": ht.virtual_size, "uuid": ht.uuid, "parent_uuid": ht.parent_uuid,
        "version": ht.version, "sub_version": ht.sub_version,
        "user_tag": ht.user_tag.decode("utf-8", "replace"),
    }


def describe(f) -> dict:
    """What the blob is, level by level: ``{"kinds": [...], "tar": {...}, "zfile": {...},
    "lsmt": {...}}`` (only the levels present).  Raises FormatError where opening a level
    fails, exactly as ``open_blob`` would."""
    out = {"kinds": [], "size": f.size}
    if is_tar(f):
        t = TarFile(f)
        out["kinds"].append("tar")
        out["tar"] = {"payload_offset": t.base, "payload_size": t.size, "pax": dict(t.pax)}
        f = t
    if is_zfile(f):
        z = ZFile(f)
        trailer = z.trailer
        if trailer is None and f.size >= 2 * zfile_abi.HT_SPACE:   # header overwritten
            t = zfile_abi.HeaderTrailer.unpack(f.pread(zfile_abi.HT_SPACE,
                                                       f.size - zfile_abi.HT_SPACE))
            trailer = t if t.magic_ok and not t.is_header else None
        out["kinds"].append("zfile")
        out["zfile"] = {
            "header": z.header.as_dict(),
            "trailer": trailer.as_dict() if trailer is not None else None,
            "algorithm": z.algorithm, "block_size": z.block_size, "blocks": z.nblocks,
            "verify": z.verify, "original_size": z.size, "compressed_size": f.size,
        }
        f = z
    header = _lsmt_block(f, 0)
    if header is not None:
        out["kinds"].append("lsmt")
        info = {"header": _lsmt_fields(header), "trailer": None}
        if f.size >= 2 * lsmt_abi.HT_SPACE:
            trailer = _lsmt_block(f, f.size - lsmt_abi.HT_SPACE)
            if trailer is not None and not trailer.is_header:
                info["trailer"] = _lsmt_fields(trailer)
        out["lsmt"] = info
    return out
