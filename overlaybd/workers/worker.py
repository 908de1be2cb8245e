"""The worker process: pinned to one CPU, executes parts from its submission ring.

Start-up (see :mod:`overlaybd.workers.pool`): the supervisor sends over the control channel an
``init`` message carrying the descriptors of the worker's shared region (heartbeat, submission
ring, completion ring) and of the two eventfds, then one ``add`` message per device (opener,
uio descriptor, mapping size).  Later messages: ``add``, ``remove``, ``stop``.

Main loop: take parts from the submission ring in order, execute each, post its completion,
until the ring is empty; look again for a short while (``SPIN``), then sleep in one blocking
read of the submission eventfd, which the supervisor sets for parts and after every control
message (a select over it and the channel, then a read to clear it, were two system calls per
sleep).  Sleeping is announced first (the ``worker_idle`` heartbeat word, then
a last look at the ring, :mod:`overlaybd.shm.wakeup`), so the supervisor writes the eventfd only
for a worker that sleeps.  Control messages are taken whenever the supervisor's ``ctl_sent``
count (heartbeat word) differs from the worker's -- it is checked before every part, so a part
published after an ``add``/``remove`` always sees it applied.  After every completion the
worker looks at the supervisor's ``supervisor_idle`` word and signals the completion eventfd if
it is set: the next part may be a slow one (a remote fetch), and the completions before it must
not wait for it; a supervisor busy polling is not signalled at all.  A thread beats the
heartbeat every ``heartbeat_sec / 4`` s: it stops when the process is stopped or killed, not
while a slow backend read (which the spec retries for a long time) is running.  The same thread
notices a dead supervisor and wakes the main loop, and re-checks both wake-up flags.
"""

from __future__ import annotations

import os
import select
import signal
import threading

import psutil
from loguru import logger

from .. import log
from ..abi.ops import FAILED, ST_GOOD, ST_READ_ERR
from ..process import WorkerContext, set_current
from ..shm.channel import Channel
from ..shm.descriptor import COMPLETION, COMPLETION_SIZE, PART_SIZE, unpack_part
from ..shm.fence import fence
from ..shm.heartbeat import (
    COMP_SETS,
    COMP_SETS_BEAT,
    CTL_SENT,
    PARTS_DONE,
    STATE_READY,
    STATE_STOPPING,
    SUPERVISOR_IDLE,
    WORKER_IDLE,
    Heartbeat,
)
from ..shm.region import SharedRegion
from ..shm.ring import Ring
from ..shm.spin import Spin
from ..shm.wakeup import Event
from .execute import DeviceExecutor, RetryPolicy

BATCH = 64
SPIN = 200          # looks at an empty ring (~10-20 us) before announcing sleep


class _Stop(Exception):
    pass


