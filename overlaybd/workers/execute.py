"""Running one piece of I/O against a device: the code shared by inline mode and the workers.

A :class:`DeviceExecutor` runs the engine's operations on one device in one process: the
backend returned by its opener and a mapping of the kernel data area (the uio mapping).  Reads
go straight into the mapping (``preadinto`` where the backend has it), writes go straight from
it.  (The daemon's ``overlaybd.tcmu.daemon.Device`` is the device as the supervisor serves it.)
"""

from __future__ import annotations

import mmap
import time

from loguru import logger

from ..abi.ops import (
    FAILED,
    OP_COMPARE_WRITE,
    OP_COPY_IN,
    OP_COPY_OUT,
    OP_DISCARD,
    OP_FLUSH,
    OP_READ,
    OP_VERIFY,
    OP_WRITE,
    OP_WRITE_SAME,
    SCRATCH_OPS,
    SCRATCH_SIZE,
    ST_FLUSH_ERR,
    ST_GOOD,
    ST_READ_ERR,
    ST_WRITE_ERR,
    ST_WRITE_PROTECT,
    miscompare,
)
from ..errors import ReadOnlyError

WRITE_SAME_RUN = 1 << 20     # WRITE SAME writes its block repeated in runs of this many bytes


class RetryPolicy:
    """Read retries (spec §9.2): sleep 20 ms, doubling up to 30 s, until ``total_sec`` spent."""

    def __init__(self, total_sec: float = 7 * 86400, first_sec: float = 0.02, max_sec: float = 30.0):
        self.total_sec = total_sec
        self.first_sec = first_sec
        self.max_sec = max_sec

    def delays(self):
        """Sleep lengths to use between attempts, stopping when the budget is spent."""
        spent, delay = 0.0, self.first_sec
        while spent + delay <= self.total_sec:
            yield delay
            spent += delay
            delay = min(delay * 2, self.max_sec)


