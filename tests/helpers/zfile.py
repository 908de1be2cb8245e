"""Helpers shared by the ZFile / tar tests: golden paths, test data, fault-injecting sources."""

from __future__ import annotations

import hashlib
import random
import struct

from overlaybd.abi import zfile as zabi
from overlaybd.crc import crc32c_raw
from overlaybd.io import BytesFile
from tests.helpers.env import GOLDEN

LAYERS = ("layer1", "layer2", "layer3")
ALGOS = ("lz4", "zstd")


def golden(name) -> bytes:
    return (GOLDEN / name).read_bytes()


def sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def mixed_data(size, seed=0) -> bytes:
    """Deterministic data mixing incompressible, repetitive and zero runs."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        kind = rng.randrange(4)
        n = rng.randrange(1, 20000)
        if kind == 0:
            out += rng.randbytes(n)
        elif kind == 1:
            word = rng.randbytes(rng.randrange(1, 40))
            out += (word * (n // len(word) + 1))[:n]
        elif kind == 2:
            out += bytes(n)
        else:
            out += b"".join(b"line %d of some text\n" % i for i in range(n // 20 + 1))[:n]
    return bytes(out[:size])


def random_writes(writer, data, rng, max_chunk=50000):
    """Feed ``data`` to ``writer.write`` in random-sized pieces (as from stdin)."""
    pos = 0
    while pos < len(data):
        n = rng.randrange(1, max_chunk)
        writer.write(data[pos:pos + n])
        pos += n


def blocks_of(zfile_bytes):
    """(header, [(offset, stored length)], table offset) parsed straight from the bytes."""
    h = zabi.HeaderTrailer.unpack(zfile_bytes)
    if not h.is_header_overwritten:
        h = zabi.HeaderTrailer.unpack(zfile_bytes[-512:])
    lens = struct.unpack_from(f"<{h.index_size}I", zfile_bytes, h.index_offset)
    out, off = [], 512
    for n in lens:
        out.append((off, n))
        off += n
    return h, out


def patch_header(data: bytes, at=0, **fields) -> bytes:
    """Change header/trailer fields at ``at`` and re-digest it, as a writer would."""
    ht = zabi.HeaderTrailer.unpack(data[at:at + 512])
    block = zabi.HeaderTrailer(**{**ht.__dict__, **fields}).pack()
    return data[:at] + block + data[at + 512:]


def patch_table(data: bytes, lens) -> bytes:
    """Replace the jump table (same count) and fix index_crc in header and trailer."""
    h, _ = blocks_of(data)
    table = struct.pack(f"<{len(lens)}I", *lens)
    data = data[:h.index_offset] + table + data[h.index_offset + len(table):]
    crc = crc32c_raw(table)
    if zabi.HeaderTrailer.unpack(data).is_header_overwritten:
        data = patch_header(data, 0, index_crc=crc)
    return patch_header(data, len(data) - 512, index_crc=crc)


class FlakySource(BytesFile):
    """A cached source whose byte range [bad_off, bad_off+bad_len) reads corrupted until it is
    evicted ``heal_after`` times (None = never heals).  Records evict calls."""

    def __init__(self, data, bad_off, bad_len, heal_after=1, path="<flaky>"):
        super().__init__(data, path=path)
        self.bad = (bad_off, bad_len)
        self.heal_after = heal_after
        self.evicts = []

    def evict(self, off, n):
        self.evicts.append((off, n))

    def pread(self, n, off):
        data = bytearray(super().pread(n, off))
        healed = self.heal_after is not None and len(self.evicts) >= self.heal_after
        b_off, b_len = self.bad
        lo, hi = max(off, b_off), min(off + len(data), b_off + b_len)
        if not healed and lo < hi:
            for i in range(lo - off, hi - off):
                data[i] ^= 0x5A
        return bytes(data)
