"""The engine's command codes: operations and completion statuses (docs/engine.md).

Both sides speak them: the SCSI side (``overlaybd.tcmu``) turns CDBs into operations and
statuses into sense data; the engine (``overlaybd.workers``) carries them in its shared-memory
descriptors (``overlaybd.shm.descriptor``).  They live here so that neither imports the other.
"""

OP_READ = 1
OP_WRITE = 2
OP_FLUSH = 3
OP_DISCARD = 4
OP_WRITE_SAME = 5      # iovecs hold one block, written over every block of the range
OP_COMPARE_WRITE = 6   # iovecs hold 2 x length: compare with the medium, then write if equal
OP_VERIFY = 7          # iovecs hold length bytes, compared with the medium
OP_COPY_IN = 8         # READ into the device's scratch area (iovecs are scratch offsets)
OP_COPY_OUT = 9        # WRITE from the device's scratch area (EXTENDED COPY: IN, then OUT)
OPS = {OP_READ: "READ", OP_WRITE: "WRITE", OP_FLUSH: "FLUSH", OP_DISCARD: "DISCARD",
       OP_WRITE_SAME: "WRITE_SAME", OP_COMPARE_WRITE: "COMPARE_AND_WRITE", OP_VERIFY: "VERIFY",
       OP_COPY_IN: "COPY_IN", OP_COPY_OUT: "COPY_OUT"}
SCRATCH_OPS = (OP_COPY_IN, OP_COPY_OUT)
SCRATCH_SIZE = 1 << 20  # bytes of a device's scratch area (a memfd every process maps)

ST_GOOD = 0
ST_READ_ERR = 1        # MEDIUM ERROR, unrecovered read error (0x03/0x1100)
ST_WRITE_ERR = 2       # MEDIUM ERROR, write error (0x03/0x0C00)
ST_WRITE_PROTECT = 3   # the device has no writable upper (ILLEGAL REQUEST 0x05/0x3005)
ST_FLUSH_ERR = 4       # SYNCHRONIZE CACHE failed (MEDIUM ERROR, write error)
ST_MISCOMPARE = 5      # MISCOMPARE (0x0E/0x1D00); bits 8-31 hold the byte offset of the first
                       # difference from the start of the part (see miscompare())
STATUSES = {ST_GOOD: "GOOD", ST_READ_ERR: "READ_ERR", ST_WRITE_ERR: "WRITE_ERR",
            ST_WRITE_PROTECT: "WRITE_PROTECT", ST_FLUSH_ERR: "FLUSH_ERR",
            ST_MISCOMPARE: "MISCOMPARE"}
MISCOMPARE_MAX_OFFSET = (1 << 24) - 1


def miscompare(offset: int) -> int:
    """The status of a compare that differs first at byte ``offset`` (capped at 2^24 - 1: the
    status word is 32 bits; parts are at most a chunk, commands beyond 16 MiB report the cap)."""
    return ST_MISCOMPARE | min(offset, MISCOMPARE_MAX_OFFSET) << 8


def status_kind(status: int) -> int:
    """``status`` without the miscompare offset."""
    return status & 0xFF

# The status a part gets when it cannot run at all (device unknown or failed to open).
FAILED = {OP_READ: ST_READ_ERR, OP_WRITE: ST_WRITE_ERR, OP_FLUSH: ST_FLUSH_ERR,
          OP_DISCARD: ST_WRITE_ERR, OP_WRITE_SAME: ST_WRITE_ERR, OP_COMPARE_WRITE: ST_WRITE_ERR,
          OP_VERIFY: ST_READ_ERR, OP_COPY_IN: ST_READ_ERR, OP_COPY_OUT: ST_WRITE_ERR}
