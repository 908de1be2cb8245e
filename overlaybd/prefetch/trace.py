"""Trace files (spec §11): encoding, validation, and telling a binary trace from a file list.

A trace path names one of three things: nothing (prefetch off), an empty file (record mode),
or a non-empty file that is either a binary trace (starts with the magic) or a text list of
paths to prefetch.  ``decode`` accepts exactly what upstream's loader accepts and says why it
refuses anything else (magic, size, checksum), so a bad trace is logged and ignored, never
half replayed.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..abi import trace as abi
from ..crc import crc32c_raw
from ..errors import FormatError
from ..io import pwrite_all


class TraceError(FormatError):
    """A trace file that must not be replayed; ``reason`` says why in a few words."""

    def __init__(self, reason, path=None):
        super().__init__(reason, path=path)
        self.reason = reason


class Record(NamedTuple):
    op: bytes           # b"R" or b"W"
    layer: int          # index in the config's lowers, 0 = bottom
    count: int          # bytes
    offset: int         # in the layer's own address space (after tar and ZFile decoding)


def chain_checksum(records_bytes, seed: int = 0) -> int:
    """The header checksum: raw CRC-32C over the records, each continuing from the last.

    Chaining a raw CRC record by record equals one raw CRC over their concatenation (the raw
    form has no final inversion), so one call does it."""
    return crc32c_raw(records_bytes, seed)


def encode_records(records) -> bytes:
    return b"".join(abi.pack_record(r.op, r.layer, r.count, r.offset) for r in records)


def encode(records) -> bytes:
    """A whole trace file: header (magic, data size, checksum) and the records."""
    body = encode_records(records)
    return abi.pack_header(len(body), chain_checksum(body)) + body


def is_binary(head: bytes) -> bool:
    """True when ``head`` (the file's first bytes) starts with the trace magic."""
    return len(head) >= 4 and int.from_bytes(head[:4], "little") == abi.MAGIC


def decode(data, path=None) -> list[Record]:
    """Records of a whole trace file ``data``, or TraceError naming the first check that
    failed (the order upstream checks them in: header read, magic, size, checksum)."""
    data = memoryview(data)
    if len(data) < abi.HEADER_SIZE:
        raise TraceError(f"too short for a trace header: {len(data)} of {abi.HEADER_SIZE} bytes",
                         path)
    magic, data_size, checksum = abi.unpack_header(data)
    if magic != abi.MAGIC:
        raise TraceError(f"bad magic {magic:#010x} (expected {abi.MAGIC:#010x})", path)
    if len(data) != abi.HEADER_SIZE + data_size:
        raise TraceError(f"size mismatch: header says {data_size} bytes of records, the file has "
                         f"{len(data) - abi.HEADER_SIZE}", path)
    if data_size % abi.RECORD_SIZE:
        raise TraceError(f"data size {data_size} is not a multiple of {abi.RECORD_SIZE}", path)
    body = data[abi.HEADER_SIZE:]
    got = chain_checksum(body)
    if got != checksum:
        raise TraceError(f"checksum mismatch: header {checksum:#010x}, records {got:#010x}", path)
    return [Record(*fields) for fields in abi.RECORD.iter_unpack(body)]


def decode_records(body) -> list[Record]:
    """Bare 24-byte records (a spool file), ignoring a torn tail."""
    body = memoryview(body)
    body = body[:len(body) - len(body) % abi.RECORD_SIZE]
    return [Record(*fields) for fields in abi.RECORD.iter_unpack(body)]


def load(path) -> tuple[str, object]:
    """What the trace path holds: ``("missing", None)``, ``("record", None)`` (empty file),
    ``("trace", [Record])``, or ``("list", text)``.  A binary trace that fails validation
    raises TraceError; so do a list over 64 KiB and binary data without the magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(abi.HEADER_SIZE)
            if not head:
                return "record", None
            if is_binary(head):
                return "trace", decode(head + f.read(), path)
            if os.fstat(f.fileno()).st_size > abi.MAX_LIST_SIZE:
                raise TraceError(f"prefetch list larger than {abi.MAX_LIST_SIZE} bytes", path)
            raw = head + f.read()
    except FileNotFoundError:
        return "missing", None
    except OSError as e:
        raise TraceError(f"cannot read: {e.strerror}", path) from e
    try:
        if b"\0" in raw:
            raise UnicodeError
        return "list", raw.decode("utf-8")
    except UnicodeError:
        magic = int.from_bytes(raw[:4].ljust(4, b"\0"), "little")
        raise TraceError(f"bad magic {magic:#010x} (expected {abi.MAGIC:#010x}), and not a text "
                         "file list either", path) from None


def write(fd, records) -> None:
    """Write a whole trace through ``fd`` from offset 0 (truncating what was there) and sync
    it: the header goes last, so a torn write never looks valid."""
    body = encode_records(records)
    os.ftruncate(fd, 0)
    pwrite_all(fd, bytes(abi.HEADER_SIZE), 0)
    pwrite_all(fd, body, abi.HEADER_SIZE)
    pwrite_all(fd, abi.pack_header(len(body), chain_checksum(body)), 0)
    os.fsync(fd)


def summary(records) -> dict:
    """Counts per op and per layer, bytes, and the offset range of each layer."""
    layers: dict[int, dict] = {}
    ops: dict[str, int] = {}
    total = 0
    for r in records:
        op = r.op.decode("latin-1")
        ops[op] = ops.get(op, 0) + 1
        total += r.count
        s = layers.setdefault(r.layer, {"records": 0, "bytes": 0, "min_offset": r.offset,
                                        "max_end": r.offset + r.count})
        s["records"] += 1
        s["bytes"] += r.count
        s["min_offset"] = min(s["min_offset"], r.offset)
        s["max_end"] = max(s["max_end"], r.offset + r.count)
    return {"records": len(records), "bytes": total, "ops": ops,
            "layers": {str(k): v for k, v in sorted(layers.items())}}


def describe(path, records=True) -> dict:
    """What ``overlaybd-info`` prints for a binary trace; TraceError when it is invalid."""
    with open(path, "rb") as f:
        data = f.read()
    recs = decode(data, path)
    out = {"file": str(path), "kinds": ["trace"], "size": len(data),
           "header": {"magic": f"{abi.MAGIC:#010x}", "data_size": len(data) - abi.HEADER_SIZE,
                      "checksum": f"{abi.unpack_header(data)[2]:#010x}"},
           "summary": summary(recs)}
    if records:
        out["records"] = [{"op": r.op.decode("latin-1"), "layer": r.layer, "count": r.count,
                           "offset": r.offset} for r in recs]
    return out
