"""The engine: the supervisor's entry point for I/O (the contract is docs/engine.md).

``Engine(workers=0)`` executes every command inline, in :meth:`Engine.submit`; with ``workers=N``
commands are split at chunk boundaries and the parts run in N pinned worker processes
(:mod:`overlaybd.workers.pool`).  Either way ``on_complete(dev, cmd_id, status)`` is called only
from :meth:`Engine.poll`, once per command, after all its parts are done; the status is the
first failure among the parts, or ``ST_GOOD``.

With workers, :meth:`Engine.submit` publishes a command's parts at once; :meth:`Engine.poll`
consumes completions without a system call while workers keep it busy, wakes the workers that
sleep with parts published (one wake-up each for the whole batch; a worker busy with earlier
parts is not signalled at all), and ends by telling the workers it stopped looking, so that
:meth:`Engine.fileno` becomes readable at the next completion.  So a caller submits, then
polls (or waits) before it sleeps on ``fileno()``, as the daemon does after every pass; inline
commands complete in ``submit`` and the next ``poll`` delivers them.

A command that is one part (most: chunks are 1 MiB) carries ``dev`` and ``cmd_id`` in its
part's tag, so its completion needs no table lookup; only commands split over several parts
keep an entry that gathers their statuses.
"""

from __future__ import annotations

import itertools
import os
import pickle
import select
import time
from collections import deque
from collections.abc import Callable

from ..abi.ops import (
    OP_COMPARE_WRITE,
    OP_DISCARD,
    OP_FLUSH,
    OP_WRITE,
    OP_WRITE_SAME,
    OPS,
    SCRATCH_OPS,
    SCRATCH_SIZE,
    ST_GOOD,
    ST_MISCOMPARE,
    miscompare,
    status_kind,
)
from ..cpus import default_workers
from ..errors import OverlaybdError
from ..process import WorkerContext, set_current
from ..shm.descriptor import MAX_IOVS
from ..shm.spin import Spin
from ..shm.wakeup import Event
from .execute import DeviceExecutor, RetryPolicy
from .pool import WorkerPool
from .split import route, split_iovs, split_range

SECTOR = 512
ONE_PART = 1 << 63          # tag bit: the part is the whole command, dev and cmd_id follow
SPIN_POLLS = 300            # looks at the rings (some tens of us) before a sleep (spin())


class CommandError(OverlaybdError):
    """A command the engine cannot accept (unknown device, misaligned, iovecs off the map)."""


