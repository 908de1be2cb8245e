"""A full memory barrier between processes sharing memory, from Python.

The wake-up protocol (:mod:`overlaybd.shm.wakeup`) is a store followed by a load on each side
(publish an entry, then read the peer's "asleep" flag; set the flag, then look at the ring
again).  x86-64 may satisfy such a load before its own earlier store is visible to the other
CPU, and then both sides can miss each other: the producer sees the consumer awake, the
consumer sees the ring empty and sleeps.  A locked read-modify-write instruction orders them.
CPython has no fence of its own, but an uncontended ``Lock`` acquire and release is, on Linux,
glibc's ``sem_wait``/``sem_post`` fast path: a ``lock cmpxchg`` and a ``lock xadd``, each a
full barrier on x86-64 (~0.1 us for the pair, no system call).

Elsewhere the rings rely on x86-64's TSO ordering too (:mod:`overlaybd.shm.ring`).  The
workers' heartbeat threads re-check every flag a few times a second, so on any machine a
wake-up lost to a missing barrier would cost latency, never a command.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_acquire, _release = _lock.acquire, _lock.release


def fence() -> None:
    """Order every load after this call behind every store before it."""
    _acquire()
    _release()
