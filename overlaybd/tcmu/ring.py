"""The TCMU command ring: parsing entries out of the shared mapping and writing completions.

Two cursors walk the ring.  ``next`` is where the next unparsed entry starts (from the
mailbox's ``cmd_tail`` at open up to the kernel's ``cmd_head``); the mailbox's ``cmd_tail`` is
where the next completion goes.  Completions may come in any order (the kernel announces
out-of-order completion): each one is written into the first CMD slot at ``cmd_tail`` with that
slot's ``cmd_id`` overwritten, then ``cmd_tail`` moves past the slot.  PAD entries (and entries
of unknown type, which get ``uflags |= UNKNOWN_OP``) are skipped by both cursors.  The caller
kicks the kernel (writes 4 bytes to the uio fd) once per batch: ``take_kick()`` says whether a
completion was written since the last kick.

:meth:`CommandRing.walk` is the one walker of new entries: a CMD entry is first offered to a fast
handler (overlaybd.tcmu.fastread's fused READ), which may run it to a GOOD completion in place;
every other command is parsed (:meth:`CommandRing.parse_entry`) and handed to the generic path.
"""

from ..abi import tcmu as T
from ..abi.scsi import cdb_length
from ..errors import FormatError

_U32 = T.U32.unpack_from
_U16 = T.U16.unpack_from
_SET_U32 = T.U32.pack_into
_MB_HEAD, _MB_TAIL = T.MB_CMD_HEAD, T.MB_CMD_TAIL
_LEN_MASK, _OP_MASK, _OP_CMD = ~T.OP_MASK, T.OP_MASK, T.OP_CMD
_SKIP = (T.OP_PAD, T.OP_TMR)
_STATUS, _CMD_ID = T.RSP_STATUS, T.ENT_CMD_ID
TAKEN = 2       # a walk handler's answer for a command it started (see CommandRing.walk)


class Command:
    """One SCSI command parsed from the ring."""

    __slots__ = ("cdb", "cmd_id", "iovs")

    def __init__(self, cmd_id, cdb, iovs):
        self.cmd_id = cmd_id
        self.cdb = cdb          # bytes
        self.iovs = iovs        # [(offset in the mapping, length)]

    @property
    def data_len(self):
        return sum(n for _, n in self.iovs)

    def __repr__(self):
        return f"Command(id={self.cmd_id}, op=0x{self.cdb[0]:02x}, iovs={self.iovs})"


