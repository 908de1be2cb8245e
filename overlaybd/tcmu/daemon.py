"""The overlaybd-tcmu supervisor: netlink, every device's uio ring, the engine, signals.

One epoll loop over the netlink socket, each device's uio fd, the engine's fd and a
signal pipe.  A real uio fd is watched edge-triggered and never read: every kernel notify is a
new edge, and skipping the read (plus the timeout's clock read) leaves three system calls per
lone command -- wait, pread, kick -- which matters where system calls are slow (UML: ~27 us).
The engine's fd (with workers, the completion eventfd) is watched the same way.
Non-I/O SCSI commands are answered here (:mod:`overlaybd.tcmu.scsi`); block I/O
goes to the engine (``overlaybd.workers.Engine``), whose completions come back through
``on_complete`` and are written into the ring in tail order; each ring is kicked once per loop
pass.  SIGTERM/SIGINT: stop taking commands, finish those in flight, flush, return 0.  SIGHUP:
reopen the log and audit files, and pass the signal on to every worker (which does the same).
"""

import errno
import os
import select
import signal
import time
from collections import deque

from loguru import logger

from .. import log, service
from ..abi import tcmu as T
from ..errors import OverlaybdError
from . import scsi, uio
from .fastread import FastReads, FastSubmit
from .netlink import TcmuNetlink
from .opening import Opens
from .ring import CommandRing
from .signals import SignalQueue
from .watch import FdWatch

SECTOR = 512
KICK = b"\0\0\0\0"


class Device:
    """A device the daemon serves: its uio handle, ring, SCSI personality and commands."""

    def __init__(self, key, info, handle, ring, disk):
        self.key = key               # the engine's device number: the uio minor
        self.info = info
        self.handle = handle
        self.ring = ring
        self.disk = disk
        self.pending = {}            # cmd_id -> (op in the engine, [(op, offset, length, iovs) next])
        self.copying = None          # cmd_id of the EXTENDED COPY using the scratch area
        self.copies = deque()        # EXTENDED COPYs waiting for it: (Command, Io)
        self.fast = None             # the fused READ path: FastReads inline, else FastSubmit

    @property
    def name(self):
        return self.info.dev_name


