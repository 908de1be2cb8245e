"""Operation and status codes shared by the TCMU side and the engine (docs/engine.md)."""

OP_READ = 1
OP_WRITE = 2
OP_FLUSH = 3
OP_DISCARD = 4
OPS = {OP_READ: "READ", OP_WRITE: "WRITE", OP_FLUSH: "FLUSH", OP_DISCARD: "DISCARD"}

ST_GOOD = 0
ST_READ_ERR = 1        # MEDIUM ERROR, unrecovered read error (0x03/0x1100)
ST_WRITE_ERR = 2       # MEDIUM ERROR, write error (0x03/0x0C00)
ST_WRITE_PROTECT = 3   # the device has no writable upper (ILLEGAL REQUEST 0x05/0x3005)
ST_FLUSH_ERR = 4       # SYNCHRONIZE CACHE failed (MEDIUM ERROR, write error)
STATUSES = {ST_GOOD: "GOOD", ST_READ_ERR: "READ_ERR", ST_WRITE_ERR: "WRITE_ERR",
            ST_WRITE_PROTECT: "WRITE_PROTECT", ST_FLUSH_ERR: "FLUSH_ERR"}

# The status a part gets when it cannot run at all (device unknown or failed to open).
FAILED = {OP_READ: ST_READ_ERR, OP_WRITE: ST_WRITE_ERR, OP_FLUSH: ST_FLUSH_ERR,
          OP_DISCARD: ST_WRITE_ERR}
