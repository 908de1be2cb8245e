"""The fused paths for READ(10) and READ(16): run in place when the engine is inline
(:class:`FastReads`), handed to the workers without the generic parse when it is not
(:class:`FastSubmit`).

``CommandRing.parse_entry`` + ``ScsiDisk.execute`` + ``Engine.submit`` + ``CommandRing.complete`` cost a dozen
objects, dict look-ups and struct unpacks per command; where Python runs slowly (UML) that is
most of a 4 KiB read.  :class:`FastReads` is the fast handler of :meth:`CommandRing.walk`: a
READ(10)/READ(16) whose CDB, range and iovecs are plainly valid is decoded in place and read
straight into the data area with the backend's ``preadinto``; the walker then completes it
GOOD.  Every other entry, and every read that is not that simple (out of range, zero length,
RDPROTECT set, too few buffer bytes, a read that raises or comes back short), is declined and
goes the generic way, so status, sense data, retries and logging are those of the generic
path.  Commands are executed in ring order either way.

With workers, :class:`FastSubmit` decodes the same simple READs and gives them to
``Engine.submit`` itself; :meth:`CommandRing.walk` counts them in flight (``TAKEN``), and they
complete through the generic completion (``Daemon._on_complete``).
"""

import struct

from ..abi import scsi as S
from ..abi import tcmu as T
from ..abi.ops import OP_READ as _OP_READ
from ..errors import OverlaybdError
from .ring import TAKEN

_IOV = T.IOVEC.unpack_from
_CMD_ID = T.U16.unpack_from
_ENT_CMD_ID = T.ENT_CMD_ID
# a CMD entry's first 64 bytes: len_op, cmd_id, kflags, uflags, iov_cnt, iov_bidi_cnt,
# iov_dif_cnt, (hole), cdb_off, (2 x u64), first iovec (base, len)
_HEAD = struct.Struct("<IHxxIII4xQ16xQQ")
assert _HEAD.size == T.REQ_IOV + T.IOVEC_SIZE
_CMD_HEAD = _HEAD.unpack_from
_READ10 = struct.Struct(">xxIxH").unpack_from       # LBA (bytes 2-5), blocks (7-8)
_READ16 = struct.Struct(">xxQI").unpack_from        # LBA (bytes 2-9), blocks (10-13)
_REQ_IOV = T.REQ_IOV
_READ_10 = S.READ_10
_READ_16 = S.READ_16
_REFUSED = S.RW_PROTECT              # READ(10/16) byte 1: the generic path refuses RDPROTECT


class _SimpleReads:
    """What both handlers share: deciding whether a CMD entry is a plain READ, and where its
    data goes."""

    def __init__(self, ring, disk):
        self.buf, self.size = ring.buf, ring.size
        self.num_lbas, self.block_size = disk.num_lbas, disk.block_size
        self.fast = 0                   # commands this handler took (tests look)

    def decode(self, ent, length):
        """``(byte offset, bytes, base, iovecs)`` of the CMD entry at ``ent`` if it is a READ(10)
        or READ(16) of one or more blocks in range, without RDPROTECT, bidi or DIF buffers,
        whose iovecs hold the data inside the mapping; None otherwise.  With one buffer (the
        usual case) the data goes at ``base`` and ``iovecs`` is None; else ``iovecs`` lists
        the pieces."""
        if length < 64:
            return None
        buf = self.buf
        _, _, iov_cnt, bidi, dif, cdb_off, base, n = _CMD_HEAD(buf, ent)
        if bidi or dif or not iov_cnt or _REQ_IOV + 16 * iov_cnt > length \
                or cdb_off + 16 > self.size:
            return None
        opc = buf[cdb_off]
        if opc == _READ_10:
            lba, nblocks = _READ10(buf, cdb_off)
        elif opc == _READ_16:
            lba, nblocks = _READ16(buf, cdb_off)
        else:
            return None
        if buf[cdb_off + 1] & _REFUSED or not nblocks or lba + nblocks > self.num_lbas:
            return None
        bs = self.block_size
        want = nblocks * bs
        if iov_cnt == 1:                # the usual case: one buffer
            if n < want or base + n > self.size:
                return None
            return lba * bs, want, base, None
        iovs = self._buffers(ent, iov_cnt, want)
        return None if iovs is None else (lba * bs, want, 0, iovs)

    def _buffers(self, ent, iov_cnt, want):
        """The entry's iovecs cut to ``want`` bytes; None if they hold less or one is off the
        map."""
        buf, size = self.buf, self.size
        p = ent + _REQ_IOV
        iovs = []
        left = want
        for _ in range(iov_cnt):
            base, n = _IOV(buf, p)
            if base + n > size:
                return None
            if left:
                if n > left:
                    n = left
                iovs.append((base, n))
                left -= n
            p += 16
        return None if left else iovs


class FastReads(_SimpleReads):
    """One device's fused READ handler for ``ring.walk(fast, dispatch)``.  ``device`` is the
    engine's inline device (``.view`` of the data area, ``.backend``)."""

    def __init__(self, ring, disk, device):
        super().__init__(ring, disk)
        self.device = device
        self._backend = self._into = None   # the backend's bound preadinto, looked up once

    def __call__(self, ent, length):
        """Run the CMD entry at ``ent`` if it is a simple READ; True if it did (False: the
        generic path runs it, e.g. after a read that raised or came back short)."""
        read = self.decode(ent, length)
        if read is None:
            return False
        backend = self.device.backend
        if backend is not self._backend:    # (re)opened: look its preadinto up once, not per read
            self._backend = backend
            self._into = getattr(backend, "preadinto", None) if backend is not None else None
        into = self._into
        if into is None:
            return False
        pos, want, base, iovs = read
        view = self.device.view
        try:
            if iovs is None:
                if into(view[base:base + want], pos) != want:
                    return False
            else:
                for base, n in iovs:
                    if into(view[base:base + n], pos) != n:
                        return False
                    pos += n
        except Exception:  # noqa: BLE001 -- the generic path retries and reports
            return False
        self.fast += 1
        return True


class FastSubmit(_SimpleReads):
    """One device's fused READ hand-off for ``ring.walk(fast, dispatch)`` when the engine has
    workers: a simple READ goes to ``engine.submit`` straight from the ring entry."""

    def __init__(self, ring, disk, engine, dev):
        super().__init__(ring, disk)
        self.submit = engine.submit
        self.dev = dev

    def __call__(self, ent, length):
        """Start the CMD entry at ``ent`` if it is a simple READ; TAKEN if it did."""
        read = self.decode(ent, length)
        if read is None:
            return False
        pos, want, base, iovs = read
        try:
            self.submit(self.dev, _CMD_ID(self.buf, ent + _ENT_CMD_ID)[0], _OP_READ, pos, want,
                        ((base, want),) if iovs is None else iovs)
        except OverlaybdError:          # refused before anything started: the generic path
            return False                # answers it (and logs why)
        self.fast += 1
        return TAKEN