class Daemon:
    """Serves every overlaybd TCMU device; ``run()`` returns the exit status."""

    def __init__(self, engine, validate, opener, use_netlink=True, sys_uio=uio.SYS_UIO,
                 configfs=uio.CONFIGFS_CORE, module_params=T.MODULE_PARAMS, prefetch=None,
                 refused=None):
        self.engine = engine
        self.prefetch = prefetch        # overlaybd.prefetch.PrefetchService, or None
        self._gate = prefetch.gate if prefetch is not None else None
        self.engine.on_complete = self._on_complete
        self.validate = validate        # config path -> backend (writes the resultFile)
        self.opener = opener            # config path -> picklable opener for the engine
        # (config path, reason): a device refused before its image was opened (the
        # composition root writes "failed:<reason>" to its resultFile)
        self.refused = refused or (lambda config_path, reason: None)
        self.use_netlink = use_netlink
        self.sys_uio = sys_uio
        self.configfs = configfs
        self.module_params = module_params
        self.netlink = None
        self.devices = {}               # key -> Device
        self.by_fd = {}                 # event fd -> Device
        self.stopping = False
        self.started = False
        self.opens = Opens()            # images being opened in threads
        self._signals = SignalQueue()
        self._watch = FdWatch()
        self._engine_fd = -1                # the engine's fileno(), set by _wait
        self._watch.add(self.opens.fileno())

    # ---- start-up ----
    def _module_param(self, name, value):
        path = os.path.join(self.module_params, name)
        if not os.path.exists(path):
            return
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as e:
            logger.warning("cannot write {}: {}", path, e.strerror)

    def start(self):
        """Open netlink (holding new netlink commands back meanwhile), start the engine and
        attach to every overlaybd device already present."""
        if self.started:
            return
        self.started = True
        self.engine.start()
        if self.use_netlink:
            self._module_param("block_netlink", 1)
            self._module_param("reset_netlink", 1)
            try:
                self.netlink = TcmuNetlink()
                self.netlink.set_features()
                self._watch.add(self.netlink.fileno())
            finally:
                self._module_param("block_netlink", 0)
        for info in uio.list_devices(self.sys_uio):
            if info.subtype == uio.SUBTYPE:
                self.attach_existing(info)

    def attach_existing(self, info):
        """Re-attach to a live device: block it, reset its ring, open, serve, unblock."""
        uio.set_action(info, "block_dev", 1, self.configfs)
        uio.set_action(info, "reset_ring", 1, self.configfs)
        try:
            st = self._open_uio(info)
        finally:
            uio.set_action(info, "block_dev", 0, self.configfs)
        if st:
            logger.error("cannot re-attach to {} ({})", info.name, os.strerror(-st))
        return st

    def _uio_handle(self, info):
        try:
            return uio.UioHandle(info.dev_path, uio.map_size(info.minor, self.sys_uio))
        except OverlaybdError as e:
            logger.error("{}: {}", info.name, e)
            return None

    def _open_uio(self, info):
        handle = self._uio_handle(info)
        if handle is None:
            return -errno.EIO
        st = self.add_device(info, handle)
        if st:
            handle.close()
        return st

    # ---- devices ----
    def _precheck(self, info):
        """Refusals that need no I/O: 0 or -errno."""
        if info.subtype != uio.SUBTYPE:
            logger.error("device {}: handler subtype '{}' is not '{}'", info.name, info.subtype,
                         uio.SUBTYPE)
            return -errno.ENOENT
        if info.minor in self.devices or info.minor in self.opens.opening:
            logger.error("device {}: uio{} is already served", info.name, info.minor)
            return -errno.EEXIST
        if info.dev_id:
            others = [d.info for d in self.devices.values()] + list(self.opens.opening.values())
            for o in others:
                if o.dev_id == info.dev_id:
                    reason = f"duplicated dev_id {info.dev_id} (already used by {o.dev_name})"
                    logger.error("device {}: {}", info.name, reason)
                    if o.config_path != info.config_path:
                        self.refused(info.config_path, reason)
                    return -errno.ENOENT
        return 0

    def add_device(self, info, handle):
        """Serve ``info`` through ``handle`` (an open uio or a fake); 0 or -errno.  The image
        is opened in the calling thread."""
        st = self._precheck(info)
        if st:
            return st
        try:
            backend = self.validate(info.config_path)
        except OverlaybdError as e:
            return self._finish_add(info, handle, None, e)
        return self._finish_add(info, handle, backend, None)

    def _open_async(self, info, handle, reply):
        """Open the image of ``info`` in a thread; ``reply(status)`` runs in the loop after."""
        st = self._precheck(info)
        if st:
            reply(st)
            return
        self.opens.start(self.validate, info, handle, reply)

    def _collect_opened(self):
        for info, handle, reply, fut in self.opens.take():
            err = fut.exception()
            if self.stopping:
                if err is None:
                    fut.result().close()
                st = -errno.ESHUTDOWN
            else:
                st = self._finish_add(info, handle, None if err else fut.result(), err)
            if st:
                handle.close()
            reply(st)

    def _finish_add(self, info, handle, backend, error):
        """Second half of adding a device, in the loop's thread: 0 or -errno."""
        if error is not None:
            logger.error("device {}: config {}: {}", info.name, info.config_path, error)
            return -errno.ENOENT
        try:
            size, read_only = backend.size, bool(getattr(backend, "read_only", True))
        finally:
            backend.close()
        try:
            ring = CommandRing(handle.mm, info.dev_path)
        except OverlaybdError as e:
            logger.error("device {}: {}", info.name, e)
            return -errno.ENOENT
        disk = scsi.ScsiDisk(size // SECTOR, SECTOR, read_only,
                             serial=uio.unit_serial(info, self.configfs), cfgstring=info.cfgstring)
        opener = self.opener(info.config_path)
        if self.prefetch is not None:   # before the engine opens: a recording rides the opener
            self.prefetch.open(info.minor, info.config_path, opener)
        try:
            self.engine.add_device(info.minor, opener, handle.map_fd, handle.size)
        except Exception as e:  # noqa: BLE001 -- an engine refusal fails this device only
            logger.error("device {}: engine: {}", info.name, e)
            if self.prefetch is not None:
                self.prefetch.close(info.minor)
            return -errno.ENOENT
        dev = Device(info.minor, info, handle, ring, disk)
        inline = self.engine.inline_device(dev.key)
        if inline is not None:
            dev.fast = FastReads(ring, disk, inline)
        else:
            dev.fast = FastSubmit(ring, disk, self.engine, dev.key)
        self.devices[dev.key] = dev
        self.by_fd[handle.event_fd] = dev
        self._watch.add(handle.event_fd, select.EPOLLIN | (select.EPOLLET if handle.edge else 0))
        logger.info("device added: {}", log.kv(device=info.dev_name, uio=info.minor, size=size,
                    mode="read-only" if read_only else "writable", config=info.config_path))
        if self.prefetch is not None:
            self.prefetch.start(dev.key)
        # the kernel only wakes us for kicks raised after open(): drain what is queued now
        self._service(dev)
        self.engine.poll()
        self._kick_all()
        return 0

    def remove_device(self, key):
        dev = self.devices.get(key)
        if dev is None:
            return 0
        try:
            self.engine.remove_device(key)
        except Exception as e:  # noqa: BLE001
            logger.error("device {}: removing from the engine: {}", dev.name, e)
        self._kick_all()
        if self.prefetch is not None:   # after the engine closed the image: the trace is whole
            self.prefetch.close(key)
        self.devices.pop(key, None)
        self.by_fd.pop(dev.handle.event_fd, None)
        self._watch.forget(dev.handle.event_fd)
        dev.handle.close()
        logger.info("device removed: {}", log.kv(device=dev.name, uio=key))
        return 0

    # ---- commands ----
    def _service(self, dev):
        """Parse and dispatch every command queued in ``dev``'s ring."""
        try:
            # READ(10/16) fused when inline, the rest (and all with workers) through _dispatch
            dev.ring.walk(dev.fast, lambda cmd: self._dispatch(dev, cmd))
        except OverlaybdError as e:
            logger.error("device {}: corrupt ring: {}", dev.name, e)

    def _dispatch(self, dev, cmd):
        ring = dev.ring
        r = dev.disk.execute(cmd.cdb, cmd.data_len, lambda limit: ring.gather(cmd.iovs, limit))
        if isinstance(r, scsi.Reply):
            read_len = None
            if r.data:      # a reply shorter than its buffers says so: nothing stale is sent
                read_len = ring.scatter(cmd.iovs, r.data, clear=True)
            ring.complete(cmd.cmd_id, r.status, r.sense, read_len)
        elif r.steps is not None and (dev.copying is not None or dev.copies):
            dev.copies.append((cmd, r))     # one EXTENDED COPY at a time: they share the scratch
        else:
            self._submit(dev, cmd, r)

    def _submit(self, dev, cmd, io):
        """Start ``io``'s first range in the engine; its further ranges (UNMAP descriptors)
        and its follow-up (the flush of a FUA write) run from :meth:`_on_complete`."""
        off, length = io.ranges[0]
        iovs = []
        left = io.data_len
        for base, n in cmd.iovs:
            if not left:
                break
            n = min(n, left)
            if n:
                iovs.append((base, n))
            left -= n
        if left:
            logger.error("device {}: command {} has {} bytes of buffers for {}", dev.name,
                         cmd.cmd_id, io.data_len - left, io.data_len)
            dev.ring.complete(cmd.cmd_id, scsi.HW_ERROR.status, scsi.HW_ERROR.sense)
            return
        if io.steps is not None:
            steps = io.steps[1:]
            dev.copying = cmd.cmd_id
            iovs = io.steps[0][3]
        else:
            steps = [(io.op, o, n, ()) for o, n in io.ranges[1:]]
            if io.then is not None:
                steps.append((io.then, 0, 0, ()))
        dev.pending[cmd.cmd_id] = (io.op, steps)
        try:
            self.engine.submit(dev.key, cmd.cmd_id, io.op, off, length, iovs)
        except OverlaybdError as e:
            logger.error("device {}: command {}: {}", dev.name, cmd.cmd_id, e)
            self._finish(dev, cmd.cmd_id, scsi.HW_ERROR)

    def _on_complete(self, key, cmd_id, status):
        dev = self.devices.get(key)
        if dev is None:
            return
        op, steps = dev.pending.get(cmd_id, (None, []))
        if status == scsi.ST_GOOD and steps:   # the next UNMAP range, FUA's flush, copy chunk
            nop, off, length, iovs = steps[0]
            dev.pending[cmd_id] = (nop, steps[1:])
            try:
                self.engine.submit(key, cmd_id, nop, off, length, iovs)
                return
            except OverlaybdError as e:
                logger.error("device {}: command {}: {}", dev.name, cmd_id, e)
                status = scsi.ST_WRITE_ERR
        self._finish(dev, cmd_id, scsi.status_reply(status))

    def _finish(self, dev, cmd_id, r):
        """Complete ``cmd_id`` with ``r``; an EXTENDED COPY's end starts the next one queued."""
        dev.pending.pop(cmd_id, None)
        dev.ring.complete(cmd_id, r.status, r.sense)
        if dev.copying == cmd_id:
            dev.copying = None
            if dev.copies:
                self._submit(dev, *dev.copies.popleft())

    def _kick_all(self):
        for dev in self.devices.values():   # (the loop body never adds or removes one)
            if dev.ring.take_kick():
                try:
                    os.write(dev.handle.event_fd, KICK)
                except BlockingIOError:
                    pass                # a kick is already pending
                except OSError as e:
                    logger.error("device {}: kick failed: {}", dev.name, e.strerror)

    def in_flight(self):
        return sum(d.ring.inflight for d in self.devices.values())

    # ---- netlink ----
    def _netlink_events(self):
        for ev in self.netlink.receive():
            info = uio.parse_uio_name(ev.device, ev.minor)
            if ev.cmd == T.CMD_ADDED_DEVICE:
                st = -errno.ENOENT
                if info is None:
                    logger.error("added device with a malformed name '{}'", ev.device)
                elif self.stopping:
                    st = -errno.ESHUTDOWN
                else:
                    handle = self._uio_handle(info)
                    if handle is not None:
                        self._open_async(info, handle, lambda st, ev=ev: self.netlink.reply(
                            ev.cmd, st, ev.dev_index))
                        continue
                self.netlink.reply(ev.cmd, st, ev.dev_index)
            elif ev.cmd == T.CMD_REMOVED_DEVICE:
                st = self.remove_device(ev.minor) if ev.minor in self.devices else 0
                self.netlink.reply(ev.cmd, st, ev.dev_index)
            elif ev.cmd == T.CMD_RECONFIG_DEVICE:
                logger.warning("device {}: reconfiguration is not supported", ev.device)
                self.netlink.reply(ev.cmd, -errno.EOPNOTSUPP, ev.dev_index)

    # ---- signals and the loop ----
    def _handle_signals(self):
        for s in self._signals.take():
            if s == signal.SIGHUP:
                log.reopen()
                pids = [p for p in self.engine.worker_pids() if p is not None]
                logger.info("SIGHUP: log and audit files reopened; passed on to {} worker(s)",
                            len(pids))
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGHUP)
                    except ProcessLookupError:
                        pass                # died just now: its replacement opens the files anew
            else:
                logger.info("{}: stopping", signal.Signals(s).name)
                service.notify("STOPPING=1")
                self.stopping = True

    def _wait(self, timeout):
        watch, engine = self._watch, self.engine
        fd = engine.fileno()                       # readable on completions since our last poll
        if fd != self._engine_fd:
            # edge-triggered, like the uio fds: the engine never reads it to clear it
            engine.watch_edge()
            watch.add(fd, select.EPOLLIN | select.EPOLLET)
            self._engine_fd = fd
        if timeout == 0 or not engine.may_spin():
            return watch.poll(timeout)             # no spin: one system call per sleep
        events = watch.poll(0)                     # something is ready already: no spin
        if events:
            return events
        # About to sleep: look at the rings a little first, then sleep
        return watch.poll(0 if engine.look(self._queued) else timeout)

    def _queued(self):
        return any(d.ring.pending() for d in self.devices.values())

    def run_once(self, timeout=1.0):
        """One pass of the loop: wait for any fd (``timeout`` None: no limit), then serve it.
        While prefetch replays, its gate is shut from the first device event of a pass until
        no command is left in flight: device I/O goes first."""
        gate = self._gate
        if gate is not None and not self.prefetch.replaying:
            gate = None
        woken = False                           # the engine's fd was readable
        for fd, events in self._wait(timeout):
            dev = self.by_fd.get(fd)            # most passes: a device, nothing else
            if dev is None:
                if fd == self._engine_fd:
                    woken = True
                elif fd == self._signals.fd:
                    self._handle_signals()
                elif fd == self.opens.fileno():
                    self._collect_opened()
                elif self.netlink is not None and fd == self.netlink.fileno():
                    self._netlink_events()
            else:
                if not dev.handle.edge or events & (select.EPOLLERR | select.EPOLLHUP):
                    try:
                        os.read(fd, 4)
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        logger.warning("device {}: uio read: {}; dropping it", dev.name,
                                       e.strerror)
                        self.remove_device(dev.key)
                        continue
                if not self.stopping:
                    if gate is not None:
                        gate.busy()
                    self._service(dev)
        self.engine.poll(woken)
        self._kick_all()
        if self._gate is not None and self._gate.shut and not self.in_flight():
            self._gate.idle()

    def run(self):
        """Serve until SIGTERM/SIGINT; returns 0 after a clean shutdown."""
        self._watch.add(self._signals.install())
        try:
            self.start()
            logger.info("overlaybd-tcmu serving {} device(s)", len(self.devices))
            service.notify(f"READY=1\nSTATUS=serving {len(self.devices)} device(s)")
            # nothing is timed: sleep until an fd wakes us (with workers, the pool's ticker
            # makes its fd readable once a quarter heartbeat, to supervise them)
            while not self.stopping:
                self.run_once(None)
            return self.shutdown()
        finally:
            self._watch.forget(self._signals.fd)
            self._signals.restore()

    def shutdown(self, timeout=60.0):
        """Finish the commands in flight, flush and stop the engine, close every device."""
        self.stopping = True
        self.opens.shutdown()
        self._collect_opened()          # opens still running are refused (-ESHUTDOWN)
        deadline = time.monotonic() + timeout
        while self.in_flight() and time.monotonic() < deadline:
            self.engine.wait(0.1)
            self._kick_all()
        rc = 0
        if self.in_flight():
            logger.error("{} command(s) still in flight at shutdown", self.in_flight())
            rc = 1
        codes = self.engine.stop(drain=True)
        if any(c not in (0, None) for c in codes or []):
            rc = 1
        if self.prefetch is not None:   # recordings end with the devices: write their traces
            self.prefetch.close_all()
        self._kick_all()
        for dev in list(self.devices.values()):
            dev.handle.close()
        self.devices.clear()
        self.by_fd.clear()
        if self.netlink is not None:
            self._watch.forget(self.netlink.fileno())
            self.netlink.close()
            self.netlink = None
        self.opens.close()
        self._watch.close()
        logger.info("overlaybd-tcmu stopped")
        return rc
