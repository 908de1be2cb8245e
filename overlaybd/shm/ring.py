"""A single-producer single-consumer ring of fixed-size slots in shared memory.

Layout at ``offset`` in a shared buffer (all integers native-endian, 8-byte aligned):

====== ===================================================================
0      ``head``: u64, count of slots ever published (written by the producer only)
8      magic u32 ``RING_MAGIC``, ``slots`` u32 (a power of two), ``slot_size`` u32
64     ``tail``: u64, count of slots ever consumed (written by the consumer only)
128    ``slots * slot_size`` bytes of slots; slot ``i`` holds entry ``i % slots``
====== ===================================================================

``head`` and ``tail`` live on separate cache lines and are each written by one side only, so no
lock is needed: the producer fills a slot, then publishes it by storing ``head + 1``; the
consumer reads the slot, then frees it by storing ``tail + 1``.  The counters are read and
accessed through :func:`overlaybd.shm.words.u64_words` (one aligned 8-byte load or store; not
``struct.pack_into``, which zero-fills before writing), so a side never sees a torn counter.
On x86-64 (TSO) the slot bytes are visible before the counter that publishes them.

Entries are packed and unpacked in place (``reserve``/``commit``, ``peek``/``release``) by the
codecs in :mod:`overlaybd.shm.descriptor`; ``push``/``pop`` copy whole slots for convenience.
A side that moves entries in batches works with the counters themselves: :meth:`head`,
:meth:`tail`, :meth:`slot_offset` of entry ``i``, and one store of the new count
(:meth:`publish_to`, :meth:`consume_to`) per batch.  The hottest loops use the same state
without the method calls: ``head_word[0]`` / ``tail_word[0]`` (the counters), and entry ``i``
at ``base + (i & mask) * slot_size``.
"""

from __future__ import annotations

import struct

from ..errors import FormatError
from .words import u64_words

RING_MAGIC = 0x4F424452  # "OBDR"
HEADER_SIZE = 128
_INFO = struct.Struct("III")
_HEAD, _INFO_OFF, _TAIL = 0, 8, 64


