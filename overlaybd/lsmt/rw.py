"""Writable LSMT layers (spec §1.4): append-only (data + index log) and sparse (one file)."""

from __future__ import annotations

import errno as _errno
import os
import struct
import uuid as _uuid
from array import array

import numpy as np

from ..abi.lsmt import (
    ENTRY_SIZE,
    FLAG_DATA,
    FLAG_HEADER,
    FLAG_SPARSE,
    HT_SPACE,
    MAX_INDEX_SIZE,
    MAX_LENGTH,
    NULL_UUID,
    VSIZE_OFFSET,
    HeaderTrailer,
    pack_entry,
    parse_uuid,
)
from ..errors import FormatError, OverlaybdError
from ..io import LocalFile, punch_hole, pwrite_all, read_exact
from .index import SegmentIndex
from .ro import DATA_BEGIN, decode_valid, read_header, validate_mappings
from .view import SectorView, check_aligned

MAX_IO_SIZE = 4 << 20


def uuid_arg(value, field: str) -> bytes:
    """A UUID given as text (either case), 16 raw bytes or a ``uuid.UUID``."""
    if isinstance(value, _uuid.UUID):
        return value.bytes
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return bytes(value)
    try:
        return parse_uuid(value)
    except ValueError:
        raise OverlaybdError(f"invalid UUID {value!r}", field=field,
                             errno=_errno.EINVAL) from None


