"""The supervised pool of worker processes (the supervisor's side of the rings).

Each worker slot owns one shared region -- heartbeat, submission ring, completion ring -- and a
submission eventfd; all workers signal one shared completion eventfd.  The pool's
:meth:`fileno` is that eventfd: it becomes readable on completions and, set by a thread that
watches the processes' sentinels (:mod:`overlaybd.workers.exits`), when a worker process exits,
so the daemon's event loop can select on it.  Each write of it is counted after it is made (a
word per worker thread; the pool's own, the ticker's and the exit thread's): a look reads
(clears) the eventfd only when more writes were counted than its reads returned, or when the
caller saw it readable (``poll(woken=True)``), so a busy loop's looks cost no system call and a
caller that selects on it and then polls never finds it readable again for nothing.  A caller
that watches it edge-triggered (epoll ``EPOLLET``: every write is a new edge) sets ``edge``, and
then it is never read at all: one system call less per wake-up of the supervisor (its count
only grows; 2**64 writes are centuries away).

Supervision, like a classic pre-fork arbiter: a worker whose process exited, or whose heartbeat
is older than ``heartbeat_sec``, is killed (SIGKILL), reaped, its completion ring drained, its
rings reset, and a replacement is forked on the same CPU.  Every part that was in flight on the
dead worker is published again, in its original order, to the replacement, so no command is
lost and none completes twice (a part leaves the in-flight table only when its completion is
consumed, and the dead process can no longer post one once reaped).  The one exception is a
"poison" part, one that was executing when ``MAX_DEATHS`` workers died: it completes with the
error status of its operation rather than crash workers forever.

At most ``ring_slots`` parts are outstanding per worker (published, completion not yet
consumed), which keeps both rings from ever filling; the rest wait in a backlog.  A worker
takes parts in ring order and completes each before it takes the next, so a worker's parts in
flight are exactly the ring entries from its count of consumed completions up to the ring's
head, still in their slots: a replacement re-reads them after the dead worker's consumer
counter is rewound (no table of parts in flight is kept).

Wake-ups (:mod:`overlaybd.shm.wakeup`): a part published to a worker that is not asleep costs
no system call; a sleeping worker is woken once.  The same holds back: a worker writes the
completion eventfd only when the supervisor has said, at the end of its :meth:`poll`, that it
stopped looking.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import Callable

import multiprocess
import psutil
from loguru import logger

from ..abi.ops import FAILED, OPS, ST_READ_ERR
from ..service import unprotect_oom
from ..shm.channel import Channel, PassFd
from ..shm.descriptor import (
    COMPLETION,
    COMPLETION_SIZE,
    PART_SIZE,
    Part,
    pack_part,
    unpack_part,
)
from ..shm.fence import fence
from ..shm.heartbeat import COMP_SETS, COMP_SETS_BEAT, STATE_READY, SUPERVISOR_IDLE, WORKER_IDLE
from ..shm.wakeup import Event
from ..ticker import Ticker
from .exits import ExitWatch
from .slot import WorkerSlot, place
from .worker import worker_main

EARLY_DEATH = 2.0       # a process that dies this young without completing a part died "early";
CRASH_LOOP = 3          # after this many early deaths in a row, restarts wait (up to MAX_DELAY)
MAX_DELAY = 10.0
STARTUP_GRACE = 30.0    # seconds a new worker may take to start beating (spawn imports a lot)
FORK_GRACE = 5.0        # ... when it is forked: it only unpacks its init message
MAX_DEATHS = 3          # a part that kills this many workers fails instead of killing more
LOOK_EVERY = 64         # busy polls between supervising looks (signal counts, exits, ticker)
WAKE_BATCH = 8          # parts published to a sleeping worker before it is woken mid-batch


class WorkerPool:
    """``workers`` pinned processes; parts in, ``on_part_done(tag, status)`` out (from poll)."""

    def __init__(self, workers: int, settings: dict, on_part_done: Callable[[int, int], None],
                 heartbeat_sec: float = 5.0, ring_slots: int = 1024, start_method: str = "fork",
                 cpus=None):
        if workers < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {workers}")
        self.ctx = multiprocess.get_context(start_method)
        # A forked worker is ready within milliseconds; one that is not after a few seconds
        # (stopped, or wedged on a lock another thread held at the fork) is replaced, rather
        # than holding its slot's commands for the long grace a spawned interpreter needs.
        self.startup_grace = max(heartbeat_sec, FORK_GRACE if start_method == "fork" else STARTUP_GRACE)
        self.settings = settings
        self.on_part_done = on_part_done
        self.heartbeat_sec = heartbeat_sec
        self.ring_slots = ring_slots
        allowed = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
        self.slots = [WorkerSlot(i, c, ring_slots) for i, c in enumerate(place(workers, allowed))]
        # Spinning before sleep pays only for a process with a CPU of its own: each worker and
        # the supervisor have one when there are more CPUs than workers.
        self.spin = len(allowed) > workers
        settings["spin"] = self.spin
        self.comp_event = Event()
        self._exits = ExitWatch(self.comp_event.set, "pool-exits")
        self._own_sets = 0                        # comp_event.set() by this thread (arm, signal)
        self._retired_sets = 0                    # counted by worker processes since replaced
        self._consumed = 0                        # sets taken by our reads of comp_event
        self.edge = False                         # fileno() watched with EPOLLET: never read
        self.devices: dict[int, tuple] = {}      # dev -> (opener, our dup of the uio fd, map size,
                                                 #         our dup of the scratch memfd)
        self._sentinels: dict[int, WorkerSlot] = {}
        # heartbeat checks once a quarter heartbeat, told by a tick, not by reading the clock
        # at every look (a system call where there is no vDSO: ~4 a command at depth 1 in UML)
        # ... and each tick sets comp_event, so that a caller may sleep without a timeout
        # (a timed epoll_wait reads the clock) and still supervise while nothing completes
        self._ticker = Ticker(heartbeat_sec / 4, "pool-ticker", self._tick)
        self._tick_sets = 0                       # comp_event.set() by the ticker thread
        self._seen_tick = -1
        self._deaths: dict[int, int] = {}         # part tag -> deaths of workers running it
        self._backlogged = 0                      # parts in all backlogs
        self._unsignalled: list[WorkerSlot] = []       # slots with parts published since wake()
        self._armed = True                        # supervisor_idle set: workers signal us
        self._quiet_polls = 0                     # polls since the last supervising look
        self.wakeups = 0                          # times workers (or the engine) woke us
        self.restarts = 0

    # -- processes -----------------------------------------------------------------------------
    def start(self) -> None:
        logger.info("{} worker(s) pinned to CPUs {}{}", len(self.slots), [s.cpu for s in self.slots],
                    "" if self.spin else ": one shares the supervisor's CPU, which sets the pace "
                    "of all at small reads (docs/performance.md)")
        for slot in self.slots:
            self._spawn(slot)
        self._ticker.start()
        self._exits.start()

    def _spawn(self, slot: WorkerSlot) -> None:
        self.settings["supervisor_pid"] = os.getpid()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent.settimeout(max(self.heartbeat_sec, 1.0))
        proc = self.ctx.Process(target=worker_main, args=(slot.index, child, slot.cpu, self.settings),
                                name=f"overlaybd-worker-{slot.index}", daemon=True)
        self._retired_sets += slot.words[COMP_SETS] + slot.words[COMP_SETS_BEAT]
        slot.hb.init()
        slot.hb.beat()          # the grace period of a starting worker
        slot.words[SUPERVISOR_IDLE] = int(self._armed)
        slot.spawned_at = time.monotonic()
        proc.start()
        child.close()
        if slot.cpu is not None:          # pinned before start() returns: no unpinned window
            try:
                psutil.Process(proc.pid).cpu_affinity([slot.cpu])
            except psutil.NoSuchProcess:
                pass                      # died at once: the sentinel reports it
        unprotect_oom(proc.pid)           # the OOM protection is the supervisor's only
        slot.proc = proc
        slot.channel = Channel(parent)
        self._sentinels[proc.sentinel] = slot
        self._exits.add(proc.sentinel)
        self._send(slot, ("init", PassFd(slot.region.fd), slot.hb_off, slot.sub_off, slot.comp_off,
                          PassFd(slot.sub_event.fd), PassFd(self.comp_event.fd)))
        for dev, (opener, fd, map_size, scratch) in self.devices.items():
            self._send(slot, ("add", dev, opener, PassFd(fd), map_size, PassFd(scratch)))

    def _send(self, slot: WorkerSlot, msg) -> None:
        """Send a control message; a worker that cannot take it is killed (and later replaced).
        A position without a process gets everything it needs when it is next spawned."""
        if slot.channel is None:
            return
        try:
            slot.channel.send(msg)
            slot.hb.ctl_sent += 1
            slot.sub_event.set()          # a sleeping worker waits on this eventfd alone
        except OSError as e:
            logger.error("worker {}: control message {} failed ({}); killing it", slot.index, msg[0], e)
            self._kill(slot)

    @staticmethod
    def _kill(slot: WorkerSlot) -> None:
        try:
            os.kill(slot.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _reap(self, slot: WorkerSlot) -> int | None:
        proc = slot.proc
        self._exits.remove(proc.sentinel)
        del self._sentinels[proc.sentinel]
        if proc.is_alive():
            self._kill(slot)
        proc.join()
        code = proc.exitcode
        proc.close()
        slot.channel.close()
        slot.proc = slot.channel = None
        return code

    def _replace(self, slot: WorkerSlot, reason: str) -> None:
        pid = slot.proc.pid
        code = self._reap(slot)
        self._drain(slot)                 # what it completed before dying counts
        self._blame(slot)
        slot.sub.rewind(slot.completed)   # the replacement starts at the first part not done
        slot.comp.reset()
        slot.words[WORKER_IDLE] = 0
        slot.sub_event.clear()
        pending = slot.outstanding
        slot.restarts += 1
        self.restarts += 1
        now = time.monotonic()
        if now - slot.spawned_at < EARLY_DEATH and slot.hb.parts_done == 0:
            slot.early_deaths += 1
        else:
            slot.early_deaths = 0
        logger.warning("worker {} (pid {}) {} (exit code {}); restarting it with {} parts to redo",
                       slot.index, pid, reason, code, pending)
        if slot.early_deaths >= CRASH_LOOP:
            delay = min(0.25 * 2 ** (slot.early_deaths - CRASH_LOOP), MAX_DELAY)
            logger.error("worker {} is crash-looping ({} processes in a row died at once); next "
                         "start in {:.2f}s", slot.index, slot.early_deaths, delay)
            slot.respawn_at = now + delay
            return
        self._spawn(slot)
        self._publish_backlog(slot)

    def _respawn_due(self) -> None:
        now = None                      # the clock is read only for a slot waiting to restart
        for slot in self.slots:
            if slot.proc is None:
                if now is None:
                    now = time.monotonic()
                if slot.respawn_at <= now:
                    self._spawn(slot)
                    self._publish_backlog(slot)

    def _blame(self, slot: WorkerSlot) -> None:
        """Fail the part the dead worker was running if it has now died with MAX_DEATHS workers.

        A worker takes parts in order and completes each before taking the next, so after its
        completions are drained, the part it was running (if it had taken one) is the oldest
        one not completed: entry ``completed`` of its ring, taken if the ring's tail is past it.
        """
        if slot.sub.tail() <= slot.completed:
            return
        part = Part(*unpack_part(slot.sub.buf, slot.sub.slot_offset(slot.completed)))
        deaths = self._deaths.get(part.tag, 0) + 1
        self._deaths[part.tag] = deaths
        if deaths >= MAX_DEATHS:
            logger.error("worker {}: {} at {}+{} of dev {} died with its worker {} times; "
                         "failing it", slot.index, OPS.get(part.op, part.op), part.offset,
                         part.length, part.dev, deaths)
            del self._deaths[part.tag]
            slot.completed += 1
            self.on_part_done(part.tag, FAILED.get(part.op, ST_READ_ERR))

    # -- devices -------------------------------------------------------------------------------
    def add_device(self, dev: int, opener, fd: int, map_size: int, scratch: int) -> None:
        """Raises TypeError (or another pickling error) if ``opener`` cannot be pickled."""
        Channel.encode(("add", dev, opener, PassFd(fd), map_size, PassFd(scratch)))
        dup, sdup = os.dup(fd), os.dup(scratch)
        os.set_inheritable(dup, False)
        os.set_inheritable(sdup, False)
        self._forget(dev)
        self.devices[dev] = (opener, dup, map_size, sdup)
        for slot in self.slots:
            self._send(slot, ("add", dev, opener, PassFd(dup), map_size, PassFd(sdup)))

    def _forget(self, dev: int) -> bool:
        entry = self.devices.pop(dev, None)
        if entry is not None:
            os.close(entry[1])
            os.close(entry[3])
        return entry is not None

    def remove_device(self, dev: int) -> None:
        if self._forget(dev):
            for slot in self.slots:
                self._send(slot, ("remove", dev))

    # -- parts ---------------------------------------------------------------------------------
    def submit(self, index: int, tag: int, dev: int, op: int, offset: int, length: int,
               iovs) -> None:
        """Publish a part to worker ``index`` (its backlog if the ring is full).  A sleeping
        worker is woken by the next :meth:`wake` (the engine's poll), or at once when
        ``WAKE_BATCH`` parts wait for it.  ``tag`` comes back with the status in
        ``on_part_done``."""
        slot = self.slots[index]
        i = slot.published
        if i - slot.completed >= self.ring_slots or slot.backlog:
            slot.backlog.append(Part(tag, dev, op, offset, length, tuple(iovs)))
            self._backlogged += 1
            return
        sub = slot.sub
        pack_part(sub.buf, sub.base + (i & sub.mask) * PART_SIZE, tag, dev, op, offset, length,
                  iovs)
        slot.published = i + 1
        sub.head_word[0] = i + 1          # publish (Ring.publish_to, without the call)
        if not slot.unsignalled:
            self._unsignalled.append(slot)
        slot.unsignalled += 1
        if slot.unsignalled >= WAKE_BATCH:
            self.wake()

    def wake(self) -> None:
        """Wake each worker that got parts since the last call, if it sleeps: one barrier
        and, per sleeping worker, one eventfd write for the whole batch."""
        pending = self._unsignalled
        if not pending:
            return
        fence()                           # the head stores before the looks at the flags
        for slot in pending:
            slot.unsignalled = 0
            words = slot.words
            if words[WORKER_IDLE]:
                words[WORKER_IDLE] = 0
                slot.wakeups += 1
                slot.sub_event.set()
        pending.clear()

    def _publish_backlog(self, slot: WorkerSlot) -> None:
        backlog = slot.backlog
        room = self.ring_slots - (slot.published - slot.completed)
        n = min(room, len(backlog))
        if n <= 0:
            return
        sub = slot.sub
        for i in range(slot.published, slot.published + n):
            pack_part(sub.buf, sub.slot_offset(i), *backlog.popleft())
        slot.published += n
        self._backlogged -= n
        sub.publish_to(slot.published)
        if not slot.unsignalled:
            self._unsignalled.append(slot)
        slot.unsignalled += n

    def _drain(self, slot: WorkerSlot) -> None:
        """Consume every completion in ``slot``'s ring (one counter store for the batch)."""
        comp = slot.comp
        tail, head = comp.tail(), comp.head()
        if tail == head:
            return
        buf, unpack, done = comp.buf, COMPLETION.unpack_from, self.on_part_done
        base, mask = comp.base, comp.mask
        deaths = self._deaths
        try:
            while tail < head:
                tag, status, _ = unpack(buf, base + (tail & mask) * COMPLETION_SIZE)
                tail += 1
                slot.completed += 1
                if deaths:
                    deaths.pop(tag, None)
                done(tag, status)
        finally:
            comp.consume_to(tail)

    # -- the supervisor's turn -----------------------------------------------------------------
    def fileno(self) -> int:
        return self.comp_event.fileno()

    def poll(self, woken: bool = False) -> None:
        """Consume completions, replace dead or stalled workers, publish backlogs.
        ``woken``: the caller saw :meth:`fileno` readable (so it is cleared).

        Busy polls cost no system call: the signal counts (a completion eventfd to clear, worker
        exits) and the ticker (heartbeat ages and restart delays, checked once a tick) are
        looked at after a :meth:`arm`, which the engine does at the end of each of its polls,
        or every ``LOOK_EVERY`` polls."""
        slots = self.slots
        if self._armed:                   # take back "not looking" before draining
            self._armed = False
            for slot in slots:
                slot.words[SUPERVISOR_IDLE] = 0
            look = True
        elif woken:
            look = True
        else:
            self._quiet_polls += 1
            look = self._quiet_polls >= LOOK_EVERY
        for slot in slots:
            self._drain(slot)
        if look:
            self._quiet_polls = 0
            self._supervise(woken)
        if self._backlogged:
            for slot in slots:
                if slot.backlog:
                    self._publish_backlog(slot)

    def _tick(self) -> None:
        """(The ticker's thread.)  Wake the caller's loop for a supervising look."""
        try:
            self.comp_event.set()
        except OSError:                   # closed: the pool is closing
            return
        self._tick_sets += 1

    def _supervise(self, woken: bool = False) -> None:
        exits = self._exits
        if self.edge:                     # nothing to clear: the next write is a new edge
            self.wakeups += woken
        else:
            self._clear_signals(woken)
        if exits.exited:
            for fd in exits.take():
                slot = self._sentinels.get(fd)
                if slot is not None and select.select([fd], [], [], 0)[0]:
                    self._replace(slot, "exited")
        self._respawn_due()
        tick = self._ticker.count
        if tick != self._seen_tick:
            self._seen_tick = tick
            for slot in self.slots:
                age = slot.hb.age()
                limit = self.heartbeat_sec if slot.hb.state == STATE_READY else self.startup_grace
                if slot.proc is not None and age > limit:
                    self._replace(slot, f"stalled (no heartbeat for {age:.1f}s)")

    def _clear_signals(self, woken: bool) -> None:
        """Read comp_event if a write is left in it.  Every write is counted after it is
        made: more counted than consumed means one to clear.  A write not counted yet is
        cleared when the caller saw the fd readable (``woken``), which a write always makes
        it; its count then adds nothing."""
        sets = self._retired_sets + self._own_sets + self._tick_sets + self._exits.count
        for slot in self.slots:
            words = slot.words
            sets += words[COMP_SETS] + words[COMP_SETS_BEAT]
        if woken or sets > self._consumed:
            n = self.comp_event.clear()
            self._consumed += n
            self.wakeups += n

    def arm(self) -> None:
        """Stop looking at the completion rings until the next :meth:`poll`: from now on a
        worker that completes a part makes :meth:`fileno` readable (once)."""
        slots = self.slots
        for slot in slots:
            slot.words[SUPERVISOR_IDLE] = 1
        fence()                           # the flag stores before the look at the rings
        self._armed = True
        if self.completions_waiting():    # already waiting: readable now
            for slot in slots:
                slot.words[SUPERVISOR_IDLE] = 0
            self.comp_event.set()
            self._own_sets += 1

    def signal(self) -> None:
        """Make :meth:`fileno` readable (the engine has something for its next poll)."""
        self.comp_event.set()
        self._own_sets += 1

    def completions_waiting(self) -> bool:
        """A completion is in some ring (no system call: for a short spin before sleeping)."""
        for slot in self.slots:
            comp = slot.comp
            if comp.head() != comp.tail():
                return True
        return False

    def pids(self) -> list[int]:
        """Worker pids (None for a position waiting out a crash-loop delay)."""
        return [s.proc.pid if s.proc is not None else None for s in self.slots]

    def stats(self) -> list[dict]:
        """Per worker: pid, cpu, parts done by the current process, restarts, heartbeat age."""
        return [{"index": s.index, "pid": s.proc.pid if s.proc is not None else None, "cpu": s.cpu,
                 "parts_done": s.hb.parts_done, "wakeups": s.wakeups,
                 "restarts": s.restarts, "heartbeat_age": s.hb.age(),
                 "outstanding": s.outstanding} for s in self.slots]

    def stop(self, timeout: float = 30.0) -> list[int | None]:
        """Ask every worker to flush and exit; returns their exit codes (killed after timeout)."""
        live = [s for s in self.slots if s.proc is not None]
        for slot in live:
            self._send(slot, ("stop",))
        deadline = time.monotonic() + timeout
        waiting = {s.proc.sentinel: s for s in live}
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select(list(waiting), [], [], min(left, 0.1))
            for fd in ready:
                del waiting[fd]
            for fd, slot in list(waiting.items()):
                if slot.hb.age() > self.heartbeat_sec:     # stopped or wedged: it will not exit
                    logger.error("worker {} stalled while stopping; killing it", slot.index)
                    self._kill(slot)
        for slot in waiting.values():
            logger.error("worker {} did not stop within {}s; killing it", slot.index, timeout)
        codes = [self._reap(slot) if slot.proc is not None else None for slot in self.slots]
        self.close()
        return codes

    def close(self) -> None:
        self._ticker.stop()
        self._exits.close()
        for slot in self.slots:
            if slot.proc is not None:
                self._reap(slot)
            slot.close()
        for dev in list(self.devices):
            self._forget(dev)
        self.comp_event.close()
