"""Splitting a command into parts and routing each part to a worker (docs/engine.md).

The worker of a chunk is ``mmh3(dev, chunk index) % workers``, so one chunk always goes to one
worker.  A part carries at most ``max_iovs`` iovecs (what fits a descriptor) and never crosses
a boundary between chunks of two workers; given no ``owner``, never any chunk boundary.
"""

from __future__ import annotations

import struct

import mmh3

_KEY = struct.Struct("<IQ")


def route(dev: int, chunk: int, workers: int) -> int:
    """The worker that owns ``chunk`` of ``dev``."""
    return mmh3.hash(_KEY.pack(dev, chunk), signed=False) % workers


def split_iovs(offset: int, iovs, chunk_size: int, max_iovs: int, owner=None):
    """``[(offset, length, iovs), ...]`` for a READ/WRITE at ``offset`` with ``iovs``.
    ``owner(chunk index)``: the worker of a chunk; neighbouring chunks of one worker are then
    not cut apart (a part's worker is its first chunk's)."""
    end = offset + sum(n for _, n in iovs)

    def cut_after(pos):                  # the end of the run of chunks owned like pos's
        c = pos // chunk_size + 1
        if owner is not None:
            mine = owner(c - 1)
            while c * chunk_size < end and owner(c) == mine:
                c += 1
        return c * chunk_size

    if len(iovs) == 1 and end > offset and end <= cut_after(offset):
        return [(offset, end - offset, tuple(iovs))]     # the common case: one buffer, one part
    parts = []
    pos = start = offset
    cur: list = []
    cut = cut_after(pos)
    for moff, n in iovs:
        while n > 0:
            take = min(n, cut - pos)
            cur.append((moff, take))
            pos += take
            moff += take
            n -= take
            if pos == cut or len(cur) == max_iovs:
                parts.append((start, pos - start, tuple(cur)))
                cur = []
                start = pos
                if pos == cut < end:
                    cut = cut_after(pos)
    if cur:
        parts.append((start, pos - start, tuple(cur)))
    return parts


def split_range(offset: int, length: int, chunk_size: int):
    """``[(offset, length, ()), ...]`` for a DISCARD: chunk-sized pieces, no iovecs."""
    parts = []
    pos, end = offset, offset + length
    while pos < end:
        take = min(end, (pos // chunk_size + 1) * chunk_size) - pos
        parts.append((pos, take, ()))
        pos += take
    return parts