class WritableLayer(SectorView):
    """A writable layer.  ``sparse`` selects the kind; ``index`` is the in-memory Index0;
    ``rw_tag`` is the tag of new mappings (the number of lower layers once stacked)."""

    def __init__(self, data: LocalFile, index_file: LocalFile | None, header: HeaderTrailer,
                 index: SegmentIndex, vsize: int, allocator=None):
        self.data = data
        self.index_file = index_file
        self.data_path = data.path
        self.index_path = index_file.path if index_file is not None else None
        self.path = data.path
        self.header = header
        self.sparse = header.is_sparse
        self.index = index
        self.vsize = vsize
        self.rw_tag = 0
        self.max_io_size = MAX_IO_SIZE
        self.closed = False
        self._data_end = os.fstat(data.fd).st_size
        self._index_end = os.fstat(index_file.fd).st_size if index_file is not None else 0
        # Several processes appending to one layer (the worker engine): data positions come
        # from a shared ``allocator`` (.allocate(n) -> pos, .advance_to(end)) and index records
        # are appended through an O_APPEND descriptor, so no two writers overlap.
        self.allocator = allocator
        self._append_fd = -1
        if allocator is not None and not self.sparse:
            allocator.advance_to(-(-self._data_end // 512) * 512)
            if index_file is not None:
                self._append_fd = os.open(index_file.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._set_index(index)
        self._set_files([data], any_tag=True)

    # -- properties -----------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.vsize

    @property
    def uuid(self) -> str:
        return self.header.uuid

    @property
    def parent_uuid(self) -> str:
        return self.header.parent_uuid

    def allocated_sectors(self) -> int:
        return self.index.block_count()

    def set_max_io_size(self, n: int) -> None:
        """Writes are split into pieces of at most ``n`` bytes (a multiple of 4 KiB that a
        single mapping can describe)."""
        if n <= 0 or n % 4096 or n > MAX_LENGTH << 9:
            raise OverlaybdError(f"max io size {n} is not a positive multiple of 4 KiB up to "
                                 f"{MAX_LENGTH << 9 & ~4095}", path=self.path,
                                 field="max_io_size", errno=_errno.EINVAL)
        self.max_io_size = n

    def set_rw_tag(self, tag: int) -> None:
        """Stacking: existing and future mappings carry ``tag`` (upstream ComboIndex)."""
        self.rw_tag = tag
        n = len(self.index)
        if n:
            self.index.tag[:] = array("B", bytes([tag]) * n)

    def _check_open(self):
        if self.closed:
            raise OverlaybdError("layer is closed", path=self.path, errno=_errno.EBADF)

    # -- writes ---------------------------------------------------------------------------
    def _log(self, row) -> None:
        if self.index_file is not None and not self.sparse:
            rec = pack_entry(*row)
            if self._append_fd >= 0:
                if os.write(self._append_fd, rec) != len(rec):
                    raise OverlaybdError("short append to the index log", path=self.index_path,
                                         errno=_errno.EIO)
                return
            pwrite_all(self.index_file.fd, rec, self._index_end)
            self._index_end += len(rec)

    def pwrite(self, data, off: int) -> int:
        """Write ``data`` at ``off`` (both 512-byte aligned), split at ``max_io_size``."""
        self._check_open()
        mv = memoryview(data).cast("B")
        n = len(mv)
        check_aligned(n, off, self.path, "write")
        step = self.max_io_size
        for p in range(0, n, step):
            chunk = mv[p:p + step]
            self._write_chunk(chunk, off + p)
        return n

    def _write_chunk(self, chunk, off: int) -> None:
        n = len(chunk)
        if self.sparse:
            pos = HT_SPACE + off
            pwrite_all(self.data.fd, chunk, pos)
            self._data_end = max(self._data_end, pos + n)
            self.index.insert(off >> 9, n >> 9, pos >> 9, 0, self.rw_tag)
            return
        pos = self.allocator.allocate(n) if self.allocator is not None else self._data_end
        pwrite_all(self.data.fd, chunk, pos)
        self._data_end = max(self._data_end, pos + n)
        if off + n > self.vsize:
            self.vsize = off + n
        row = (off >> 9, n >> 9, pos >> 9, 0, self.rw_tag)
        self.index.insert(*row)
        self._log(row)

    def discard(self, off: int, n: int) -> None:
        """PUNCH_HOLE|KEEP_SIZE: the range reads as zeros; split at MAX_LENGTH sectors."""
        self._check_open()
        check_aligned(n, off, self.path, "discard")
        sec, left = off >> 9, n >> 9
        while left > 0:
            ln = min(left, MAX_LENGTH)
            if self.sparse:
                # upstream leaves the tag of a sparse discard at 0
                self.index.insert(sec, ln, sec + DATA_BEGIN, 1, 0)
                punch_hole(self.data.fd, HT_SPACE + (sec << 9), ln << 9, self.path)
            else:
                row = (sec, ln, self._data_end >> 9, 1, self.rw_tag)
                self.index.insert(*row)
                self._log(row)
            sec += ln
            left -= ln

    def fsync(self) -> None:
        self._check_open()
        os.fsync(self.data.fd)
        if self.index_file is not None:
            os.fsync(self.index_file.fd)

    def update_vsize(self, vsize: int) -> None:
        """Rewrite virtual_size in the header(s); a sparse file is truncated to vsize+4096."""
        self._check_open()
        self.vsize = vsize
        files = [self.data] + ([self.index_file] if not self.sparse and self.index_file else [])
        for f in files:
            read_header(f, f.path)
            pwrite_all(f.fd, struct.pack("<Q", vsize), VSIZE_OFFSET)
        self.header.virtual_size = vsize
        if self.sparse:
            os.ftruncate(self.data.fd, vsize + HT_SPACE)
            self._data_end = vsize + HT_SPACE

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._append_fd >= 0:
            os.close(self._append_fd)
            self._append_fd = -1
        self.data.close()
        if self.index_file is not None:
            self.index_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        kind = "sparse" if self.sparse else "append"
        return f"WritableLayer({self.data_path!r}, {kind}, entries={len(self.index)})"


# -- create / open ----------------------------------------------------------------------------
def _create_file(path) -> LocalFile:
    fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    os.close(fd)
    return LocalFile(path, writable=True)


def create_rw(data_path, index_path, vsize: int, sparse: bool = False, uuid=None,
              parent_uuid=None) -> WritableLayer:
    """Create a writable layer (overlaybd-create).  ``uuid`` defaults to a random v4 UUID,
    ``parent_uuid`` to the null UUID.  A sparse layer uses only ``data_path``; its
    ``index_path`` (if given) is created empty, as upstream does."""
    raw = uuid_arg(uuid, "uuid") if uuid is not None else _uuid.uuid4().bytes
    parent = uuid_arg(parent_uuid, "parent_uuid") if parent_uuid is not None else NULL_UUID
    flags = FLAG_HEADER | FLAG_DATA | (FLAG_SPARSE if sparse else 0)
    header = HeaderTrailer.new(flags, virtual_size=vsize, uuid=raw, parent_uuid=parent)
    data = _create_file(data_path)
    index_file = _create_file(index_path) if index_path is not None else None
    pwrite_all(data.fd, header.pack(), 0)
    if sparse:
        try:
            os.ftruncate(data.fd, vsize + HT_SPACE)
        except OSError as e:
            raise OSError(e.errno, e.strerror, data.path) from None
        if index_file is not None:
            index_file.close()
            index_file = None
    else:
        if index_file is None:
            data.close()
            raise OverlaybdError("an append-only layer needs an index file", path=data_path,
                                 field="index_path", errno=_errno.EINVAL)
        iheader = HeaderTrailer.new(FLAG_HEADER, index_offset=HT_SPACE, virtual_size=vsize,
                                    uuid=raw, parent_uuid=parent)
        pwrite_all(index_file.fd, iheader.pack(), 0)
    return WritableLayer(data, index_file, header, SegmentIndex(), vsize)


def _sparse_rows(fd: int, name: str):
    """Mappings of a sparse data file's allocated extents (SEEK_DATA/SEEK_HOLE from 4096),
    each split at MAX_LENGTH sectors."""
    offs, lens, moffs = [], [], []
    pos = HT_SPACE
    while True:
        try:
            begin = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == _errno.ENXIO:
                break
            raise OverlaybdError(f"SEEK_DATA failed: {e.strerror}", path=name,
                                 errno=e.errno) from e
        end = os.lseek(fd, begin, os.SEEK_HOLE)
        total = (end - begin) >> 9
        o = (begin - HT_SPACE) >> 9
        m = begin >> 9
        while total > 0:
            ln = min(total, MAX_LENGTH)
            offs.append(o)
            lens.append(ln)
            moffs.append(m)
            o += ln
            m += ln
            total -= ln
        pos = end
    n = len(offs)
    return (np.array(offs, np.uint64), np.array(lens, np.uint16), np.array(moffs, np.uint64),
            np.zeros(n, np.uint8), np.zeros(n, np.uint8))


def _build_index0(cols) -> SegmentIndex:
    """Insert mappings in file order; bulk-load when they are already disjoint."""
    off, length, moff, zeroed, tag = cols
    o = off.astype(np.int64)
    order = np.argsort(o, kind="stable")
    so = o[order]
    sl = length[order].astype(np.int64)
    if so.size < 2 or bool((so[1:] >= so[:-1] + sl[:-1]).all()):
        return SegmentIndex.from_numpy(so, sl, moff[order], zeroed[order], tag[order])
    index = SegmentIndex()
    for row in zip(o.tolist(), length.tolist(), moff.tolist(), zeroed.tolist(), tag.tolist()):
        index.insert(*row)
    return index


def open_rw(data_path, index_path=None, allocator=None) -> WritableLayer:
    """Reopen a writable layer; the sparse kind is detected from the data header's flags.
    ``allocator``: shared data-position allocator when several processes write the layer."""
    data = LocalFile(data_path, writable=True)
    index_file = None
    try:
        name = data.path
        header = read_header(data, name)
        data_sectors = os.fstat(data.fd).st_size >> 9
        if header.is_sparse:
            cols = _sparse_rows(data.fd, name)
            vsize = header.virtual_size
        else:
            if index_path is None:
                raise FormatError("append-only layer needs its index file", path=name,
                                  field="index_path")
            index_file = LocalFile(index_path, writable=True)
            iname = index_file.path
            iheader = read_header(index_file, iname)
            if iheader.is_data_file or iheader.is_sealed:
                raise FormatError(f"index file header flags 0x{iheader.flags:x} are not an "
                                  "unsealed index file", path=iname, field="flags")
            if iheader.index_offset != HT_SPACE:
                raise FormatError(f"index_offset {iheader.index_offset} != {HT_SPACE}",
                                  path=iname, field="index_offset")
            count = (index_file.size - HT_SPACE) // ENTRY_SIZE
            if count > MAX_INDEX_SIZE:
                raise FormatError(f"index file holds {count} entries (limit "
                                  f"{MAX_INDEX_SIZE})", path=iname, field="index_size")
            raw = read_exact(index_file, count * ENTRY_SIZE, HT_SPACE, "index", iname)
            cols = decode_valid(raw, iname)
            del raw
            vsize = iheader.virtual_size
        validate_mappings(*cols[:4], DATA_BEGIN, data_sectors,
                          index_file.path if index_file else name, check_order=False)
        index = _build_index0(cols)
    except BaseException:
        data.close()
        if index_file is not None:
            index_file.close()
        raise
    return WritableLayer(data, index_file, header, index, vsize, allocator)