class CommandRing:
    """The mailbox and command ring of one device, over ``buf`` (an mmap or bytearray)."""

    def __init__(self, buf, name="tcmu"):
        self.name = name
        self.buf = buf
        self.size = len(buf)
        if self.size < T.MAILBOX_SIZE:
            raise FormatError(f"mapping of {self.size} bytes is smaller than the mailbox",
                              path=name, field="map0/size")
        version, self.flags, self.cmdr_off, self.cmdr_size, _ = T.MAILBOX_HEAD.unpack_from(buf, 0)
        if version != T.MAILBOX_VERSION:
            raise FormatError(f"mailbox version {version}, expected {T.MAILBOX_VERSION}",
                              path=name, field="version")
        if (self.cmdr_off < T.MAILBOX_SIZE // 2 or self.cmdr_size < T.ENTRY_SIZE
                or self.cmdr_off + self.cmdr_size > self.size):
            raise FormatError(f"command ring {self.cmdr_off}+{self.cmdr_size} outside the "
                              f"{self.size}-byte mapping", path=name, field="cmdr_off")
        self.next = self._tail()
        self.inflight = 0          # CMD entries parsed but not completed
        self._dirty = False

    # ---- mailbox words ----
    def _head(self):
        return T.U32.unpack_from(self.buf, T.MB_CMD_HEAD)[0]

    def _tail(self):
        return T.U32.unpack_from(self.buf, T.MB_CMD_TAIL)[0]

    def entry_header(self, pos):
        """(length, op) of the entry at ring position ``pos``, checked."""
        word = T.U32.unpack_from(self.buf, self.cmdr_off + pos)[0]
        length, op = T.hdr_len(word), T.hdr_op(word)
        if length == 0 or length % T.OP_ALIGN_SIZE or pos + length > self.cmdr_size:
            raise FormatError(f"ring entry at {pos} has length {length}", path=self.name,
                              field="len_op")
        return length, op

    def _check_range(self, off, n, what):
        if off < 0 or n < 0 or off + n > self.size:
            raise FormatError(f"{what} {off}+{n} outside the {self.size}-byte mapping",
                              path=self.name, field=what)

    def pending(self):
        """True if the kernel queued entries not yet parsed."""
        return self._head() != self.next

    def fetch(self):
        """Parse every new entry up to the kernel's head; returns the CMD entries."""
        out = []
        self.walk(None, out.append)
        return out

    def walk(self, fast, dispatch):
        """Run every new entry up to the kernel's head, in ring order.  A CMD entry goes to
        ``fast(ent, length)`` first (``ent``: its offset in the mapping), which returns True
        when it has run the command and its data is in place: it is then completed GOOD here;
        or ``TAKEN`` when it has started the command, which its owner completes later.
        Otherwise (or with ``fast`` None) it is parsed and ``dispatch(Command)`` runs it.
        Raises FormatError on a corrupt ring (the entries before the corrupt one have run)."""
        buf, size = self.buf, self.cmdr_size
        cmdr_off = self.cmdr_off
        head = _U32(buf, _MB_HEAD)[0]
        if head >= size:
            raise FormatError(f"cmd_head {head} beyond ring size {size}",
                              path=self.name, field="cmd_head")
        nxt = self.next
        done = 0
        while nxt != head:
            ent = cmdr_off + nxt
            word = _U32(buf, ent)[0]
            length = word & _LEN_MASK
            if length == 0 or length % T.OP_ALIGN_SIZE or nxt + length > size:
                self.entry_header(nxt)          # raises the FormatError
            op = word & _OP_MASK
            if op == _OP_CMD:
                ran = fast(ent, length) if fast is not None else False
                if ran is TAKEN:                        # started: completed later, by complete()
                    self.inflight += 1
                elif ran:
                    if _U32(buf, _MB_TAIL)[0] == nxt:   # the usual case: nothing older pending
                        buf[ent + _STATUS] = 0
                        _SET_U32(buf, _MB_TAIL, (nxt + length) % size)
                    else:
                        self.inflight += 1
                        self.complete(_U16(buf, ent + _CMD_ID)[0], 0)
                    done += 1
                else:
                    cmd = self.parse_entry(ent, length)
                    self.inflight += 1
                    self.next = nxt = (nxt + length) % size
                    dispatch(cmd)
                    continue
            elif op not in _SKIP:
                buf[ent + T.ENT_UFLAGS] = buf[ent + T.ENT_UFLAGS] | T.UFLAG_UNKNOWN_OP
            self.next = nxt = (nxt + length) % size
        if done:
            self._dirty = True
        return done

    def parse_entry(self, ent, length):
        """The Command in the CMD entry at mapping offset ``ent`` (``length`` bytes), checked."""
        buf = self.buf
        cmd_id = T.U16.unpack_from(buf, ent + T.ENT_CMD_ID)[0]
        iov_cnt, bidi, dif = T.REQ_COUNTS.unpack_from(buf, ent + T.REQ_IOV_CNT)
        n_iov = iov_cnt + bidi + dif
        if T.cmd_base_size(n_iov) > length:
            raise FormatError(f"entry of {length} bytes cannot hold {n_iov} iovecs",
                              path=self.name, field="iov_cnt")
        cdb_off = T.U64.unpack_from(buf, ent + T.REQ_CDB_OFF)[0]
        self._check_range(cdb_off, 1, "cdb_off")
        clen = cdb_length(buf[cdb_off]) or 16
        if buf[cdb_off] == 0x7F:
            self._check_range(cdb_off, 8, "cdb_off")
            clen = 8 + buf[cdb_off + 7]
        clen = min(clen, self.size - cdb_off)
        cdb = bytes(buf[cdb_off:cdb_off + clen])
        iovs = []
        p = ent + T.REQ_IOV
        for _ in range(iov_cnt):
            base, n = T.IOVEC.unpack_from(buf, p)
            self._check_range(base, n, "iov_base")
            iovs.append((base, n))
            p += T.IOVEC_SIZE
        return Command(cmd_id, cdb, iovs)

    def complete(self, cmd_id, status, sense=b"", read_len=None):
        """Write the completion of ``cmd_id`` into the slot at the mailbox tail and advance it.
        ``read_len``: the bytes of data-in the reply holds when that is less than the
        command's buffers; the kernel then sends only those (and reports the residual)."""
        if self.inflight <= 0:
            raise FormatError(f"completion of command {cmd_id} with none in flight",
                              path=self.name, field="cmd_tail")
        buf = self.buf
        tail = self._tail()
        while True:
            length, op = self.entry_header(tail)
            if op == T.OP_CMD:
                break
            tail = (tail + length) % self.cmdr_size
        ent = self.cmdr_off + tail
        T.U16.pack_into(buf, ent + T.ENT_CMD_ID, cmd_id)
        buf[ent + T.RSP_STATUS] = status
        if read_len is not None and self.flags & T.MB_FLAG_CAP_READ_LEN:
            T.U32.pack_into(buf, ent + T.RSP_READ_LEN, read_len)
            buf[ent + T.ENT_UFLAGS] = buf[ent + T.ENT_UFLAGS] | T.UFLAG_READ_LEN
        if sense or status:
            s = ent + T.RSP_SENSE
            buf[s:s + T.SENSE_BUFFERSIZE] = sense[:T.SENSE_BUFFERSIZE].ljust(T.SENSE_BUFFERSIZE, b"\0")
        self.inflight -= 1
        T.U32.pack_into(buf, T.MB_CMD_TAIL, (tail + length) % self.cmdr_size)
        self._dirty = True

    def mark_dirty(self):
        """Completions were written into the ring directly (overlaybd.tcmu.fastread)."""
        self._dirty = True

    def take_kick(self):
        """True (once) if completions were written since the last call: time to kick."""
        dirty, self._dirty = self._dirty, False
        return dirty

    # ---- data area ----
    def gather(self, iovs, limit=None):
        """The bytes of ``iovs`` (data-out), at most ``limit``."""
        parts, left = [], (limit if limit is not None else 1 << 62)
        for base, n in iovs:
            n = min(n, left)
            parts.append(bytes(self.buf[base:base + n]))
            left -= n
            if not left:
                break
        return b"".join(parts)

    def scatter(self, iovs, data, clear=False):
        """Copy ``data`` into ``iovs`` (data-in); returns the bytes copied.  ``clear``: zero
        the buffer bytes past the data, so that a kernel that ignores ``read_len`` still sends
        nothing left over from an earlier command."""
        mv = memoryview(data)
        done = 0
        for base, n in iovs:
            k = min(n, len(mv) - done)
            if k > 0:
                self.buf[base:base + k] = mv[done:done + k]
                done += k
            elif not clear:
                break
            if clear and k < n:
                k = max(k, 0)
                self.buf[base + k:base + n] = bytes(n - k)
        return done
