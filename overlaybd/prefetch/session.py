"""Prefetch per device, in the daemon (the supervisor): which mode, and its life cycle.

``PrefetchService(svc)`` is what the daemon holds.  For each device it calls
``open(key, config_path, opener)`` before the engine opens the image (so a recording reaches
every engine process through the opener; a replay starts there), ``start(key)`` once the
device serves, and ``close(key)`` when it goes.  The mode (spec §11, plus learned prefetch):

* ``accelerationLayer``: replay ``<last lower's dir>/trace`` (binary trace or file list);
* ``recordTracePath`` naming an empty file: record (``RecordSession``): ``<trace>.lock``
  is created; when it is deleted (looked at every 0.5 s) or the device closes, the trace is
  written, the lock removed and ``<trace>.ok`` created;
* ``recordTracePath`` naming a non-empty file: replay it;
* otherwise, with ``prefetchConfig.learn``: replay the learned trace of these layers if there
  is one, and learn from this start (``LearnSession``).

A trace that fails validation is logged and ignored; nothing here ever fails a device.
Replays read a second instance of the image opened in this process (without the per-process
block cache, which is not thread-safe), through the daemon's ``PriorityGate``.
"""

from __future__ import annotations

import os
import threading
import time

from loguru import logger

from ..errors import OverlaybdError
from ..image import load_image_config, open_image
from . import filelist, learned
from . import trace as tracefmt
from .recorder import LOCK_POLL, RecordSpec
from .replay import PriorityGate, Replayer


