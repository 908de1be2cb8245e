"""LSMT on-disk structures (spec §1.1, §1.1.1, §1.2): header/trailer, UUID text, index entries.

Layouts and codecs only; validation policy lives in ``overlaybd.lsmt``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .common import FLAG_DATA, FLAG_HEADER, FLAG_SEALED, MagicFlags  # noqa: F401 (re-exported)

SECTOR = 512
SECTOR_SHIFT = 9

# -- header / trailer (§1.1) ------------------------------------------------------------------
MAGIC0 = b"LSMT\x00\x01\x02\x00"
MAGIC1 = bytes.fromhex("657E63D29444084CA2D2C8EC4FCFAE8A")
HT_SPACE = 4096          # the block a header or trailer occupies
HT_STRUCT_SIZE = 390     # the struct itself; the rest of the block is zero
TAG_SIZE = 256           # user_tag (commit message) bytes
UUID_FIELD_SIZE = 37     # 36 chars + NUL

FLAG_SPARSE = 1 << 4     # sparse writable data file

VERSION = 1
SUB_VERSION = 1

_HT = struct.Struct("<8s16sIIQQQ37s37sHBB256s")
assert _HT.size == HT_STRUCT_SIZE
VSIZE_OFFSET = struct.calcsize("<8s16sIIQQ")    # virtual_size (u64), patched by resize

# -- index entries (§1.2) ---------------------------------------------------------------------
ENTRY_SIZE = 16
MAX_LENGTH = (1 << 14) - 1           # sectors per entry
MAX_OFFSET = (1 << 50) - 1
INVALID_OFFSET = MAX_OFFSET          # padding entries carry this offset
MAX_MOFFSET = (1 << 55) - 1
MAX_RO_INDEX_SIZE = 1_000_000        # entries in a sealed layer's trailer
MAX_INDEX_SIZE = 128_000_000         # entries in an RW index file / a merged index
MAX_LAYERS = 255

_OFF_MASK = np.uint64(MAX_OFFSET)
_MOFF_MASK = np.uint64(MAX_MOFFSET)
_ENTRY = struct.Struct("<QQ")


# -- UUID text (§1.1.1) -----------------------------------------------------------------------
NULL_UUID = bytes(16)
_HEX = frozenset("0123456789abcdefABCDEF")
_DASHES = (8, 13, 18, 23)


def is_valid_uuid_text(text) -> bool:
    """True for exactly 36 characters, '-' at 8/13/18/23 and hex digits elsewhere."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(text, str) or len(text) != 36:
        return False
    for i, c in enumerate(text):
        if i in _DASHES:
            if c != "-":
                return False
        elif c not in _HEX:
            return False
    return True


def parse_uuid(text) -> bytes:
    """UUID text (either case) -> 16 bytes in storage order; ValueError if malformed."""
    if not is_valid_uuid_text(text):
        raise ValueError(f"invalid UUID text {text!r}")
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("ascii")
    return bytes.fromhex(text.replace("-", ""))


def uuid_text(raw: bytes) -> str:
    """16 bytes -> upper-case 8-4-4-4-12 text (how upstream writes UUIDs)."""
    h = bytes(raw).hex().upper()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def uuid_field(raw: bytes) -> bytes:
    """16 bytes -> the 37-byte on-disk text field (text + NUL)."""
    return uuid_text(raw).encode("ascii") + b"\0"


def field_text(field: bytes) -> str:
    """The text stored in a 37-byte UUID field, up to the first NUL (latin-1, never fails)."""
    return bytes(field).split(b"\0", 1)[0].decode("latin-1")


def field_uuid(field: bytes) -> bytes | None:
    """Parse a 37-byte UUID field to 16 bytes, or None if it does not hold a valid UUID."""
    text = field_text(field)
    return parse_uuid(text) if is_valid_uuid_text(text) else None


