"""Helpers for the engine tests: a fake kernel data area, backends, a completion recorder."""

import mmap
import os
import random
import struct
import time

from overlaybd.workers import Engine
from overlaybd.workers.rawfile import RawFile, RawFileOpener

DEV = 7
MiB = 1 << 20


def shm_names_of(pid):
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"overlaybd-{pid}-"))


class SlowFile(RawFile):
    """A raw file whose reads take ``delay`` seconds: keeps many parts in flight."""

    def __init__(self, path, writable, delay):
        super().__init__(path, writable)
        self.delay = delay

    def preadinto(self, buf, off):
        time.sleep(self.delay)
        return super().preadinto(buf, off)


class SlowOpener(RawFileOpener):
    def __init__(self, path, writable=False, delay=0.002):
        super().__init__(path, writable)
        self.delay = delay

    def __call__(self):
        return SlowFile(self.path, self.writable, self.delay)


class FailingOpener:
    """An opener that always fails (in whichever process calls it)."""

    def __call__(self):
        raise OSError(5, "this backend never opens")


_REC = struct.Struct("<QQQ")   # device offset, data position, length


class AppendLog:
    """A toy append-only writable layer written by several processes, like LSMT's:
    data positions come from a shared allocator, records are appended with O_APPEND."""

    read_only = False

    def __init__(self, data_path, log_path, size, allocator):
        self.data_fd = os.open(data_path, os.O_RDWR | os.O_CLOEXEC)
        self.log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.size = size
        self.allocator = allocator

    def pwrite(self, data, off):
        n = len(data)
        pos = self.allocator.allocate(n)
        os.pwrite(self.data_fd, data, pos)
        assert os.write(self.log_fd, _REC.pack(off, pos, n)) == _REC.size
        return n

    def pread(self, n, off):
        return bytes(n)   # reads are not what this toy is for

    def fsync(self):
        os.fsync(self.data_fd)
        os.fsync(self.log_fd)

    def close(self):
        os.close(self.data_fd)
        os.close(self.log_fd)

    @staticmethod
    def replay(data_path, log_path, size):
        """The device content the log describes (later records win)."""
        out = bytearray(size)
        with open(data_path, "rb") as d, open(log_path, "rb") as f:
            log = f.read()
            recs = [_REC.unpack_from(log, i) for i in range(0, len(log), _REC.size)]
            for off, pos, n in recs:
                d.seek(pos)
                out[off:off + n] = d.read(n)
        return bytes(out), recs


class AppendLogOpener:
    def __init__(self, data_path, log_path, size, allocator):
        self.args = (data_path, log_path, size, allocator)

    def __call__(self):
        return AppendLog(*self.args)


class EngineHarness:
    """An engine serving one raw-file device, with a memfd as the kernel's data area."""

    def __init__(self, tmp_path, workers, size=8 * MiB, map_size=32 * MiB, writable=False,
                 opener=None, seed=1, delay=None, **engine_kw):
        rnd = random.Random(seed)
        self.src = rnd.randbytes(size)
        self.path = tmp_path / f"backend-{workers}.img"
        self.path.write_bytes(self.src)
        self.map_size = map_size
        self.map_fd = os.memfd_create("fake-data-area", os.MFD_CLOEXEC)
        os.ftruncate(self.map_fd, map_size)
        self.mm = mmap.mmap(self.map_fd, map_size)
        self.completions = {}            # cmd_id -> [status, ...] (a list: duplicates show)
        self.other = {}                  # other devices: dev -> {cmd_id: [status, ...]}
        engine_kw.setdefault("chunk_size", MiB)
        self.engine = Engine(workers=workers, on_complete=self._on_complete, **engine_kw)
        self.engine.start()
        if opener is None:
            opener = RawFileOpener(self.path, writable) if delay is None else \
                SlowOpener(self.path, writable, delay)
        self.opener = opener
        self.engine.add_device(DEV, self.opener, self.map_fd, map_size)

    def _on_complete(self, dev, cmd_id, status):
        box = self.completions if dev == DEV else self.other.setdefault(dev, {})
        box.setdefault(cmd_id, []).append(status)

    def submit(self, cmd_id, op, off, length, moff=0, iov_size=None):
        """Submit with the buffer at ``moff``, cut into iovecs of ``iov_size`` bytes."""
        step = iov_size or max(length, 1)
        iovs = [(moff + p, min(step, length - p)) for p in range(0, length, step)]
        self.engine.submit(DEV, cmd_id, op, off, length, iovs)

    def wait_for(self, cmd_ids, timeout=60):
        deadline = time.monotonic() + timeout
        want = set(cmd_ids)
        while not want <= self.completions.keys():
            assert time.monotonic() < deadline, f"missing completions: {sorted(want - self.completions.keys())[:10]}"
            self.engine.wait(0.05)

    def data(self, moff, n):
        return bytes(self.mm[moff:moff + n])

    def close(self, drain=True):
        codes = self.engine.stop(drain=drain)
        self.mm.close()
        os.close(self.map_fd)
        return codes


class PoisonFile(RawFile):
    """A raw file that kills its process when asked to read at ``poison`` (a crashing backend)."""

    def __init__(self, path, poison):
        super().__init__(path)
        self.poison = poison

    def preadinto(self, buf, off):
        if off == self.poison:
            os.kill(os.getpid(), 9)
        return super().preadinto(buf, off)


class PoisonOpener(RawFileOpener):
    def __init__(self, path, poison):
        super().__init__(path)
        self.poison = poison

    def __call__(self):
        return PoisonFile(self.path, self.poison)


class GateFile(RawFile):
    """A raw file whose read at ``gate`` blocks until the file ``release`` exists."""

    def __init__(self, path, gate, release):
        super().__init__(path)
        self.gate, self.release = gate, release

    def preadinto(self, buf, off):
        while off == self.gate and not os.path.exists(self.release):
            time.sleep(0.01)
        return super().preadinto(buf, off)


class GateOpener(RawFileOpener):
    def __init__(self, path, gate, release):
        super().__init__(path)
        self.gate, self.release = gate, str(release)

    def __call__(self):
        return GateFile(self.path, self.gate, self.release)


class CrashingOpener:
    """An opener that kills the process calling it (a backend crashing the interpreter)."""

    def __call__(self):
        os._exit(3)
