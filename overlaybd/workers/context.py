"""What an opener running inside the engine may want to know about its process.

An opener (``opener() -> backend``) runs in a worker process, or in the supervisor when the
engine is inline.  It can size its per-process block cache from :func:`current`::

    ctx = overlaybd.workers.context.current()
    budget = ctx.cache_bytes if ctx else 0
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerContext:
    index: int          # worker index, 0..workers-1 (0 when inline)
    workers: int        # worker count of the engine (0 = inline)
    cache_bytes: int    # decompressed-block cache budget of this process
    chunk_size: int     # routing chunk: this process sees only its own chunks (unless inline)


_current: WorkerContext | None = None


def current() -> WorkerContext | None:
    """The context of this process, or None outside the engine."""
    return _current


def set_current(ctx: WorkerContext | None) -> None:
    global _current
    _current = ctx