class Ring:
    """One side's handle on a ring; the same object may serve as producer or consumer."""

    def __init__(self, buf, offset: int = 0, slots: int | None = None, slot_size: int | None = None,
                 init: bool = False, name: str = "ring"):
        if offset % 64:
            raise ValueError(f"{name}: ring offset {offset} is not 64-byte aligned")
        self.buf = buf
        self.offset = offset
        self.name = name
        if init:
            if not slots or slots & (slots - 1):
                raise ValueError(f"{name}: slot count must be a power of two, got {slots}")
            if not slot_size or slot_size % 8:
                raise ValueError(f"{name}: slot size must be a positive multiple of 8, got {slot_size}")
            if offset + self.footprint(slots, slot_size) > len(buf):
                raise ValueError(f"{name}: {slots} slots of {slot_size} bytes do not fit the buffer")
            buf[offset:offset + HEADER_SIZE] = bytes(HEADER_SIZE)
            _INFO.pack_into(buf, offset + _INFO_OFF, RING_MAGIC, slots, slot_size)
        magic, got_slots, got_size = _INFO.unpack_from(buf, offset + _INFO_OFF)
        if magic != RING_MAGIC:
            raise FormatError(f"bad ring magic {magic:#x}", path=name, field="magic")
        if not got_slots or got_slots & (got_slots - 1):
            raise FormatError(f"slot count {got_slots} is not a power of two", path=name, field="slots")
        if slots is not None and got_slots != slots:
            raise FormatError(f"expected {slots} slots, found {got_slots}", path=name, field="slots")
        if slot_size is not None and got_size != slot_size:
            raise FormatError(f"expected slot size {slot_size}, found {got_size}", path=name,
                              field="slot_size")
        if offset + self.footprint(got_slots, got_size) > len(buf):
            raise FormatError("ring extends past the end of its buffer", path=name, field="slots")
        self.slots = got_slots
        self.slot_size = got_size
        self.mask = got_slots - 1
        self.base = offset + HEADER_SIZE
        self.head_word = u64_words(buf, offset + _HEAD, 1)
        self.tail_word = u64_words(buf, offset + _TAIL, 1)
        # Cached copies of the other side's counter: refreshed only when they look exhausted.
        self._head = self.head_word[0]
        self._tail = self.tail_word[0]

    @staticmethod
    def footprint(slots: int, slot_size: int) -> int:
        """Bytes a ring of ``slots`` slots of ``slot_size`` bytes needs (a multiple of 64)."""
        return HEADER_SIZE + ((slots * slot_size + 63) // 64) * 64

    # -- counters ------------------------------------------------------------------------------
    def _load_head(self) -> int:
        return self.head_word[0]

    def _load_tail(self) -> int:
        return self.tail_word[0]

    def __len__(self) -> int:
        """Entries published and not yet consumed (a snapshot)."""
        tail = self.tail_word[0]          # tail first: it can only grow, so this never goes negative
        return self.head_word[0] - tail

    def free(self) -> int:
        """Slots the producer can still fill (a snapshot)."""
        return self.slots - len(self)

    def head(self) -> int:
        """Entries ever published (the producer's counter, as stored)."""
        return self.head_word[0]

    def tail(self) -> int:
        """Entries ever consumed (the consumer's counter, as stored)."""
        return self.tail_word[0]

    def slot_offset(self, index: int) -> int:
        """Offset in ``buf`` of the slot that holds entry ``index``."""
        return self.base + (index & self.mask) * self.slot_size

    def publish_to(self, head: int) -> None:
        """Producer: publish every entry before ``head`` (filled in place, never more than
        ``slots`` ahead of :meth:`tail`)."""
        self.head_word[0] = head

    def consume_to(self, tail: int) -> None:
        """Consumer: free every entry before ``tail`` (never past :meth:`head`)."""
        self.tail_word[0] = tail

    # -- producer ------------------------------------------------------------------------------
    def reserve(self) -> int:
        """Offset in ``buf`` of the next free slot, or -1 when the ring is full."""
        head = self._load_head()
        if head - self._tail >= self.slots:
            self._tail = self._load_tail()
            if head - self._tail >= self.slots:
                return -1
        return self.base + (head & self.mask) * self.slot_size

    def commit(self) -> None:
        """Publish the slot returned by the last :meth:`reserve`."""
        self.head_word[0] += 1

    def push(self, data) -> bool:
        """Copy ``data`` (at most ``slot_size`` bytes) into the next slot; False when full."""
        if len(data) > self.slot_size:
            raise ValueError(f"{self.name}: entry of {len(data)} bytes exceeds slot size {self.slot_size}")
        off = self.reserve()
        if off < 0:
            return False
        self.buf[off:off + len(data)] = data
        self.commit()
        return True

    # -- consumer ------------------------------------------------------------------------------
    def peek(self) -> int:
        """Offset in ``buf`` of the oldest published entry, or -1 when the ring is empty."""
        tail = self._load_tail()
        if tail >= self._head:
            self._head = self._load_head()
            if tail >= self._head:
                return -1
        return self.base + (tail & self.mask) * self.slot_size

    def release(self) -> None:
        """Free the slot returned by the last :meth:`peek`."""
        self.tail_word[0] += 1

    def pop(self) -> bytes | None:
        """Copy out and free the oldest entry; None when empty."""
        off = self.peek()
        if off < 0:
            return None
        data = bytes(self.buf[off:off + self.slot_size])
        self.release()
        return data

    # -- recovery ------------------------------------------------------------------------------
    def rewind(self, tail: int) -> None:
        """Make the entries from ``tail`` on unconsumed again (they are still in their slots as
        long as the producer has not published ``slots`` entries past them).  Only while the
        consumer is not running: a replacement consumer re-reads them."""
        if not self.head_word[0] - self.slots <= tail <= self.tail_word[0]:
            raise ValueError(f"{self.name}: cannot rewind to {tail}")
        self.tail_word[0] = tail
        self._tail = tail

    def reset(self) -> None:
        """Empty the ring.  Only when neither side is running (e.g. its peer was reaped)."""
        self.head_word[0] = 0
        self.tail_word[0] = 0
        self._head = self._tail = 0

    def close(self) -> None:
        """Release the views on ``buf`` (needed before the mapping can be closed)."""
        self.head_word.release()
        self.tail_word.release()
