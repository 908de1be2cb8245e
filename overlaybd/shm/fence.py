"""A full memory barrier between processes sharing memory, from Python.

The wake-up protocol (:mod:`overlaybd.shm.wakeup`) is a store followed by a load on each side
(publish an entry, then read the peer's "asleep" flag; set the flag, then look at the ring
again).  x86-64 may satisfy such a load before its own earlier store is visible to the other
CPU, and then both sides can miss each other: the producer sees the consumer awake, the
consumer sees the ring empty and sleeps.  A locked read-modify-write instruction orders them.

CPython has no fence of its own.  An uncontended lock acquire and release is one: glibc's
``sem_trywait`` and ``sem_post`` are a ``lock cmpxchg`` each, full barriers on x86-64.  The
lock is a ``multiprocess`` lock (a POSIX semaphore), not a ``threading.Lock``: CPython 3.11's
thread lock reads the monotonic clock on every acquire, even an uncontended one, and where
processes have no vDSO clock (UML guests, some VMs) that is a system call, ~30 us, on every
fence -- four a command at depth 1.  The multiprocess lock takes the semaphore with
``sem_trywait`` first and reads no clock (~0.1 us for the pair).  The semaphore is shared with
a forked child, so each process makes its own after a fork: a process killed between the
acquire and the release must not leave its parent's fences blocked.

Elsewhere the rings rely on x86-64's TSO ordering too (:mod:`overlaybd.shm.ring`).  The
workers' heartbeat threads re-check every flag a few times a second, so on any machine a
wake-up lost to a missing barrier would cost latency, never a command.
"""

from __future__ import annotations

import os
import threading

import multiprocess


def _new_lock():
    try:
        return multiprocess.Lock()
    except (OSError, ImportError):        # no /dev/shm: a thread lock is a barrier too
        return threading.Lock()


def _renew() -> None:
    global _acquire, _release
    lock = _new_lock()
    _acquire, _release = lock.acquire, lock.release


_renew()
os.register_at_fork(after_in_child=_renew)


def fence() -> None:
    """Order every load after this call behind every store before it."""
    _acquire()
    _release()
