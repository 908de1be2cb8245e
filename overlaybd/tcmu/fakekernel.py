"""An in-process stand-in for the kernel side of one TCMU device.

Same memory layout as Linux 6.1 (mailbox v2, ring at offset 128, data area after the ring,
entries with the CDB stored in the ring right after the iovecs, PAD entries at the wrap), in a
memfd so that the mapping can be shared with other processes exactly like ``/dev/uioN``.
Events travel over a socketpair: ``uio_fd`` is the daemon's end (read 4 bytes = event,
write 4 bytes = kick); the fake kernel keeps the other end.
"""

import mmap
import os
import socket

from ..abi import tcmu as T


class RingFull(Exception):
    pass


class Completion:
    __slots__ = ("cmd_id", "data", "sense", "status", "uflags")

    def __init__(self, cmd_id, status, sense, data, uflags):
        self.cmd_id, self.status, self.sense, self.data, self.uflags = (
            cmd_id, status, sense, data, uflags)

    def __repr__(self):
        return f"Completion(id={self.cmd_id}, status={self.status}, sense={self.sense[:18].hex()})"


class FakeKernel:
    """``submit()`` queues a command like the kernel does; ``reap()`` collects completions."""

    def __init__(self, cmdr_size=64 * 1024 - T.MAILBOX_SIZE, data_size=4 << 20,
                 block_size=4096, flags=T.MB_FLAG_CAP_OOOC | T.MB_FLAG_CAP_READ_LEN, edge=False):
        self.edge = edge
        self.cmdr_off = T.MAILBOX_SIZE
        self.cmdr_size = cmdr_size
        self.data_off = self.cmdr_off + cmdr_size
        self.block_size = block_size
        self.map_size = self.data_off + data_size
        self.map_fd = os.memfd_create("fake-tcmu", os.MFD_CLOEXEC)
        os.ftruncate(self.map_fd, self.map_size)
        self.mm = mmap.mmap(self.map_fd, self.map_size)
        T.MAILBOX_HEAD.pack_into(self.mm, 0, T.MAILBOX_VERSION, flags, self.cmdr_off,
                                 cmdr_size, 0)
        T.U32.pack_into(self.mm, T.MB_CMD_TAIL, 0)
        self.head = 0
        self.last_cleaned = 0
        self.free = list(range(data_size // block_size))
        self.cmds = {}
        self._next_id = 1
        self.uio_fd, self._ksock = self._pair()
        self.kicks = 0
        self.pads = 0             # PAD entries written at the wrap

    @staticmethod
    def _pair():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        a.setblocking(False)     # a real uio fd never blocks on a kick: unread kicks coalesce
        fd = a.detach()
        os.set_inheritable(fd, False)
        b.setblocking(False)
        return fd, b

    # ---- submitting ----
    def _used(self):
        return (self.head - self.last_cleaned) % self.cmdr_size

    def _alloc(self, nbytes, split):
        nblocks = -(-nbytes // self.block_size)
        if nblocks > len(self.free):
            raise RingFull("data area full")
        blocks = sorted(self.free[:nblocks])
        del self.free[:nblocks]
        iovs, left = [], nbytes
        for b in blocks:
            off = self.data_off + b * self.block_size
            n = min(self.block_size, left)
            if iovs and iovs[-1][0] + iovs[-1][1] == off and (not split or iovs[-1][1] + n <= split):
                iovs[-1] = (iovs[-1][0], iovs[-1][1] + n)
            else:
                iovs.append((off, n))
            left -= n
        return blocks, iovs

    def submit(self, cdb, data_out=b"", data_in_len=0, split=None, notify=True, cmd_id=None):
        """Queue a command; returns its cmd_id.  ``split`` caps each iovec's length."""
        cdb = bytes(cdb)
        nbytes = max(len(data_out), data_in_len)
        blocks, iovs = self._alloc(nbytes, split) if nbytes else ([], [])
        base = T.cmd_base_size(len(iovs))
        size = max(T.ENTRY_SIZE, -(-(base + len(cdb)) // T.OP_ALIGN_SIZE) * T.OP_ALIGN_SIZE)
        pad = self.cmdr_size - self.head if self.head + size > self.cmdr_size else 0
        if self._used() + pad + size >= self.cmdr_size:
            self.free.extend(blocks)
            raise RingFull("command ring full")
        mm = self.mm
        if pad:
            ent = self.cmdr_off + self.head
            T.ENT_HDR.pack_into(mm, ent, T.len_op(pad, T.OP_PAD), 0, 0, 0)
            self.head = 0
            self.pads += 1
        if cmd_id is None:
            cmd_id = self._next_id
            self._next_id = self._next_id % 0xFFFF + 1
        ent = self.cmdr_off + self.head
        mm[ent:ent + size] = bytes(size)
        T.ENT_HDR.pack_into(mm, ent, T.len_op(size, T.OP_CMD), cmd_id, 0, 0)
        T.REQ_COUNTS.pack_into(mm, ent + T.REQ_IOV_CNT, len(iovs), 0, 0)
        cdb_off = ent + base
        mm[cdb_off:cdb_off + len(cdb)] = cdb
        T.U64.pack_into(mm, ent + T.REQ_CDB_OFF, cdb_off)
        for i, (off, n) in enumerate(iovs):
            T.IOVEC.pack_into(mm, ent + T.REQ_IOV + i * T.IOVEC_SIZE, off, n)
        pos = 0
        for off, n in iovs:
            chunk = data_out[pos:pos + n]
            mm[off:off + len(chunk)] = chunk
            if len(chunk) < n:   # the kernel hands out whatever the pages held: make it visible
                mm[off + len(chunk):off + n] = b"\xa5" * (n - len(chunk))
            pos += n
        self.cmds[cmd_id] = (blocks, iovs, data_in_len)
        self.head = (self.head + size) % self.cmdr_size
        T.U32.pack_into(mm, T.MB_CMD_HEAD, self.head)
        if notify:
            self.notify()
        return cmd_id

    def submit_raw(self, length, op):
        """Queue a bare entry of type ``op`` (e.g. an unknown one); returns its ring position."""
        pos = self.head
        ent = self.cmdr_off + pos
        T.ENT_HDR.pack_into(self.mm, ent, T.len_op(length, op), 0, 0, 0)
        self.head = (self.head + length) % self.cmdr_size
        T.U32.pack_into(self.mm, T.MB_CMD_HEAD, self.head)
        return pos

    def uflags_at(self, pos):
        return self.mm[self.cmdr_off + pos + T.ENT_UFLAGS]

    def notify(self):
        """Raise a uio event (what the kernel does after queueing); events coalesce."""
        try:
            self._ksock.send(b"\1\0\0\0")
        except BlockingIOError:
            pass

    # ---- completing ----
    def count_kicks(self):
        """Drain the daemon's kicks; returns how many arrived since the last call."""
        n = 0
        while True:
            try:
                self._ksock.recv(4)
            except BlockingIOError:
                break
            n += 1
        self.kicks += n
        return n

    def reap(self):
        """Consume completed entries from ``last_cleaned`` up to the mailbox tail."""
        out = []
        mm = self.mm
        tail = T.U32.unpack_from(mm, T.MB_CMD_TAIL)[0]
        while self.last_cleaned != tail:
            ent = self.cmdr_off + self.last_cleaned
            word, cmd_id, _, uflags = T.ENT_HDR.unpack_from(mm, ent)
            length = T.hdr_len(word)
            if T.hdr_op(word) == T.OP_CMD:
                blocks, iovs, data_in_len = self.cmds.pop(cmd_id)
                status = mm[ent + T.RSP_STATUS]
                sense = bytes(mm[ent + T.RSP_SENSE:ent + T.RSP_SENSE + T.SENSE_BUFFERSIZE])
                data = b"".join(bytes(mm[o:o + n]) for o, n in iovs)[:data_in_len]
                if uflags & T.UFLAG_READ_LEN:       # the kernel sends only read_len bytes
                    data = data[:T.U32.unpack_from(mm, ent + T.RSP_READ_LEN)[0]]
                self.free.extend(blocks)
                out.append(Completion(cmd_id, status, sense, data, uflags))
            self.last_cleaned = (self.last_cleaned + length) % self.cmdr_size
        return out

    def handle(self):
        """What the daemon uses in place of an open /dev/uioN."""
        return FakeHandle(self)

    def close(self):
        self.mm.close()
        os.close(self.map_fd)
        os.close(self.uio_fd)
        self._ksock.close()


class FakeHandle:
    """The daemon's view of a fake device (same attributes as ``uio.UioHandle``)."""

    def __init__(self, kernel):
        self.mm = kernel.mm
        self.map_fd = kernel.map_fd
        self.event_fd = kernel.uio_fd
        # Events are bytes in a socket: read by default.  edge=True takes the real uio path
        # (never read); the bytes then pile up, which suits short tests only.
        self.edge = kernel.edge
        self.size = kernel.map_size
        self.closed = False

    def close(self):
        self.closed = True
