"""Seal and commit (spec §1.5).

``close_seal`` appends the index and a trailer to a writable layer's data file in place.
``commit`` writes a new garbage-free sealed layer to a sequential output (anything with
``.write``): header, data in index order, compressed and padded index, trailer.
"""

from __future__ import annotations

import errno as _errno
import os

from ..abi.lsmt import (
    ENTRY_SIZE,
    FLAG_DATA,
    FLAG_HEADER,
    FLAG_SEALED,
    FLAG_SPARSE,
    HT_SPACE,
    INVALID_ENTRY,
    NULL_UUID,
    TAG_SIZE,
    HeaderTrailer,
    encode_entries,
    field_uuid,
)
from ..errors import OverlaybdError
from ..io import LocalFile, file_name, pwrite_all, read_exact, write_all
from .index import compress_rows
from .merged import MergedFile
from .ro import SealedLayer, open_ro
from .rw import WritableLayer, uuid_arg
from .stack import StackedFile

COPY_STEP = 32 << 10            # upstream copies (and emits mappings) in 32 KiB steps
STEP_SECTORS = COPY_STEP >> 9
READ_CHUNK = 1 << 20            # how much we read at once (does not change the output)
INDEX_ALIGN_ENTRIES = 4096 // ENTRY_SIZE
SEAL_ALIGN_ENTRIES = 512 // ENTRY_SIZE


class NotSupportedError(OverlaybdError):
    errno = _errno.ENOTSUP


def _source(src):
    """(rows, files by tag, top file, bottom file) of a commit source."""
    if isinstance(src, StackedFile):
        raise NotSupportedError("commit of a stacked (writable over lowers) file is not "
                                "supported", path=src.path)
    if isinstance(src, WritableLayer):
        if src.rw_tag:
            raise NotSupportedError("commit of a writable layer that is part of a stack is "
                                    "not supported", path=src.path)
        return src.index.rows(), [src.data], src.data, src.data
    if isinstance(src, SealedLayer):
        return src.index.rows(), [src.file], src.file, src.file
    if isinstance(src, MergedFile):
        return src.index.rows(), list(src.files), src.files[0], src.files[-1]
    raise TypeError(f"cannot commit {type(src).__name__}")


def _message(message) -> bytes:
    if isinstance(message, str):
        message = message.encode("utf-8")
    message = bytes(message or b"")
    if len(message) > TAG_SIZE:
        raise OverlaybdError(f"user tag too long ({len(message)} > {TAG_SIZE} bytes)",
                             field="user_tag", errno=_errno.ENOBUFS)
    return message


class _Copier:
    """Reads runs of source data (coalescing contiguous entries of one file) and appends
    them to the output; a short source read is an error, as upstream."""

    def __init__(self, files, out):
        self.files = files
        self.out = out
        self.run = None          # [tag, byte pos, byte length]

    def add(self, tag: int, pos: int, n: int) -> None:
        run = self.run
        if run is not None and run[0] == tag and run[1] + run[2] == pos:
            run[2] += n
        else:
            self.flush()
            self.run = [tag, pos, n]
        if self.run[2] >= READ_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.run is None:
            return
        tag, pos, n = self.run
        self.run = None
        f = self.files[tag]
        while n > 0:
            step = min(n, READ_CHUNK)
            data = f.pread(step, pos)
            if len(data) != step:
                raise OverlaybdError(f"short read from layer slot {tag}: {len(data)} of "
                                     f"{step} bytes at offset {pos}", path=file_name(f),
                                     errno=_errno.EIO)
            write_all(self.out, data)
            pos += step
            n -= step


