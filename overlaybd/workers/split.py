"""Splitting a command into parts and routing each part to a worker (docs/engine.md).

A part never crosses a chunk boundary and carries at most ``max_iovs`` iovecs (what fits a
descriptor); the worker of a part is ``mmh3(dev, chunk index) % workers`` so one chunk always
goes to one worker.
"""

from __future__ import annotations

import struct

import mmh3

_KEY = struct.Struct("<IQ")


def route(dev: int, chunk: int, workers: int) -> int:
    """The worker that owns ``chunk`` of ``dev``."""
    return mmh3.hash(_KEY.pack(dev, chunk), signed=False) % workers


def split_iovs(offset: int, iovs, chunk_size: int, max_iovs: int):
    """``[(offset, length, iovs), ...]`` for a READ/WRITE at ``offset`` with ``iovs``."""
    if len(iovs) == 1:                       # the common case: one buffer within one chunk
        moff, n = iovs[0]
        if n and offset // chunk_size == (offset + n - 1) // chunk_size:
            return [(offset, n, ((moff, n),))]
    parts = []
    pos = start = offset
    cur: list = []
    chunk_end = (pos // chunk_size + 1) * chunk_size
    for moff, n in iovs:
        while n > 0:
            take = min(n, chunk_end - pos)
            cur.append((moff, take))
            pos += take
            moff += take
            n -= take
            if pos == chunk_end or len(cur) == max_iovs:
                parts.append((start, pos - start, tuple(cur)))
                cur = []
                start = pos
                if pos == chunk_end:
                    chunk_end += chunk_size
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
