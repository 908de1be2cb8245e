"""The fused path for READ(10) and READ(16) when the engine runs inline (``workers: 0``).

``Ring.fetch`` + ``ScsiDisk.execute`` + ``Engine.submit`` + ``Ring.complete`` cost a dozen
objects, dict look-ups and struct unpacks per command; where Python runs slowly (UML) that is
most of a 4 KiB read.  :meth:`FastReads.service` walks the ring itself: a READ(10)/READ(16)
whose CDB, range and iovecs are plainly valid is decoded in place, read straight into the data
area with the backend's ``preadinto`` and completed GOOD in the same pass.  Every other entry,
and every read that is not that simple (out of range, zero length, too few buffer bytes, a
read that raises or comes back short), is parsed by :meth:`Ring.parse_entry` and handed to
the generic path (``dispatch``) unchanged, so status, sense data, retries and logging are
those of the generic path.  Commands are executed in ring order either way.
"""

import struct

from ..abi import scsi as S
from ..abi import tcmu as T
from ..errors import FormatError

_U32 = T.U32.unpack_from
_SET_U32 = T.U32.pack_into
_IOV = T.IOVEC.unpack_from
# a CMD entry's first 64 bytes: len_op, cmd_id, kflags, uflags, iov_cnt, iov_bidi_cnt,
# iov_dif_cnt, (hole), cdb_off, (2 x u64), first iovec (base, len)
_HEAD = struct.Struct("<IHxxIII4xQ16xQQ")
assert _HEAD.size == T.REQ_IOV + T.IOVEC_SIZE
_CMD_HEAD = _HEAD.unpack_from
_READ10 = struct.Struct(">xxIxH").unpack_from       # LBA (bytes 2-5), blocks (7-8)
_READ16 = struct.Struct(">xxQI").unpack_from        # LBA (bytes 2-9), blocks (10-13)
_OP_MASK = T.OP_MASK
_LEN_MASK = ~T.OP_MASK
_OP_CMD = T.OP_CMD
_SKIP = (T.OP_PAD, T.OP_TMR)
_MB_HEAD = T.MB_CMD_HEAD
_MB_TAIL = T.MB_CMD_TAIL
_REQ_IOV = T.REQ_IOV
_STATUS = T.RSP_STATUS
_READ_10 = S.READ_10
_REFUSED = S.RW_PROTECT              # READ(10/16) byte 1: the generic path refuses RDPROTECT
_READ_16 = S.READ_16


class FastReads:
    """One device's ring walker.  ``device`` is the engine's inline device (``.view`` of the
    data area, ``.backend``); ``dispatch(cmd)`` runs one parsed Command the generic way."""

    def __init__(self, ring, disk, device, dispatch):
        self.ring = ring
        self.num_lbas = disk.num_lbas
        self.block_size = disk.block_size
        self.device = device
        self.dispatch = dispatch
        self.fast = 0                   # commands completed here (tests look)

    def service(self):
        """Run every entry the kernel queued.  Raises FormatError on a corrupt ring (the
        entries before the corrupt one have run)."""
        ring = self.ring
        buf = ring.buf
        size = ring.size
        cmdr_off = ring.cmdr_off
        cmdr_size = ring.cmdr_size
        head = _U32(buf, _MB_HEAD)[0]
        if head >= cmdr_size:
            raise FormatError(f"cmd_head {head} beyond ring size {cmdr_size}",
                              path=ring.name, field="cmd_head")
        backend = self.device.backend
        into = getattr(backend, "preadinto", None) if backend is not None else None
        view = self.device.view
        num_lbas = self.num_lbas
        bs = self.block_size
        nxt = ring.next
        done = 0
        while nxt != head:
            ent = cmdr_off + nxt
            word = _U32(buf, ent)[0]
            length = word & _LEN_MASK
            if length == 0 or nxt + length > cmdr_size:
                ring.entry_header(nxt)          # raises the generic path's FormatError
            op = word & _OP_MASK
            if op == _OP_CMD:
                fast = False
                if into is not None and length >= 64:
                    _, cmd_id, iov_cnt, bidi, dif, cdb_off, base, n = _CMD_HEAD(buf, ent)
                    fast = (not bidi and not dif and iov_cnt
                            and _REQ_IOV + 16 * iov_cnt <= length and cdb_off + 16 <= size)
                if fast:
                    fast = False
                    opc = buf[cdb_off]
                    if buf[cdb_off + 1] & _REFUSED:
                        pass                    # RDPROTECT: the generic path refuses it
                    elif opc == _READ_10:
                        lba, nblocks = _READ10(buf, cdb_off)
                        fast = True
                    elif opc == _READ_16:
                        lba, nblocks = _READ16(buf, cdb_off)
                        fast = True
                    if fast and nblocks and lba + nblocks <= num_lbas:
                        want = nblocks * bs
                        if iov_cnt == 1:        # the usual case: one buffer
                            if n < want or base + n > size:
                                fast = False
                            else:
                                try:
                                    fast = into(view[base:base + want], lba * bs) == want
                                except Exception:  # noqa: BLE001 -- the generic path retries
                                    fast = False
                        else:
                            fast = self._read(buf, ent, iov_cnt, size, view, into,
                                              lba * bs, want)
                    else:
                        fast = False
                if fast:
                    tail = _U32(buf, _MB_TAIL)[0]
                    if tail == nxt:             # the usual case: nothing older is pending
                        buf[ent + _STATUS] = 0
                        _SET_U32(buf, _MB_TAIL, (nxt + length) % cmdr_size)
                    else:
                        ring.inflight += 1
                        ring.complete(cmd_id, 0)
                    done += 1
                else:
                    cmd = ring.parse_entry(ent, length)
                    ring.inflight += 1
                    ring.next = nxt = (nxt + length) % cmdr_size
                    self.dispatch(cmd)
                    continue
            elif op not in _SKIP:
                buf[ent + T.ENT_UFLAGS] = buf[ent + T.ENT_UFLAGS] | T.UFLAG_UNKNOWN_OP
            ring.next = nxt = (nxt + length) % cmdr_size
        if done:
            ring.mark_dirty()
            self.fast += done

    @staticmethod
    def _read(buf, ent, iov_cnt, size, view, into, pos, want):
        """Read ``want`` bytes at ``pos`` into the entry's iovecs; False if the generic path
        must run it (too few buffer bytes, an iovec off the map, an error or a short read)."""
        p = ent + _REQ_IOV
        iovs = []
        left = want
        for _ in range(iov_cnt):
            base, n = _IOV(buf, p)
            if base + n > size:
                return False
            if left:
                if n > left:
                    n = left
                iovs.append((base, n))
                left -= n
            p += 16
        if left:
            return False
        try:
            for base, n in iovs:
                if into(view[base:base + n], pos) != n:
                    return False
                pos += n
        except Exception:  # noqa: BLE001
            return False
        return True