class DeviceExecutor:
    """A backend plus a mapping of the data area its iovecs point into, and of the device's
    scratch area (``scratch_fd``, SCRATCH_SIZE bytes: EXTENDED COPY's bounce buffer)."""

    def __init__(self, dev: int, opener, fd: int, map_size: int, retry: RetryPolicy | None = None,
                 backend=None, scratch_fd: int | None = None):
        self.dev = dev
        self.opener = opener
        self.retry = retry or RetryPolicy()
        self.map_size = map_size
        self.mapping = mmap.mmap(fd, map_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.mapping)
        self.scratch = self.scratch_view = None
        if scratch_fd is not None:
            self.scratch = mmap.mmap(scratch_fd, SCRATCH_SIZE, mmap.MAP_SHARED,
                                     mmap.PROT_READ | mmap.PROT_WRITE)
            self.scratch_view = memoryview(self.scratch)
        self.backend = backend
        self.open_error: Exception | None = None

    def ensure_open(self) -> bool:
        """Open the backend if not yet open; False (and the error logged) if that fails."""
        if self.backend is not None:
            return True
        try:
            self.backend = self.opener()
            self.open_error = None
            return True
        except Exception as e:  # noqa: BLE001 -- any opener failure fails the part, not the worker
            if self.open_error is None or str(self.open_error) != str(e):
                logger.error("dev {}: cannot open backend: {}", self.dev, e)
            self.open_error = e
            return False

    # -- operations ----------------------------------------------------------------------------
    def execute(self, op: int, offset: int, length: int, iovs) -> int:
        """Run one part; returns an ``ST_*`` status.  Never raises for I/O errors."""
        if not self.ensure_open():
            return FAILED.get(op, ST_READ_ERR)
        if op in SCRATCH_OPS:
            if self.scratch is None:
                logger.error("dev {}: no scratch area for {}", self.dev, op)
                return FAILED[op]
            view, size = self.scratch_view, SCRATCH_SIZE
        else:
            view, size = self.view, self.map_size
        for moff, n in iovs:
            if moff < 0 or n < 0 or moff + n > size:
                logger.error("dev {}: iovec ({}, {}) outside the {}-byte data area", self.dev, moff, n,
                             size)
                return ST_READ_ERR if op == OP_READ else ST_WRITE_ERR
        if op == OP_READ:
            return self._read(offset, iovs, view)
        if op == OP_WRITE:
            return self._write(offset, iovs, view)
        if op == OP_COPY_IN:
            return self._read(offset, iovs, view)
        if op == OP_COPY_OUT:
            return self._write(offset, iovs, view)
        if op == OP_FLUSH:
            return self.flush()
        if op == OP_DISCARD:
            return self._discard(offset, length)
        if op == OP_WRITE_SAME:
            return self._write_same(offset, length, iovs)
        if op == OP_COMPARE_WRITE:
            return self._compare(offset, length, iovs, write=True)
        if op == OP_VERIFY:
            return self._compare(offset, length, iovs, write=False)
        logger.error("dev {}: unknown op {}", self.dev, op)
        return ST_READ_ERR

    def _read(self, offset, iovs, view) -> int:
        delays = None
        while True:
            try:
                return self._read_once(offset, iovs, view)
            except Exception as e:  # noqa: BLE001 -- read errors are retried, then reported
                if delays is None:
                    delays = self.retry.delays()
                delay = next(delays, None)
                if delay is None:
                    logger.error("dev {}: read at {} failed: {}", self.dev, offset, e)
                    return ST_READ_ERR
                logger.warning("dev {}: read at {} failed ({}), retrying in {:.3f}s", self.dev,
                               offset, e, delay)
                time.sleep(delay)

    def _read_once(self, offset, iovs, view) -> int:
        backend = self.backend
        into = getattr(backend, "preadinto", None)
        pos = offset
        for moff, n in iovs:
            dst = view[moff:moff + n]
            done = 0
            while done < n:
                if into is not None:
                    got = into(dst[done:], pos + done)
                else:
                    data = backend.pread(n - done, pos + done)
                    got = len(data)
                    dst[done:done + got] = data
                if not got:
                    logger.error("dev {}: short read at {}: {} of {} bytes", self.dev, pos, done, n)
                    return ST_READ_ERR
                done += got
            pos += n
        return ST_GOOD

    def _writable(self) -> bool:
        b = self.backend
        return not getattr(b, "read_only", False) and getattr(b, "pwrite", None) is not None

    def _write(self, offset, iovs, view) -> int:
        if len(iovs) != 1:
            return self._pwrite(b"".join(view[moff:moff + n] for moff, n in iovs), offset)
        moff, n = iovs[0]
        data = view[moff:moff + n]
        try:
            return self._pwrite(data, offset)
        finally:
            data.release()

    def _gather(self, iovs) -> bytes:
        return b"".join(self.view[moff:moff + n] for moff, n in iovs)

    def _pwrite(self, data, offset) -> int:
        """Write ``data`` at ``offset``: an ``ST_*`` status, errors logged."""
        if not self._writable():
            return ST_WRITE_PROTECT
        try:
            got = self.backend.pwrite(data, offset)
        except ReadOnlyError:
            return ST_WRITE_PROTECT
        except Exception as e:  # noqa: BLE001
            logger.error("dev {}: write of {} bytes at {} failed: {}", self.dev, len(data), offset, e)
            return ST_WRITE_ERR
        if isinstance(got, int) and got != len(data):
            logger.error("dev {}: short write at {}: {} of {}", self.dev, offset, got, len(data))
            return ST_WRITE_ERR
        return ST_GOOD

    def _write_same(self, offset, length, iovs) -> int:
        """WRITE SAME: the one block in ``iovs`` over [offset, offset + length)."""
        block = self._gather(iovs)
        if not block or length % len(block):
            logger.error("dev {}: WRITE SAME of {} bytes with a {}-byte block", self.dev, length,
                         len(block))
            return ST_WRITE_ERR
        run = block * max(1, min(length, WRITE_SAME_RUN) // len(block))
        end = offset + length
        while offset < end:
            st = self._pwrite(run[:end - offset], offset)
            if st != ST_GOOD:
                return st
            offset += len(run)
        return ST_GOOD

    def _compare(self, offset, length, iovs, write) -> int:
        """VERIFY (BYTCHK 1) and COMPARE AND WRITE: the first ``length`` bytes of ``iovs`` are
        compared with the medium; if equal, COMPARE AND WRITE writes the next ``length``.
        One process runs one part at a time, and every part touching these blocks is routed
        to this process, so nothing interleaves between the compare and the write."""
        data = self._gather(iovs)
        if len(data) != (2 if write else 1) * length:
            logger.error("dev {}: compare of {} bytes with {} bytes of data", self.dev, length,
                         len(data))
            return ST_WRITE_ERR if write else ST_READ_ERR
        if write and not self._writable():
            return ST_WRITE_PROTECT
        medium = bytearray(length)
        st = self._read(offset, [(0, length)], memoryview(medium))   # with the read retries
        if st != ST_GOOD:
            return st
        expect = memoryview(data)[:length]
        if medium != expect:
            first = next(b for b in range(0, length, 4096) if medium[b:b + 4096] != expect[b:b + 4096])
            first = next(i for i in range(first, length) if medium[i] != expect[i])
            return miscompare(first)
        if not write:
            return ST_GOOD
        return self._pwrite(memoryview(data)[length:], offset)

    def _discard(self, offset, length) -> int:
        if getattr(self.backend, "read_only", False):
            return ST_WRITE_PROTECT
        discard = getattr(self.backend, "discard", None)
        if discard is None:
            logger.error("dev {}: backend cannot discard", self.dev)
            return ST_WRITE_ERR
        try:
            discard(offset, length)
        except ReadOnlyError:
            return ST_WRITE_PROTECT
        except Exception as e:  # noqa: BLE001
            logger.error("dev {}: discard {}+{} failed: {}", self.dev, offset, length, e)
            return ST_WRITE_ERR
        return ST_GOOD

    def flush(self) -> int:
        """fsync the backend if it is writable; a read-only backend flushes trivially."""
        fsync = getattr(self.backend, "fsync", None)
        if fsync is None or getattr(self.backend, "read_only", False):
            return ST_GOOD
        try:
            fsync()
        except Exception as e:  # noqa: BLE001
            logger.error("dev {}: flush failed: {}", self.dev, e)
            return ST_FLUSH_ERR
        return ST_GOOD

    def close(self) -> None:
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception as e:  # noqa: BLE001
                logger.error("dev {}: close failed: {}", self.dev, e)
        self.backend = None
        self.view.release()
        if self.scratch is not None:
            self.scratch_view.release()
            self.scratch.close()
        try:
            self.mapping.close()
        except BufferError:      # a backend kept a view of the data area: the GC unmaps it later
            logger.warning("dev {}: data area still referenced at close", self.dev)