class RecordSession:
    """Record mode: the spool every engine process appends to, the lock, the final trace."""

    def __init__(self, trace_path, spool, lock=None, until=0.0, max_bytes=0, on_done=None):
        self.trace_path = trace_path
        self.spool = spool
        self.lock = lock
        self.spec = RecordSpec(spool, lock, until, max_bytes)
        self.on_done = on_done              # records -> None, instead of writing trace_path
        self.finished = False
        self.records = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._watcher = None
        self._fd = -1

    @classmethod
    def for_trace(cls, trace_path):
        """Upstream's record mode on ``trace_path`` (an existing empty file)."""
        s = cls(trace_path, trace_path + ".spool", trace_path + ".lock")
        s._fd = os.open(trace_path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            with open(s.spool, "wb"):
                pass
            fd = os.open(s.lock, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            os.close(fd)
        except OSError:
            os.close(s._fd)
            raise
        logger.info("Prefetch: recording into {} until {} is deleted or the device closes",
                    trace_path, s.lock)
        return s

    def start(self):
        if self.lock is None and not self.spec.until:
            return
        self._watcher = threading.Thread(target=self._watch, name="prefetch-record", daemon=True)
        self._watcher.start()

    def _watch(self):
        while not self._stop.wait(LOCK_POLL):
            if self.lock is not None and not os.path.exists(self.lock):
                break
            if self.spec.until and time.time() >= self.spec.until:
                self._stop.wait(LOCK_POLL)      # let the last reads of the window land
                break
        else:
            return
        self.finish("lock deleted" if self.lock is not None else "learning window over")

    def finish(self, why="device closed"):
        """Turn the spool into the trace (once)."""
        with self._mutex:
            if self.finished:
                return
            self.finished = True
            try:
                with open(self.spool, "rb") as f:
                    self.records = tracefmt.decode_records(f.read())
            except OSError as e:
                logger.error("Prefetch: cannot read spool {}: {}", self.spool, e.strerror)
                self.records = []
            _unlink(self.spool)
            if self.on_done is not None:
                self.on_done(self.records)
            else:
                self._dump(why)

    def _dump(self, why):
        try:
            tracefmt.write(self._fd, self.records)
        except OSError as e:
            logger.error("Prefetch: writing trace {} failed: {}", self.trace_path, e.strerror)
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            return
        finally:
            os.close(self._fd)
            self._fd = -1
        _unlink(self.lock)
        ok = self.trace_path + ".ok"
        _unlink(ok)
        try:
            os.close(os.open(ok, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
        except OSError as e:
            logger.error("Prefetch: cannot create {}: {}", ok, e.strerror)
        logger.info("Prefetch: recorded {} records ({} MiB) into {} ({})", len(self.records),
                    sum(r.count for r in self.records) >> 20, self.trace_path, why)

    def close(self):
        self._stop.set()
        self.finish()


class ReplaySession:
    """Replays ``records`` (or the file list ``entries``) against a private instance of the
    image, in a background thread that also opens that instance."""

    def __init__(self, config_path, svc, gate, name, records=None, entries=None, counter=None):
        self.config_path = config_path
        self.counter = counter              # a PrefetchService counting running replays
        self.svc = svc
        self.gate = gate
        self.name = name
        self.records = records
        self.entries = entries
        self.replayer = None
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        if self.counter is not None:
            self.counter.replay_started()
        self._thread = threading.Thread(target=self._main, name="prefetch-replay", daemon=True)
        self._thread.start()

    def _main(self):
        try:
            self._run()
        finally:
            if self.counter is not None:
                self.counter.replay_ended()

    def _run(self):
        try:
            img = open_image(self.config_path, self.svc, write_result=False, download=False)
        except OverlaybdError as e:
            logger.error("Prefetch: {}: cannot open the image to replay: {}", self.name, e)
            return
        try:
            if self._stop.is_set():
                return
            lower = img.lower
            if self.entries is not None:
                if lower is None:
                    logger.warning("Prefetch: {}: no lower layers to read files from", self.name)
                    return
                self.records = filelist.plan(lower, self.entries, self._stop.is_set)
                targets = {0: lower}
            else:
                targets = dict(enumerate(img.layers))
            self.replayer = Replayer(self.records, targets, self.svc.prefetch.concurrency,
                                     self.gate, self.name, stop_event=self._stop)
            self.replayer.start().join()
        except Exception as e:  # noqa: BLE001 -- prefetch is best effort: log, never crash
            logger.error("Prefetch: {}: {}", self.name, e)
        finally:
            img.close()

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def close(self):
        self._stop.set()

    def join(self, timeout=None):
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running


class PrefetchService:
    """The daemon's prefetch: one gate, the sessions of each device."""

    def __init__(self, svc):
        self.svc = svc
        self.gate = PriorityGate()
        self.devices: dict[int, list] = {}
        self._tags = 0
        self._replays = 0
        self._count_lock = threading.Lock()
        self.replaying = False      # a replay runs: the daemon shuts the gate during device I/O

    def replay_started(self):
        with self._count_lock:
            self._replays += 1
            self.replaying = True

    def replay_ended(self):
        with self._count_lock:
            self._replays -= 1
            self.replaying = self._replays > 0

    def open(self, key, config_path, opener):
        """Decide what device ``key`` does; may give ``opener`` a recording to do.  Replays
        start at once (the image is known good: the daemon opened it to check it)."""
        self.close(key)
        try:
            cfg = load_image_config(config_path, self.svc.download)
            sessions = self._sessions(cfg, config_path)
        except (OverlaybdError, OSError) as e:
            logger.error("Prefetch: {}: prefetch off for this device: {}", config_path, e)
            sessions = []
        for s in sessions:
            if isinstance(s, RecordSession):
                if hasattr(opener, "record"):
                    opener.record = s.spec
                else:
                    logger.warning("Prefetch: {}: this opener cannot record", config_path)
        self.devices[key] = sessions
        for s in sessions:          # replays start now: opening their image overlaps the engine's
            if isinstance(s, ReplaySession):
                s.start()
        return sessions

    def _sessions(self, cfg, config_path):
        if cfg.acceleration_layer:
            return self._replay_path(os.path.join(cfg.acceleration_dir, "trace"), config_path,
                                     record_ok=False)
        if cfg.record_trace_path:
            return self._replay_path(cfg.record_trace_path, config_path, record_ok=True)
        if self.svc.prefetch.learn:
            return self._learn(cfg, config_path)
        return []

    def _replay_path(self, path, config_path, record_ok):
        try:
            kind, data = tracefmt.load(path)
        except tracefmt.TraceError as e:
            logger.error("Prefetch: trace {} ignored: {}", path, e.reason)
            return []
        if kind == "record" and record_ok:
            return [RecordSession.for_trace(path)]
        if kind == "trace":
            logger.info("Prefetch: replaying trace {} ({} records)", path, len(data))
            return [ReplaySession(config_path, self.svc, self.gate, path, records=data,
                                  counter=self)]
        if kind == "list":
            entries = filelist.parse(data)
            logger.info("Prefetch: prefetching {} listed paths from {}", len(entries), path)
            return [ReplaySession(config_path, self.svc, self.gate, path, entries=entries,
                                  counter=self)]
        return []

    def _learn(self, cfg, config_path):
        key = learned.key_of(cfg)
        if key is None:
            logger.debug("Prefetch: {}: a lower without digest, nothing to learn", config_path)
            return []
        store = learned.LearnedStore(self.svc.cache.dir)
        out = []
        records = store.load(key)
        if records:
            out.append(ReplaySession(config_path, self.svc, self.gate, store.path(key),
                                     records=records, counter=self))
        self._tags += 1
        spool = store.spool(key, f"{os.getpid()}-{self._tags}")
        p = self.svc.prefetch
        out.append(RecordSession(store.path(key), spool, None, time.time() + p.learn_seconds,
                                 p.learn_max_mb << 20,
                                 on_done=lambda recs: self._learned(store, key, recs, p)))
        return out

    @staticmethod
    def _learned(store, key, records, p):
        total, kept = 0, []
        for r in records:               # the byte budget over all processes together
            if total >= p.learn_max_mb << 20:
                break
            kept.append(r)
            total += r.count
        try:
            store.offer(key, kept)
        except OSError as e:
            logger.error("Prefetch: cannot store learned trace {}: {}", store.path(key),
                         e.strerror)

    def start(self, key):
        """The device serves: recordings start watching their lock / window."""
        for s in self.devices.get(key, ()):
            if isinstance(s, RecordSession):
                s.start()

    def close(self, key):
        for s in self.devices.pop(key, ()):
            try:
                s.close()
            except Exception as e:  # noqa: BLE001 -- a device must close whatever prefetch does
                logger.error("Prefetch: closing: {}", e)

    def close_all(self):
        for key in list(self.devices):
            self.close(key)

    def sessions(self, key):
        return list(self.devices.get(key, ()))

    def wait(self, key, timeout=None) -> bool:
        """Wait for the replays of device ``key`` to end; True when none is running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for s in self.sessions(key):
            if isinstance(s, ReplaySession):
                s.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(isinstance(s, ReplaySession) and s.running for s in self.sessions(key))


def _unlink(p):
    if not p:
        return
    try:
        os.unlink(p)
    except OSError:
        pass
