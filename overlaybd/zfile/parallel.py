"""Compression of runs of ZFile blocks, inline or in forked processes (``--compress_threads``).

One loop, :func:`compress_into`, turns a run of raw blocks into stored blocks (CRC appended)
written straight into a destination buffer.  The writer calls it inline, or hands runs to a
:class:`CompressorPool` of N compressing processes: the parent and N-1 forked children, which
share one anonymous ``MAP_SHARED`` mapping of 3N slots.  The writer fills a free slot's input
half with a run; while fewer than two runs wait per child it sends it only ``(slot, length)``
down a pipe, the child compresses into the slot's output half, puts the stored lengths (4
bytes a block) at the slot's end and answers ``(slot, blocks)``;
otherwise the parent compresses the run itself (it would only wait otherwise, and it is one
of the N CPUs asked for; two runs queued per child keep a child busy meanwhile).  Results are taken in submission order, so the output
does not depend on the process count or on who compressed what.

Why processes over shared memory: with threads, the per-block Python work (slicing, CRC,
packing) holds the GIL for longer than the codec releases it, and 2 threads compressed lz4
slower than 1.  With ``concurrent.futures``' process pool every run crossed two pipes as
pickles and woke its two helper threads, which cost the parent about as much as compressing
(14,000 futex calls for 512 runs); here the parent has no thread and moves 8 bytes a run.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import sys
from array import array
from collections import deque

from ..abi import zfile as abi
from ..crc import crc32c_raw
from ..errors import OverlaybdError
from . import codec

_CRC = struct.Struct("<I")


def block_bound(block_size: int) -> int:
    """Most bytes one stored block can take: above both LZ4_compressBound and
    ZSTD_compressBound for blocks up to 64 KiB, plus the CRC."""
    return block_size + block_size // 255 + 64 + _CRC.size


def compress_into(comp, src, block_size, verify, dst, dst_off) -> array:
    """Compress ``src`` block by block (the last block may be short) into ``dst`` from
    ``dst_off``; returns the stored length of each block (CRC included when ``verify``)."""
    src = memoryview(src)
    lens = array("I")
    pos = dst_off
    seed = abi.BLOCK_CRC_SEED
    for off in range(0, len(src), block_size):
        c = comp(src[off:off + block_size])
        n = len(c)
        dst[pos:pos + n] = c
        if verify:
            _CRC.pack_into(dst, pos + n, crc32c_raw(c, seed))
            n += _CRC.size
        pos += n
        lens.append(n)
    return lens


_MSG = struct.Struct("<II")            # (slot, blocks); blocks == _FAILED: the child failed
_FAILED = 0xFFFFFFFF


class _Child:
    """One forked compressor: a task pipe down, a done pipe up, its runs in FIFO order."""

    def __init__(self, pool):
        task_r, self.task_w = os.pipe()
        self.done_r, done_w = os.pipe()
        self.runs = deque()
        self.pid = os.fork()
        if self.pid == 0:                                   # the child
            code = 1
            try:
                os.close(self.task_w)
                os.close(self.done_r)
                pool.serve(task_r, done_w)
                code = 0
            except BaseException as e:      # noqa: BLE001 - report, never unwind into the caller
                print(f"overlaybd: compression process {os.getpid()} failed: {e!r}",
                      file=sys.stderr)
                try:
                    os.write(done_w, _MSG.pack(0, _FAILED))
                except OSError:
                    pass
            finally:
                os._exit(code)
        os.close(task_r)
        os.close(done_w)
        os.set_blocking(self.done_r, False)


class CompressorPool:
    """``processes`` compressors (this one and ``processes - 1`` forked children) fed
    through shared-memory slots.  The caller fills the slot :meth:`take` returns with a run of
    at most ``task_bytes`` raw bytes (whole blocks but the last) and :meth:`submit` hands it on;
    finished runs go to ``emit(lens, stored)`` in order, when a slot is needed or at
    :meth:`drain`.  ``stored`` is a view into the slot, valid only during the call."""

    def __init__(self, processes, algo, block_size, verify, task_bytes):
        self.comp, self.block_size, self.verify = codec.compressor(algo), block_size, verify
        self.in_size = task_bytes
        blocks = -(-task_bytes // block_size)
        self.out_size = blocks * block_bound(block_size)
        self.stride = task_bytes + self.out_size + 4 * blocks
        nslots = 3 * processes
        self.mm = mmap.mmap(-1, nslots * self.stride)
        self.view = memoryview(self.mm)
        self.free = deque(range(nslots))
        self.filling = None               # the slot handed out by take(), not yet submitted
        self.runs = deque()               # [slot, child or None, lens or None], oldest first
        self.kids = []
        try:
            for _ in range(processes - 1):
                self.kids.append(_Child(self))
        except BaseException:
            self.close()
            raise

    # -- child side ----------------------------------------------------------------------
    def serve(self, task_r, done_w):
        """The child's loop: compress each announced slot until the task pipe closes."""
        while True:
            msg = os.read(task_r, _MSG.size)
            if not msg:
                return
            slot, n = _MSG.unpack(msg)
            base = slot * self.stride
            with self.view[base:base + n] as src:
                lens = self._compress(src, base)
            os.write(done_w, _MSG.pack(slot, len(lens)))

    def _compress(self, src, base):
        out = base + self.in_size
        lens = compress_into(self.comp, src, self.block_size, self.verify, self.mm, out)
        at = out + self.out_size
        self.view[at:at + 4 * len(lens)] = lens.tobytes()
        return lens

    # -- parent side ---------------------------------------------------------------------
    def take(self, emit):
        """A free slot's input half to fill with the next run (at most ``task_bytes``); when
        every slot is busy the oldest run is finished and emitted first."""
        if not self.free:
            self._finish_oldest(emit)
        self.filling = self.free.popleft()
        base = self.filling * self.stride
        return self.view[base:base + self.in_size]

    def submit(self, n, emit):
        """Compress the ``n`` bytes filled into the slot from :meth:`take`: sent to the least
        busy child, or compressed here when every child has two runs queued."""
        slot, self.filling = self.filling, None
        self._collect(block=None)
        kid = min(self.kids, key=lambda k: len(k.runs))
        if len(kid.runs) >= 2:
            base = slot * self.stride
            with self.view[base:base + n] as src:
                run = [slot, None, self._compress(src, base)]
        else:
            run = [slot, kid, None]
            kid.runs.append(run)
            try:
                os.write(kid.task_w, _MSG.pack(slot, n))
            except BrokenPipeError:
                raise OverlaybdError(f"compression process {kid.pid} died") from None
        self.runs.append(run)

    def _collect(self, block):
        """Record the answers the children have sent; with ``block`` (a child), wait until
        that child has answered at least once."""
        for kid in self.kids if block is None else (block,):
            while True:
                try:
                    data = os.read(kid.done_r, 64 * _MSG.size)
                except BlockingIOError:
                    if block is None:
                        break
                    select.select([kid.done_r], [], [])
                    continue
                if not data:
                    raise OverlaybdError(f"compression process {kid.pid} died")
                for slot, blocks in _MSG.iter_unpack(data):
                    if blocks == _FAILED:
                        raise OverlaybdError(f"compression process {kid.pid} failed")
                    run = kid.runs.popleft()
                    at = slot * self.stride + self.in_size + self.out_size
                    lens = run[2] = array("I")
                    lens.frombytes(self.view[at:at + 4 * blocks])
                if block is not None:
                    return

    def drain(self, emit):
        while self.runs:
            self._finish_oldest(emit)

    def _finish_oldest(self, emit):
        slot, kid, _ = run = self.runs[0]
        while run[2] is None:
            self._collect(block=kid)
        self.runs.popleft()
        lens = run[2]
        start = slot * self.stride + self.in_size
        emit(lens, self.view[start:start + sum(lens)])
        self.free.append(slot)

    def close(self, cancel=False):
        """Stop the children (they finish the run in hand) and unmap the slots."""
        for kid in self.kids:
            os.close(kid.task_w)
        for kid in self.kids:
            os.close(kid.done_r)
            os.waitpid(kid.pid, 0)
        self.kids = []
        self.runs.clear()
        self.view.release()
        try:
            self.mm.close()
        except BufferError:       # a view is still held (a traceback): unmapped when collected
            pass
