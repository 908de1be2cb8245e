"""Which engine process this is: set by the engine (``overlaybd.workers``), read by anyone.

An opener (``opener() -> backend``) runs in a worker process, or in the supervisor when the
engine is inline.  Code below the engine that must behave differently in one process only
reads :func:`current` from here, never the workers package (which loads the process pool):
the image opener starts background download in the first process only, metrics pick the
process's slab.  The block-cache budget reaches images through their opener
(``ImageOpener(cache_bytes=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerContext:
    index: int          # worker index, 0..workers-1 (0 when inline)
    workers: int        # worker count of the engine (0 = inline)
    chunk_size: int     # routing chunk: this process sees only its own chunks (unless inline)


_current: WorkerContext | None = None


def current() -> WorkerContext | None:
    """The context of this process, or None outside the engine."""
    return _current


def set_current(ctx: WorkerContext | None) -> None:
    global _current
    _current = ctx
