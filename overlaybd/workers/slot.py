"""One worker position of the pool: the shared memory a worker process and the supervisor
exchange parts through (heartbeat words, submission ring, completion ring) and the
supervisor's bookkeeping for it.  The position outlives the processes that fill it: a
replacement re-reads the parts in flight from the same ring (docs/engine.md)."""

from __future__ import annotations

from collections import deque

from ..shm.channel import Channel
from ..shm.descriptor import COMPLETION_SIZE, PART_SIZE, Part, unpack_part
from ..shm.heartbeat import HEARTBEAT_SIZE, Heartbeat
from ..shm.region import SharedRegion
from ..shm.ring import Ring
from ..shm.wakeup import Event


class WorkerSlot:
    """One worker position: its shared memory survives the processes that come and go."""

    def __init__(self, index: int, cpu: int | None, ring_slots: int):
        self.index = index
        self.cpu = cpu
        self.hb_off = 0
        self.sub_off = HEARTBEAT_SIZE
        self.comp_off = self.sub_off + Ring.footprint(ring_slots, PART_SIZE)
        size = self.comp_off + Ring.footprint(ring_slots, COMPLETION_SIZE)
        self.region = SharedRegion.create(size, f"worker{index}")
        buf = self.region.buf
        self.hb = Heartbeat(buf, self.hb_off)
        self.hb.init()
        self.sub = Ring(buf, self.sub_off, ring_slots, PART_SIZE, init=True,
                        name=f"worker {index} submission ring")
        self.comp = Ring(buf, self.comp_off, ring_slots, COMPLETION_SIZE, init=True,
                         name=f"worker {index} completion ring")
        self.sub_event = Event(blocking=True)    # the worker sleeps in a read of it
        self.published = 0                      # parts ever published to sub (its head)
        self.completed = 0                      # of those, parts whose completion we consumed
        self.backlog: deque[Part] = deque()     # parts waiting for room in the ring
        self.words = self.hb.words              # the wake-up flags, indexed in the hot loops
        self.wakeups = 0                        # times the supervisor woke this worker
        self.unsignalled = 0                    # parts published since the last wake()
        self.proc = None
        self.channel: Channel | None = None
        self.restarts = 0
        self.spawned_at = 0.0
        self.early_deaths = 0                   # consecutive deaths of processes that did nothing
        self.respawn_at = 0.0                   # crash loop: no process until then

    @property
    def outstanding(self) -> int:
        """Parts published and not yet completed, plus the backlog."""
        return self.published - self.completed + len(self.backlog)

    def in_flight(self) -> list[Part]:
        """The parts published and not completed, oldest first (read back from the ring)."""
        return [Part(*unpack_part(self.sub.buf, self.sub.slot_offset(i)))
                for i in range(self.completed, self.published)]

    def close(self) -> None:
        self.sub_event.close()
        self.words = None
        for part in (self.hb, self.sub, self.comp):
            part.close()
        self.hb = self.sub = self.comp = None
        self.region.close()


def place(workers: int, allowed: list[int]) -> list[int | None]:
    """The CPU each worker is pinned to, from the CPUs the pool may use (``allowed``, sorted;
    empty: None, not pinned).

    Workers take the last CPUs, and the first ones are left to the supervisor, which is not
    pinned (a pinned supervisor cannot move away from a CPU something else keeps busy).  With
    as many workers as CPUs or more they go round: one then shares the supervisor's CPU, and
    chunks being spread evenly, its share of that CPU sets every worker's pace, 1 / (S + W/N)
    commands a second (docs/performance.md, "A worker on the supervisor's CPU"), which is why
    the default count leaves a CPU over.  Unpinned workers did better on the host at 4 KiB
    but worse in the kernel on sequential reads (same place).
    """
    if not allowed:
        return [None] * workers
    first = max(len(allowed) - workers, 0)
    return [allowed[(first + i) % len(allowed)] for i in range(workers)]
