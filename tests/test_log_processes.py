"""The log and the audit file shared by several processes: one rotation, whole lines in order,
sizes from the file itself, fork hygiene, file modes (spec §10.1, §10.2)."""

import json
import os
import re
import signal
import threading
import time

import multiprocess
import pytest
from loguru import logger

from overlaybd import audit, logfile
from overlaybd import log as olog
from overlaybd.errors import ConfigError
from overlaybd.image import load_service_config
from overlaybd.tcmu.daemon import Daemon
from overlaybd.tcmu.fakekernel import FakeKernel
from overlaybd.tcmu.uio import UioInfo
from overlaybd.workers import Engine
from overlaybd.workers.rawfile import RawFile, RawFileOpener
from tests.helpers.tcmu import read10

MiB = 1 << 20
FORK = multiprocess.get_context("fork")      # how the worker pool starts its workers

ALOG = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}\|INFO \|th=[0-9A-F]{16}\|"
                  r".+test_log_processes\.py:\d+\|_log_lines:p=(\w+) i=(\d{6}) x+$")
AUDIT = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}\|AUDIT\|th=[0-9A-F]{16}\|"
                   r"file:pread\[pathname=/(\w+)\]\[offset=(\d+)\]\[size=4096\]\[latency=12000\]$")


@pytest.fixture(autouse=True)
def _restore_loguru():
    yield
    import sys
    audit.configure(False, "")
    logger.remove()
    logger.add(sys.stderr)


def _log_lines(tag, n, audit_too=False):
    pad = "x" * (300 + 37 * (ord(tag[-1]) % 3))      # processes write lines of different lengths
    for i in range(n):
        logger.info("p={} i={:06d} {}", tag, i, pad)
        if audit_too:
            audit.io_event("file:pread", f"/{tag}", i, 4096, 0.012)


def _generations(path):
    """The rotated set, oldest first; asserts upstream's naming (f, f.1 ... f.(k))."""
    names = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))
    k = len(names) - 1
    assert names == sorted([path.name] + [f"{path.name}.{i}" for i in range(1, k + 1)])
    return [path.parent / f"{path.name}.{i}" for i in range(k, 0, -1)] + [path]


def _check_rotated_set(path, limit, max_files, pattern, n, tags):
    files = _generations(path)
    assert len(files) <= max_files
    longest, seen = 0, {t: [] for t in tags}
    for f in files:
        data = f.read_bytes()
        assert data.endswith(b"\n")
        for line in data.decode().splitlines():
            m = pattern.match(line)
            assert m, f"{f.name}: torn or foreign line {line[:80]!r}"
            longest = max(longest, len(line) + 1)
            seen[m.group(1)].append(int(m.group(2)))
    for f in files[:-1]:        # rotated at the line that crossed the limit: never 2x the limit
        assert limit < f.stat().st_size <= limit + longest, (f.name, f.stat().st_size)
    assert path.stat().st_size <= limit
    for tag, idx in seen.items():
        # the set keeps the tail of one stream: each process's lines, in order, up to its last
        assert idx and idx == list(range(idx[0], n)), tag
    return files, seen


def test_supervisor_and_two_workers_share_one_rotation(tmp_path, monkeypatch):
    """Three processes (a parent and two forked children, set up like the supervisor and its
    workers) write the log and the audit file past their limits several times."""
    log = tmp_path / "log" / "overlaybd.log"
    aud = tmp_path / "log" / "audit.log"
    monkeypatch.setattr(audit, "ROTATE_BYTES", 256 << 10)     # the 10 MiB x 3 rule, made small
    olog.setup_logging(str(log), level=1, size_mb=1, rotate_num=4)
    audit.configure(True, str(aud))
    n = 4000                                                  # ~5.5 MiB of log in all
    go = FORK.Event()
    kids = [FORK.Process(target=lambda t=t: (go.wait(), _log_lines(t, n, True))) for t in ("w0", "w1")]
    for k in kids:
        k.start()
    go.set()
    _log_lines("sv", n, True)
    for k in kids:
        k.join(60)
        assert k.exitcode == 0
    for path, limit, keep, pattern in ((log, MiB, 4, ALOG), (aud, 256 << 10, 3, AUDIT)):
        files, seen = _check_rotated_set(path, limit, keep, pattern, n, ("sv", "w0", "w1"))
        assert len(files) == keep                             # written past the whole set:
        assert sum(map(len, seen.values())) < 3 * n           # the oldest lines are gone
    for f in _generations(log) + _generations(aud):
        assert f.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "log").stat().st_mode & 0o777 == 0o700