class Engine:
    def __init__(self, workers: int | None = None, chunk_size: int = 1 << 20,
                 on_complete: Callable[[int, int, int], None] | None = None,
                 heartbeat_sec: float = 5.0, ring_slots: int = 1024,
                 read_retry_sec: float = 7 * 86400, start_method: str = "fork", cpus=None):
        if chunk_size <= 0 or chunk_size % SECTOR:
            raise ValueError(f"chunk_size must be a positive multiple of {SECTOR}, got {chunk_size}")
        self.workers = default_workers() if workers is None else workers
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        self.chunk_size = chunk_size
        self.on_complete = on_complete or (lambda dev, cmd_id, status: None)
        self.heartbeat_sec = heartbeat_sec
        self.retry = RetryPolicy(read_retry_sec)
        self._settings = {"workers": self.workers, "chunk_size": chunk_size,
                          "heartbeat_sec": heartbeat_sec, "read_retry_sec": read_retry_sec}
        self._pool_kw = {"heartbeat_sec": heartbeat_sec, "ring_slots": ring_slots,
                         "start_method": start_method, "cpus": cpus}
        self.pool: WorkerPool | None = None
        self._idle_fd = Event()               # inline fileno(): never readable (commands
                                              #   complete in submit, poll delivers them)
        self._done: deque = deque()           # (dev, cmd_id, status) to deliver from poll()
        self._live: dict[int, set] = {}       # dev -> ids of its commands not yet delivered
        self._count = 0                       # commands not yet delivered
        self._cmds: dict[tuple, list] = {}    # (dev, cmd_id) of a split command -> [parts left,
                                              #   status, offset]
        self._parts: dict[int, tuple] = {}    # tag of a split command's part -> ((dev, cmd_id),
                                              #   the part's offset)
        self._map_sizes: dict[int, int] = {}
        self._inline: dict[int, DeviceExecutor] = {}
        self._tags = itertools.count(1)
        self._routes: dict[tuple, int] = {}   # (dev, chunk) -> worker, a cache of route()
        self._started = False
        self._spin: Spin | None = None        # set by start() where spinning can pay
        self._edge = False                    # watch_edge(): fileno() is watched with EPOLLET
        self._edge_ep = None                  # wait()'s epoll in that mode

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            raise RuntimeError("engine already started")
        self._started = True
        if self.workers == 0:
            set_current(WorkerContext(0, 0, self.chunk_size))
            if len(os.sched_getaffinity(0)) > 1:
                self._spin = Spin(SPIN_POLLS)
            return
        self.pool = WorkerPool(self.workers, self._settings, self._part_done, **self._pool_kw)
        self.pool.edge = self._edge
        self.pool.start()
        if self.pool.spin:
            self._spin = Spin(SPIN_POLLS)

    def stop(self, drain: bool = True, timeout: float | None = 60.0) -> list[int | None]:
        """Finish what is in flight (if ``drain``; for up to ``timeout`` seconds), flush
        writable backends, stop the workers.

        Returns the workers' exit codes (0: stopped cleanly, flush succeeded).  Commands still
        in flight after that (or all of them, without ``drain``) are abandoned, never completed.
        """
        if drain:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._count:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self.wait(min(left, 0.1) if left is not None else 0.1)
        codes: list[int | None] = []
        if self.pool is not None:
            codes = self.pool.stop(timeout if timeout is not None else 30.0)
            self.pool = None
        for d in self._inline.values():
            d.flush()
            d.close()
        self._inline.clear()
        if self._edge_ep is not None:
            self._edge_ep.close()
            self._edge_ep = None
        self._idle_fd.close()
        set_current(None)
        return codes

    # -- devices -------------------------------------------------------------------------------
    def add_device(self, dev: int, opener, uio_fd: int, map_size: int) -> None:
        if not self._started:
            raise RuntimeError("add_device before start")
        if dev in self._map_sizes:
            raise CommandError("device already added", path=f"dev {dev}", field="dev")
        scratch = os.memfd_create(f"overlaybd-scratch-{dev}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(scratch, SCRATCH_SIZE)      # pages only exist once EXTENDED COPY runs
            if self.pool is None:
                backend = opener()        # errors reach the caller, as the contract wants
                try:
                    self._inline[dev] = DeviceExecutor(dev, opener, uio_fd, map_size, self.retry, backend,
                                               scratch)
                except BaseException:
                    backend.close()
                    raise
            else:
                try:
                    self.pool.add_device(dev, opener, uio_fd, map_size, scratch)
                except (pickle.PicklingError, TypeError, AttributeError) as e:
                    raise CommandError(f"the opener cannot be sent to the workers: {e}",
                                       path=f"dev {dev}", field="opener") from e
        finally:
            os.close(scratch)
        self._map_sizes[dev] = map_size
        self._live[dev] = set()

    def remove_device(self, dev: int, timeout: float = 30.0) -> None:
        """Wait for the device's commands (up to ``timeout``), then close its backends."""
        deadline = time.monotonic() + timeout
        while self._live.get(dev):
            if time.monotonic() > deadline:
                raise CommandError("commands still in flight", path=f"dev {dev}", field="dev")
            self.wait(0.05)
        self._map_sizes.pop(dev, None)
        self._live.pop(dev, None)
        if self.pool is not None:
            self.pool.remove_device(dev)
        d = self._inline.pop(dev, None)
        if d is not None:
            d.flush()
            d.close()

    def inline_device(self, dev: int) -> DeviceExecutor | None:
        """The inline engine's device ``dev`` (its ``view`` of the data area and ``backend``),
        for a caller that runs simple reads itself (overlaybd.tcmu.fastread); None with
        workers."""
        return self._inline.get(dev) if self.pool is None else None

    # -- commands ------------------------------------------------------------------------------
    def _check(self, dev, cmd_id, op, offset, length, iovs):
        def bad(message, field):
            return CommandError(message, path=f"dev {dev} cmd {cmd_id}", field=field)
        map_size = self._map_sizes.get(dev)
        if map_size is None:
            raise bad("unknown device", "dev")
        if op not in OPS:
            raise bad(f"unknown op {op}", "op")
        if cmd_id in self._live[dev]:
            raise bad("command id already in flight", "cmd_id")
        if op == OP_FLUSH:
            return
        if offset < 0 or offset % SECTOR:
            raise bad(f"offset {offset} is not a multiple of {SECTOR}", "offset")
        if length < 0 or length % SECTOR:
            raise bad(f"length {length} is not a multiple of {SECTOR}", "length")
        if op == OP_DISCARD:
            return
        total = 0
        if op in SCRATCH_OPS:
            map_size = SCRATCH_SIZE
        for moff, n in iovs:
            if moff < 0 or n < 0 or moff + n > map_size:
                raise bad(f"iovec ({moff}, {n}) outside the {map_size}-byte data area", "iovs")
            total += n
        want = 2 * length if op == OP_COMPARE_WRITE else length
        if op == OP_WRITE_SAME:
            if not total or length % total or total % SECTOR:
                raise bad(f"a {total}-byte block does not tile {length} bytes", "iovs")
        elif total != want:
            raise bad(f"iovecs hold {total} bytes, the command needs {want}", "iovs")
        if op in (OP_WRITE_SAME, OP_COMPARE_WRITE):
            if len(iovs) > MAX_IOVS:
                raise bad(f"{len(iovs)} iovecs, at most {MAX_IOVS}", "iovs")
            if op == OP_COMPARE_WRITE and length and \
                    offset // self.chunk_size != (offset + length - 1) // self.chunk_size:
                raise bad(f"compare and write {offset}+{length} spans chunks", "length")

    def _route(self, dev: int, chunk: int) -> int:
        key = (dev, chunk)
        worker = self._routes.get(key)
        if worker is None:
            if len(self._routes) >= 1 << 16:
                self._routes.clear()
            worker = self._routes[key] = route(dev, chunk, self.workers)
        return worker

    def submit(self, dev: int, cmd_id: int, op: int, offset: int, length: int, iovs) -> None:
        """Start a command; its completion is reported by a later :meth:`poll`."""
        pool = self.pool
        if pool is not None and op <= OP_WRITE and len(iovs) == 1:
            # The common command, checked and sent without the general machinery: a READ or
            # WRITE of one buffer inside one chunk (what _check and the split would conclude).
            (moff, n), = iovs
            cs = self.chunk_size
            live = self._live.get(dev)
            if (live is not None and n == length > 0 and offset >= 0 and not (offset | n) & 511
                    and moff >= 0 and moff + n <= self._map_sizes[dev] and op >= 1
                    and 0 <= cmd_id < 1 << 32 and 0 <= dev < 1 << 31 and cmd_id not in live):
                chunk = offset // cs
                worker = self._routes.get((dev, chunk))
                if worker is None:
                    worker = self._route(dev, chunk)
                last = (offset + n - 1) // cs
                # one part, as split_iovs would have it: one chunk, or two of one worker (at
                # 1 MiB, half of the unaligned reads); longer buffers take the general path
                if last == chunk or last == chunk + 1 and self._route(dev, last) == worker:
                    live.add(cmd_id)
                    self._count += 1
                    pool.submit(worker, ONE_PART | dev << 32 | cmd_id, dev, op, offset, n, iovs)
                    return
        self._check(dev, cmd_id, op, offset, length, iovs)
        if pool is None:
            d = self._inline[dev]
            self._live[dev].add(cmd_id)
            self._count += 1
            self._done.append((dev, cmd_id, d.execute(op, offset, length, iovs)))
            return
        cs = self.chunk_size
        if op == OP_FLUSH:
            pieces = [(i, 0, 0, ()) for i in range(self.workers)]
        elif op == OP_COMPARE_WRITE:      # one chunk (checked): one process, atomic there
            pieces = [(self._route(dev, offset // cs), offset, length, tuple(iovs))]
        else:
            if op == OP_DISCARD:
                split = split_range(offset, length, cs)
            elif op == OP_WRITE_SAME:     # every piece repeats the same block
                split = [(off, n, tuple(iovs)) for off, n, _ in split_range(offset, length, cs)]
            else:
                split = split_iovs(offset, iovs, cs, MAX_IOVS, lambda c: self._route(dev, c))
            pieces = [(self._route(dev, off // cs), off, n, v) for off, n, v in split]
        self._live[dev].add(cmd_id)
        self._count += 1
        if not pieces:
            self._done.append((dev, cmd_id, ST_GOOD))
            pool.signal()             # fileno() readable: poll has it to deliver
            return
        if len(pieces) == 1 and 0 <= cmd_id < 1 << 32 and 0 <= dev < 1 << 31:
            worker, off, n, v = pieces[0]     # its status needs no offset fix: off == offset
            pool.submit(worker, ONE_PART | dev << 32 | cmd_id, dev, op, off, n, v)
            return
        key = (dev, cmd_id)
        self._cmds[key] = [len(pieces), ST_GOOD, offset]
        for worker, off, n, v in pieces:
            tag = next(self._tags)
            self._parts[tag] = (key, off)
            pool.submit(worker, tag, dev, op, off, n, v)

    def _part_done(self, tag: int, status: int) -> None:
        if tag & ONE_PART:            # the whole command: no table to look at
            self._deliver((tag >> 32) & 0x7FFFFFFF, tag & 0xFFFFFFFF, status)
            return
        key, part_offset = self._parts.pop(tag)
        entry = self._cmds[key]
        if status != ST_GOOD:
            if status_kind(status) == ST_MISCOMPARE:   # offset from the part to the command
                status = miscompare(part_offset - entry[2] + (status >> 8))
            old = entry[1]            # the first error stands; of miscompares, the earliest
            if old == ST_GOOD or status_kind(old) == status_kind(status) == ST_MISCOMPARE and status < old:
                entry[1] = status
        entry[0] -= 1
        if entry[0] == 0:
            del self._cmds[key]
            self._deliver(key[0], key[1], entry[1])

    def _deliver(self, dev: int, cmd_id: int, status: int) -> None:
        live = self._live.get(dev)
        if live is not None:
            live.discard(cmd_id)
        self._count -= 1
        self.on_complete(dev, cmd_id, status)

    def poll(self, woken: bool = False) -> None:
        """Deliver finished commands to ``on_complete``; supervise the workers.  ``woken``:
        the caller saw :meth:`fileno` readable (this poll clears it; without it, a look may
        leave it readable an instant longer, and the caller's next wait returns at once)."""
        pool = self.pool
        if pool is not None:
            pool.poll(woken)          # delivers what the workers completed
        done = self._done
        while done:
            self._deliver(*done.popleft())
        if pool is not None:
            pool.wake()               # workers asleep with parts published: one wake-up each
            pool.arm()                # until the next poll, a completion makes fileno() readable

    def fileno(self) -> int:
        """Readable when :meth:`poll` has work that arrived since the last poll (completions,
        a worker to replace).  Level-triggered by default: :meth:`poll` reads it to clear
        it; see :meth:`watch_edge`."""
        return self._idle_fd.fileno() if self.pool is None else self.pool.fileno()

    def watch_edge(self) -> None:
        """The caller watches :meth:`fileno` edge-triggered (epoll ``EPOLLET``; an eventfd
        makes every write a new edge): from now on :meth:`poll` never reads it, which saves
        a system call per wake-up.  A level-triggered watcher (``select``) would then find
        it readable for ever.  :meth:`wait` follows the mode."""
        self._edge = True
        if self.pool is not None:
            self.pool.edge = True

    def may_spin(self) -> bool:
        """Whether to spin before this sleep: only where it can pay -- this process has a CPU
        its workers do not use (or, inline, a second CPU where the kernel can queue the next
        command meanwhile) -- and while recent spins found something
        (:class:`overlaybd.shm.spin.Spin`, whose count of declined sleeps this advances).
        False: sleep at once, without even a look for what is ready."""
        return self._spin is not None and self._spin.due()

    def look(self, also=None) -> bool:
        """Look at the workers' completion rings (and ``also()``, e.g. the kernel's command
        rings) for some microseconds, without a system call; True as soon as something is
        there.  After :meth:`may_spin` said yes."""
        pool = self.pool
        waiting = pool.completions_waiting if pool is not None else None
        if also is None:
            return self._spin.look(waiting)
        if waiting is None:
            return self._spin.look(also)
        return self._spin.look(lambda: waiting() or also())

    def spin(self, also=None) -> bool:
        """Before sleeping: :meth:`may_spin`, then :meth:`look`."""
        return self.may_spin() and self.look(also)

    def wait(self, timeout: float | None = None) -> None:
        """Poll; if that delivered nothing, spin (:meth:`spin`), then sleep until
        :meth:`fileno` is readable (or ``timeout``), and poll."""
        count = self._count
        self.poll()
        if self._count != count:      # (poll leaves nothing in _done)
            return
        woken = False
        if not (count and self.spin()):
            if self._edge:
                if self._edge_ep is None:
                    self._edge_ep = select.epoll()
                    self._edge_ep.register(self.fileno(), select.EPOLLIN | select.EPOLLET)
                woken = bool(self._edge_ep.poll(-1 if timeout is None else timeout))
            else:
                woken = bool(select.select([self.fileno()], [], [], timeout)[0])
        self.poll(woken)

    @property
    def in_flight(self) -> int:
        """Commands submitted and not yet delivered."""
        return self._count

    def worker_pids(self) -> list[int | None]:
        """Pid per worker position (None while a crash-looping position waits to restart)."""
        return self.pool.pids() if self.pool is not None else []

    def stats(self) -> list[dict]:
        """Per worker: ``index, pid, cpu, parts_done, restarts, heartbeat_age, outstanding``."""
        return self.pool.stats() if self.pool is not None else []

    @property
    def restarts(self) -> int:
        return self.pool.restarts if self.pool is not None else 0
