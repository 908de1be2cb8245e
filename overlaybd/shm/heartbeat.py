"""Worker heartbeats in shared memory (128 bytes per worker).

Layout (native u64s, accessed with :func:`overlaybd.shm.words.u64_words`): ``beat_ns``
(CLOCK_MONOTONIC, comparable across processes), ``pid``, ``parts_done``, ``state`` (one of the
``STATE_*`` values) -- written by the worker -- and ``ctl_sent``, written by the supervisor:
the count of control messages it has sent, so the worker learns of one without a syscall.

Two more words carry the wake-up protocol (:mod:`overlaybd.shm.wakeup`): ``worker_idle``, set by
the worker just before it sleeps on its submission eventfd, and ``supervisor_idle``, set by the
supervisor when it stops polling this worker's completion ring.  The side that publishes an
entry writes the peer's eventfd only while that word is set, and clears it first, so a busy
peer is never woken and a sleeping one once per batch.  ``comp_sets`` and ``comp_sets_beat``
count the worker's writes of the completion eventfd (by its main thread and its heartbeat
thread: one writer per word, no lock, which in CPython 3.11 would read the clock), each
counted after it is made, so that the supervisor clears the eventfd (a system call) only when
a count moved or it saw the eventfd readable (:meth:`overlaybd.workers.pool.WorkerPool.poll`).
"""

from __future__ import annotations

import time

from .words import u64_words

HEARTBEAT_SIZE = 128
STATE_STARTING, STATE_READY, STATE_STOPPING = 0, 1, 2
_BEAT, _PID, _DONE, _STATE, _CTL, _WORKER_IDLE, _SUPERVISOR_IDLE, _COMP_SETS, _COMP_SETS_BEAT = range(9)
_WORDS = 9


class Heartbeat:
    def __init__(self, buf, offset: int = 0):
        self.words = u64_words(buf, offset, _WORDS)

    def init(self) -> None:
        for field in range(_WORDS):
            self.words[field] = 0

    def beat(self) -> None:
        self.words[_BEAT] = time.monotonic_ns()

    def _get(self, field):
        return self.words[field]

    def _set(self, field, value):
        self.words[field] = value

    def close(self) -> None:
        self.words.release()

    @property
    def last_beat_ns(self) -> int:
        return self._get(_BEAT)

    def age(self) -> float:
        """Seconds since the last beat (infinite if it never beat)."""
        last = self.last_beat_ns
        return float("inf") if not last else (time.monotonic_ns() - last) / 1e9

    pid = property(lambda self: self._get(_PID), lambda self, v: self._set(_PID, v))
    parts_done = property(lambda self: self._get(_DONE), lambda self, v: self._set(_DONE, v))
    state = property(lambda self: self._get(_STATE), lambda self, v: self._set(_STATE, v))
    ctl_sent = property(lambda self: self._get(_CTL), lambda self, v: self._set(_CTL, v))
    worker_idle = property(lambda self: self._get(_WORKER_IDLE),
                           lambda self, v: self._set(_WORKER_IDLE, v))
    supervisor_idle = property(lambda self: self._get(_SUPERVISOR_IDLE),
                               lambda self, v: self._set(_SUPERVISOR_IDLE, v))


# Word indexes for the hot loops, which index ``Heartbeat.words`` directly (a property call
# costs more than the whole flag check).
WORKER_IDLE, SUPERVISOR_IDLE, PARTS_DONE, CTL_SENT, COMP_SETS, COMP_SETS_BEAT = (
    _WORKER_IDLE, _SUPERVISOR_IDLE, _DONE, _CTL, _COMP_SETS, _COMP_SETS_BEAT)