def test_restart_continues_the_size_of_the_file(tmp_path, monkeypatch):
    """A restarted service (set up again) counts the bytes already in the file, not from 0."""
    log, aud = tmp_path / "o.log", tmp_path / "a.log"
    monkeypatch.setattr(audit, "ROTATE_BYTES", 64 << 10)
    olog.setup_logging(str(log), size_mb=1, rotate_num=3)
    audit.configure(True, str(aud))
    n = 0
    while log.stat().st_size < 0.6 * MiB:
        _log_lines("sv", 100)
        n += 100
    for i in range(400):                                      # ~40 KiB
        audit.io_event("file:pread", "/sv", i, 4096, 0.012)
    first = log.read_text().splitlines()[0]
    assert log.stat().st_size < 0.7 * MiB and 32 << 10 < aud.stat().st_size < 64 << 10
    audit.configure(False, "")
    olog.setup_logging(str(log), size_mb=1, rotate_num=3)     # the service restarts
    audit.configure(True, str(aud))
    _log_lines("sv", n)                   # counting from 0, neither file would rotate now
    for i in range(400):
        audit.io_event("file:pread", "/sv", i, 4096, 0.012)
    rotated = (tmp_path / "o.log.1").read_text()
    assert rotated.startswith(first + "\n") and len(rotated) > MiB
    assert log.stat().st_size < MiB // 2
    assert (tmp_path / "a.log.1").stat().st_size > 64 << 10
    assert aud.stat().st_size < 32 << 10


def test_a_forked_child_locks_on_its_own(tmp_path):
    """The child of a fork taken while the parent holds both locks gets a fresh thread lock and
    its own open file: it waits for the parent's flock instead of writing through it (or
    hanging on a lock no thread of its own will ever release)."""
    path = tmp_path / "f.log"
    f = logfile.LogFile(str(path), MiB, 3)
    f.write("parent first\n")
    with f._lock:
        f._current()                                  # flock held, as in the middle of a line
        child = FORK.Process(target=f.write, args=("child\n",))
        child.start()
        time.sleep(0.5)
        assert path.read_text() == "parent first\n" and child.is_alive()
        os.write(f.fd, b"parent second\n")
        import fcntl
        fcntl.flock(f.fd, fcntl.LOCK_UN)
    child.join(10)
    assert child.exitcode == 0
    assert path.read_text() == "parent first\nparent second\nchild\n"
    f.close()


def test_rotation_by_another_process_is_followed(tmp_path):
    """A process that did not rotate notices the new file by its inode and writes there."""
    path = tmp_path / "f.log"
    a = logfile.LogFile(str(path), 100, 3)
    b = logfile.LogFile(str(path), 100, 3)            # another process's descriptor
    b.write("b1\n")
    a.write("a" * 120 + "\n")                          # a crosses the limit and rotates
    b.write("b2\n")
    assert path.read_text() == "b2\n"
    assert (tmp_path / "f.log.1").read_text() == "b1\n" + "a" * 120 + "\n"
    os.rename(path, tmp_path / "moved")                # logrotate, no SIGHUP
    b.write("b3\n")
    assert path.read_text() == "b3\n"
    c = logfile.LogFile(str(tmp_path / "d" / "c.log"), 100, 3)
    os.unlink(tmp_path / "d" / "c.log")
    os.rmdir(tmp_path / "d")                           # the folder removed by hand
    c.write("c\n")
    assert (tmp_path / "d" / "c.log").read_text() == "c\n"
    one = logfile.LogFile(str(tmp_path / "g.log"), 10, 1)   # logRotateNum 1: the file restarts
    one.write("0123456789abc\n")
    one.write("z\n")
    assert (tmp_path / "g.log").read_text() == "z\n" and not (tmp_path / "g.log.1").exists()
    for f in (a, b, c, one):
        f.close()


def test_sighup_from_a_signal_handler_never_waits(tmp_path):
    """reopen(blocking=False) while a write holds the lock: that write drops the descriptor."""
    path = tmp_path / "f.log"
    f = logfile.LogFile(str(path), MiB, 3)
    f.write("one\n")
    with f._lock:
        f.reopen(blocking=False)                       # returns at once
        assert f.fd >= 0
    f.write("two\n")                                   # closes the stale descriptor first
    old = f.fd
    os.rename(path, tmp_path / "f.log.old")
    t = threading.Thread(target=logfile.reopen_all)
    t.start()
    t.join(5)
    assert f.fd == -1 and old >= 0
    f.write("three\n")
    assert path.read_text() == "three\n"
    f.close()