def commit(src, out, uuid=None, parent_uuid=None, message=b"") -> HeaderTrailer:
    """Commit ``src`` (WritableLayer, SealedLayer or MergedFile) as a sealed layer to ``out``.

    Header flags 0x07; ``virtual_size`` from the top source file's header; ``uuid`` = the
    given one or the null UUID; ``parent_uuid`` = the given one or the parent UUID in the
    (bottom) source file's header; ``message`` = user tag (<= 256 bytes).  Returns the
    trailer."""
    rows, files, top, bottom = _source(src)
    top_hdr = HeaderTrailer.unpack(read_exact(top, HT_SPACE, 0, "header", file_name(top)))
    bottom_hdr = top_hdr if bottom is top else HeaderTrailer.unpack(
        read_exact(bottom, HT_SPACE, 0, "header", file_name(bottom)))
    uid = uuid_arg(uuid, "uuid") if uuid is not None else NULL_UUID
    if parent_uuid is not None:
        parent = uuid_arg(parent_uuid, "parent_uuid")
    else:
        parent = field_uuid(bottom_hdr.parent_uuid_raw) or NULL_UUID
    tag = _message(message)
    vsize = top_hdr.virtual_size
    write_all(out, HeaderTrailer.new(FLAG_HEADER | FLAG_DATA | FLAG_SEALED,
                                      virtual_size=vsize, uuid=uid, parent_uuid=parent,
                                      user_tag=tag).pack())

    copier = _Copier(files, out)
    pieces = []
    moffset = HT_SPACE >> 9
    for o, l, m, z, t in rows:
        if z:
            pieces.append((o, l, moffset, 1, t))
            continue
        copier.add(t, m << 9, l << 9)
        for k in range(0, l, STEP_SECTORS):
            pieces.append((o + k, min(STEP_SECTORS, l - k), moffset + k, 0, t))
        moffset += l
    copier.flush()
    index_offset = moffset << 9

    comp = compress_rows(pieces)
    count = len(comp)
    pad = -count % INDEX_ALIGN_ENTRIES
    if comp:
        cols = list(zip(*comp))
        write_all(out, encode_entries(*cols))
    if pad:
        write_all(out, INVALID_ENTRY * pad)
    trailer = HeaderTrailer.new(FLAG_DATA | FLAG_SEALED, index_offset=index_offset,
                                index_size=count + pad, virtual_size=vsize, uuid=uid,
                                parent_uuid=parent, user_tag=tag)
    write_all(out, trailer.pack())
    return trailer


def close_seal(layer) -> SealedLayer:
    """Seal a writable layer in place and reopen it read-only.

    The sorted index (padded to a multiple of 32 entries) goes at the end of the data file,
    then a trailer (flags 0x06, plus 0x10 for a sparse layer) whose index_size excludes the
    padding and whose virtual size and UUIDs come from the data file's header.  The header
    at offset 0 stays unsealed.  A StackedFile seals its upper layer."""
    if isinstance(layer, StackedFile):
        layer = layer.upper
    if not isinstance(layer, WritableLayer):
        raise TypeError(f"cannot close_seal {type(layer).__name__}")
    layer._check_open()
    index = layer.index
    n = len(index)
    raw = encode_entries(*index.numpy()) if n else b""
    pad = -n % SEAL_ALIGN_ENTRIES
    raw += INVALID_ENTRY * pad
    fd = layer.data.fd
    index_offset = os.fstat(fd).st_size
    pwrite_all(fd, raw, index_offset)
    hdr = HeaderTrailer.unpack(read_exact(layer.data, HT_SPACE, 0, "header", layer.path))
    flags = FLAG_DATA | FLAG_SEALED | (FLAG_SPARSE if hdr.is_sparse else 0)
    trailer = HeaderTrailer.new(flags, index_offset=index_offset, index_size=n,
                                virtual_size=hdr.virtual_size,
                                uuid=field_uuid(hdr.uuid_raw) or NULL_UUID,
                                parent_uuid=field_uuid(hdr.parent_uuid_raw) or NULL_UUID)
    pwrite_all(fd, trailer.pack(), index_offset + len(raw))
    path = layer.data_path
    layer.close()
    return open_ro(LocalFile(path))