@dataclass
class HeaderTrailer(MagicFlags):
    """The 390-byte LSMT header/trailer struct.  UUID fields are kept as raw 37-byte fields so
    that ``unpack(x).pack() == x`` for every block whose bytes past the struct are zero."""

    MAGICS = (MAGIC0, MAGIC1)

    flags: int = 0
    index_offset: int = 0
    index_size: int = 0
    virtual_size: int = 0
    uuid_raw: bytes = bytes(UUID_FIELD_SIZE)
    parent_uuid_raw: bytes = bytes(UUID_FIELD_SIZE)
    reserved: int = 0
    version: int = VERSION
    sub_version: int = SUB_VERSION
    user_tag: bytes = b""
    magic0: bytes = MAGIC0
    magic1: bytes = MAGIC1
    struct_size: int = HT_STRUCT_SIZE

    @classmethod
    def new(cls, flags, *, index_offset=0, index_size=0, virtual_size=0, uuid=NULL_UUID,
            parent_uuid=NULL_UUID, user_tag=b""):
        """A header/trailer as upstream writes it; ``uuid``/``parent_uuid`` are 16 raw bytes."""
        if len(user_tag) > TAG_SIZE:
            raise ValueError(f"user tag too long ({len(user_tag)} > {TAG_SIZE} bytes)")
        return cls(flags=flags, index_offset=index_offset, index_size=index_size,
                   virtual_size=virtual_size, uuid_raw=uuid_field(uuid),
                   parent_uuid_raw=uuid_field(parent_uuid), user_tag=bytes(user_tag))

    @classmethod
    def unpack(cls, buf) -> HeaderTrailer:
        """Decode the first 390 bytes of ``buf`` (no validation)."""
        (m0, m1, size, flags, ioff, isize, vsize, u, pu, res, ver, sub,
         tag) = _HT.unpack_from(buf, 0)
        return cls(flags=flags, index_offset=ioff, index_size=isize, virtual_size=vsize,
                   uuid_raw=u, parent_uuid_raw=pu, reserved=res, version=ver,
                   sub_version=sub, user_tag=tag.rstrip(b"\0"), magic0=m0, magic1=m1,
                   struct_size=size)

    def pack(self) -> bytes:
        """The full 4096-byte block (struct followed by zeros)."""
        if len(self.user_tag) > TAG_SIZE:
            raise ValueError(f"user tag too long ({len(self.user_tag)} > {TAG_SIZE} bytes)")
        raw = _HT.pack(self.magic0, self.magic1, self.struct_size, self.flags,
                       self.index_offset, self.index_size, self.virtual_size, self.uuid_raw,
                       self.parent_uuid_raw, self.reserved, self.version, self.sub_version,
                       self.user_tag)
        return raw + bytes(HT_SPACE - HT_STRUCT_SIZE)





    @property
    def is_sparse(self) -> bool:
        return bool(self.flags & FLAG_SPARSE)

    @property
    def uuid(self) -> str:
        """The UUID field's text (as stored, up to the NUL)."""
        return field_text(self.uuid_raw)

    @property
    def parent_uuid(self) -> str:
        return field_text(self.parent_uuid_raw)


# -- index entry codec (§1.2) -----------------------------------------------------------------
def pack_entry(offset, length, moffset, zeroed=0, tag=0) -> bytes:
    """One 16-byte SegmentMapping."""
    w0 = (offset & MAX_OFFSET) | ((length & MAX_LENGTH) << 50)
    w1 = (moffset & MAX_MOFFSET) | ((1 if zeroed else 0) << 55) | ((tag & 0xFF) << 56)
    return _ENTRY.pack(w0, w1)


def unpack_entry(buf, pos=0):
    """16 bytes -> (offset, length, moffset, zeroed, tag)."""
    w0, w1 = _ENTRY.unpack_from(buf, pos)
    return w0 & MAX_OFFSET, w0 >> 50, w1 & MAX_MOFFSET, (w1 >> 55) & 1, w1 >> 56


INVALID_ENTRY = pack_entry(INVALID_OFFSET, 0, 0)


def decode_entries(buf, count=None):
    """Vectorised decode of packed entries -> (offset u64, length u16, moffset u64, zeroed u8,
    tag u8) numpy arrays.  ``buf`` is any buffer of ``16 * count`` bytes."""
    words = np.frombuffer(buf, dtype="<u8", count=-1 if count is None else 2 * count)
    w0 = words[0::2]
    w1 = words[1::2]
    off = w0 & _OFF_MASK
    length = (w0 >> np.uint64(50)).astype(np.uint16)
    moff = w1 & _MOFF_MASK
    zeroed = ((w1 >> np.uint64(55)) & np.uint64(1)).astype(np.uint8)
    tag = (w1 >> np.uint64(56)).astype(np.uint8)
    return off, length, moff, zeroed, tag


def encode_entries(off, length, moff, zeroed, tag) -> bytes:
    """Vectorised encode of parallel arrays (any integer sequences) into packed entries."""
    off = np.asarray(off, dtype=np.uint64)
    n = off.shape[0]
    words = np.empty(2 * n, dtype="<u8")
    words[0::2] = (off & _OFF_MASK) | ((np.asarray(length, dtype=np.uint64)
                                        & np.uint64(MAX_LENGTH)) << np.uint64(50))
    words[1::2] = ((np.asarray(moff, dtype=np.uint64) & _MOFF_MASK)
                   | ((np.asarray(zeroed, dtype=np.uint64) & np.uint64(1)) << np.uint64(55))
                   | ((np.asarray(tag, dtype=np.uint64) & np.uint64(0xFF)) << np.uint64(56)))
    return words.tobytes()