def test_file_modes_and_the_setting(tmp_path):
    old = os.umask(0o022)
    try:
        cfg = tmp_path / "obd.json"
        logp = tmp_path / "a" / "b" / "o.log"
        cfg.write_text(json.dumps({"logConfig": {"logPath": str(logp), "fileMode": "0640"},
                                   "auditPath": str(tmp_path / "c" / "audit.log")}))
        svc = load_service_config(str(cfg))
        assert svc.log.file_mode == 0o640
        olog.setup_from_config(svc.log)
        audit.configure_from(svc)
        logger.info("hello")
        audit.event("eviction", ("actualEvict", 1))
        for p in (logp, tmp_path / "c" / "audit.log"):
            assert p.stat().st_mode & 0o777 == 0o640
        for d in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "c"):
            assert d.stat().st_mode & 0o777 == 0o750
        for bad in ("0755", "0644x", "0400", 420):
            cfg.write_text(json.dumps({"logConfig": {"logPath": "/x", "fileMode": bad}}))
            with pytest.raises(ConfigError, match="logConfig.fileMode"):
                load_service_config(str(cfg))
        cfg.write_text('{"logPath": "/x"}')                # legacy keys: private by default
        assert load_service_config(str(cfg)).log.file_mode == 0o600
    finally:
        os.umask(old)


class LoggingFile(RawFile):
    """A raw disk whose every read leaves a log line and an audit line naming its process."""

    def preadinto(self, buf, off):
        logger.info("read by pid={} at {}", os.getpid(), off)
        audit.io_event("file:pread", f"/pid{os.getpid()}", off, len(buf), 0.02)
        return super().preadinto(buf, off)


class LoggingOpener(RawFileOpener):
    def __call__(self):
        return LoggingFile(self.path, self.writable)


def _holding(pids, st):
    """The processes among ``pids`` with a descriptor on the file ``st`` (an os.stat result)."""
    found = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                s = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino):
                found.add(pid)
    return found


def test_sighup_reopens_the_files_in_every_process(tmp_path):
    """The supervisor with two worker processes; the log and the audit file are moved away
    (logrotate); SIGHUP to the supervisor: no process keeps the moved files open, and all of
    them write into the new ones."""
    logp, aud = tmp_path / "log" / "overlaybd.log", tmp_path / "log" / "audit.log"
    olog.setup_logging(str(logp))
    audit.configure(True, str(aud))
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(4 * MiB))
    d = Daemon(Engine(workers=2, chunk_size=64 << 10), lambda c: RawFile(disk),
               lambda c: LoggingOpener(disk), use_netlink=False, sys_uio=str(tmp_path / "none"),
               configfs=str(tmp_path))
    d._watch.add(d._signals.install())        # as Daemon.run does: SIGHUP reaches the loop
    fk = FakeKernel(data_size=8 * MiB)
    try:
        d.start()
        assert d.add_device(UioInfo(0, "tcm-user/1/d/overlaybd/x", "1", "d", "overlaybd/x"),
                            fk.handle()) == 0
        workers = d.engine.worker_pids()
        everyone = {os.getpid(), *workers}

        def read_until_every_worker_wrote():
            for k in range(64):                      # 64 chunks: both workers get some
                cid = fk.submit(read10(k * 128, 8), data_in_len=4096)
                while not [c for c in fk.reap() if c.cmd_id == cid]:
                    d.run_once(0.05)
                in_log = set(map(int, re.findall(r"read by pid=(\d+) ", logp.read_text())))
                in_audit = set(map(int, re.findall(r"pathname=/pid(\d+)\]", aud.read_text())))
                if set(workers) <= in_log and set(workers) <= in_audit:
                    return
            raise AssertionError("a worker wrote no line")

        read_until_every_worker_wrote()
        old_log, old_aud = os.stat(logp), os.stat(aud)
        assert _holding(everyone, old_log) == everyone == _holding(everyone, old_aud)
        os.rename(logp, f"{logp}.1")
        os.rename(aud, f"{aud}.1")
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 10
        while (_holding(everyone, old_log) or _holding(everyone, old_aud)) and time.monotonic() < deadline:
            d.run_once(0.05)
        assert _holding(everyone, old_log) == set() == _holding(everyone, old_aud)
        assert "SIGHUP: log and audit files reopened; passed on to 2 worker(s)" in logp.read_text()
        read_until_every_worker_wrote()              # into the new files
        assert d.engine.worker_pids() == workers     # the same processes, not replacements
    finally:
        d.shutdown()
        d._watch.forget(d._signals.fd)
        d._signals.restore()
        fk.close()