class Worker:
    def __init__(self, index: int, channel: Channel, settings: dict):
        self.index = index
        self.channel = channel
        self.settings = settings
        self.supervisor = settings["supervisor_pid"]
        self.parent = os.getppid()      # the supervisor, or the forkserver that started us
        self.devices: dict[int, DeviceExecutor] = {}
        self.retry = RetryPolicy(settings["read_retry_sec"])
        self.spin = Spin(SPIN) if settings.get("spin") else None
        while not select.select([channel], [], [], 1.0)[0]:
            if self._supervisor_gone():
                raise SystemExit(1)           # the supervisor died before sending anything
        init = channel.recv()
        self.ctl_seen = 1
        if init[0] != "init":
            raise RuntimeError(f"worker {index}: expected an init message, got {init[0]!r}")
        _, region_fd, hb_off, sub_off, comp_off, sub_fd, comp_fd = init
        self.region = SharedRegion.attach(region_fd)
        buf = self.region.buf
        self.hb = Heartbeat(buf, hb_off)
        self.sub = Ring(buf, sub_off, slot_size=PART_SIZE, name=f"worker {index} submission ring")
        self.comp = Ring(buf, comp_off, slot_size=COMPLETION_SIZE,
                         name=f"worker {index} completion ring")
        self.words = self.hb.words
        self.sub_event = Event(sub_fd, blocking=True)
        self.comp_event = Event(comp_fd)
        self._beating = threading.Event()
        self._orphaned = False

    def _supervisor_gone(self) -> bool:
        """The parent changed (we were orphaned) or the supervisor no longer exists (it may
        have died before this process read its parent)."""
        if os.getppid() != self.parent:
            return True
        try:
            os.kill(self.supervisor, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    # -- heartbeat -----------------------------------------------------------------------------
    def _beat_loop(self, interval: float) -> None:
        words, sub, comp = self.words, self.sub, self.comp
        while not self._beating.wait(interval):
            self.hb.beat()
            if not self._orphaned and self._supervisor_gone():
                self._orphaned = True
                self.sub_event.set()           # wake the main loop, which waits untimed
            # The barrier of shm.fence makes a lost wake-up impossible on x86-64; this catches
            # one anywhere else, within a beat.
            if words[WORKER_IDLE] and sub.head() != sub.tail():
                self.sub_event.set()
            if words[SUPERVISOR_IDLE] and comp.head() != comp.tail():
                self.comp_event.set()
                words[COMP_SETS_BEAT] += 1      # counted after the write (pool._supervise)

    # -- control -------------------------------------------------------------------------------
    def _control(self, block: bool = False) -> None:
        while True:
            try:
                msg = self.channel.recv(block=block)
            except EOFError:
                raise _Stop(1) from None
            if msg is None:
                return
            block = False
            self.ctl_seen += 1
            kind = msg[0]
            if kind == "add":
                _, dev, opener, fd, map_size, scratch = msg
                old = self.devices.pop(dev, None)
                if old is not None:
                    old.close()
                try:
                    d = DeviceExecutor(dev, opener, fd, map_size, self.retry, scratch_fd=scratch)
                except (OSError, ValueError) as e:
                    logger.error("worker {}: cannot map the data area of dev {}: {}", self.index, dev, e)
                    continue
                finally:
                    os.close(fd)
                    os.close(scratch)
                d.ensure_open()
                self.devices[dev] = d
            elif kind == "remove":
                d = self.devices.pop(msg[1], None)
                if d is not None:
                    d.flush()          # what this worker wrote is durable before the close
                    d.close()
            elif kind == "stop":
                raise _Stop(0)
            else:
                logger.error("worker {}: unknown control message {!r}", self.index, kind)

    def _device(self, dev: int) -> DeviceExecutor | None:
        d = self.devices.get(dev)
        if d is None:
            # An "add" is always sent before the first part of its device is published.
            self._control()
            d = self.devices.get(dev)
        return d

    # -- I/O -----------------------------------------------------------------------------------
    def _drain(self) -> int:
        """Execute up to BATCH parts from the ring, in order; the number executed."""
        sub, comp, words = self.sub, self.comp, self.words
        sbuf, cbuf = sub.buf, comp.buf
        tail = sub.tail()
        end = min(sub.head(), tail + BATCH)
        chead = comp.head()
        start = tail
        while tail < end:
            off = sub.slot_offset(tail)
            tail += 1
            sub.consume_to(tail)        # taken: the supervisor blames this part if we die now
            try:
                tag, dev, op, offset, length, iovs = unpack_part(sbuf, off)
            except Exception as e:  # noqa: BLE001 -- a corrupt slot must not kill the worker
                logger.error("worker {}: bad descriptor: {}", self.index, e)
                tag, op = int.from_bytes(sbuf[off:off + 8], "little"), -1
                d = None
            else:
                if words[CTL_SENT] != self.ctl_seen:
                    self._control()
                d = self.devices.get(dev)
                if d is None:
                    d = self._device(dev)
            if d is None:
                if op != -1:
                    logger.error("worker {}: part for unknown device {}", self.index, dev)
                status = FAILED.get(op, ST_READ_ERR)
            else:
                status = d.execute(op, offset, length, iovs)
            words[PARTS_DONE] += 1          # before the completion: counted once it is seen
            # The supervisor bounds parts in flight by the ring size: there is always room.
            COMPLETION.pack_into(cbuf, comp.slot_offset(chead), tag, status, 0)
            chead += 1
            comp.publish_to(chead)
            fence()                         # the head store before the look at the flag
            if words[SUPERVISOR_IDLE]:
                words[SUPERVISOR_IDLE] = 0
                self.comp_event.set()
                words[COMP_SETS] += 1           # counted after the write (pool._supervise)
        return tail - start

    def _sleep(self) -> None:
        """Sleep until the supervisor publishes a part or sends a message, unless one comes
        while we spin or while we announce the sleep.  The sleep is one blocking read of the
        submission eventfd, which the supervisor also sets after every control message."""
        sub, words = self.sub, self.words
        tail = sub.tail()
        if self.spin is not None and self.spin(lambda: sub.head() != tail):
            return
        words[WORKER_IDLE] = 1
        fence()                             # the flag store before the last look at the ring
        if sub.head() == tail and words[CTL_SENT] == self.ctl_seen and not self._orphaned:
            # no timeout: a timed wait reads the clock, a system call per wake-up where they
            # are dear (UML); the heartbeat thread wakes us if the supervisor dies
            self.sub_event.wait()
        words[WORKER_IDLE] = 0

    def run(self) -> int:
        hb_interval = max(self.settings["heartbeat_sec"] / 4, 0.01)
        self.hb.pid = os.getpid()
        self.hb.beat()
        beater = threading.Thread(target=self._beat_loop, args=(hb_interval,), daemon=True,
                                  name="heartbeat")
        beater.start()
        self.hb.state = STATE_READY
        try:
            while True:
                if self.words[CTL_SENT] != self.ctl_seen:
                    self._control()
                if self._drain():
                    continue
                if self._orphaned:
                    logger.error("worker {}: supervisor is gone, exiting", self.index)
                    return 1
                self._sleep()
        except _Stop as stop:
            code = stop.args[0]
        self.hb.state = STATE_STOPPING
        for d in self.devices.values():
            if d.flush() != ST_GOOD:
                code = 1
            d.close()
        self.devices.clear()
        self._beating.set()
        return code


def _reopen_logs(signum, frame) -> None:
    log.reopen(blocking=False)      # a signal handler: never wait for a write in progress


def worker_main(index: int, sock, cpu: int | None, settings: dict) -> None:
    """Process entry point (the ``target`` of the worker's Process).  The supervisor pins the
    process right after starting it; pinning here too covers the instants before that."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the supervisor's business
    signal.signal(signal.SIGHUP, _reopen_logs)     # passed on by the supervisor (logrotate)
    if cpu is not None:
        psutil.Process().cpu_affinity([cpu])
    set_current(WorkerContext(index, settings["workers"], settings["chunk_size"]))
    worker = Worker(index, Channel(sock), settings)
    raise SystemExit(worker.run())
