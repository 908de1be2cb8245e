"""The TCMU userspace ABI (linux/target_core_user.h, mailbox version 2) as seen on Linux 6.1.

The kernel shares one mapping per device (``/dev/uioN``, size in
``/sys/class/uio/uioN/maps/map0/size``): a mailbox at offset 0, the command ring at
``cmdr_off`` (``cmdr_size`` bytes) and the data area after it.  Offsets below are bytes from
the start of the mailbox or of a ring entry; they were checked against a live 6.1 kernel (the
request struct inside the entry union is *not* packed: a 4-byte hole sits before ``cdb_off``).
All integers are little-endian.
"""

import struct

MAILBOX_VERSION = 2
ALIGN_SIZE = 64

# mailbox flags (capabilities the kernel announces)
MB_FLAG_CAP_OOOC = 1 << 0        # out-of-order completion
MB_FLAG_CAP_READ_LEN = 1 << 1
MB_FLAG_CAP_TMR = 1 << 2
MB_FLAG_CAP_KEEP_BUF = 1 << 3

# mailbox: {u16 version, u16 flags, u32 cmdr_off, u32 cmdr_size, u32 cmd_head,
#           u32 cmd_tail (on its own 64-byte cache line)}
MAILBOX_HEAD = struct.Struct("<HHIII")   # version, flags, cmdr_off, cmdr_size, cmd_head
MB_VERSION = 0
MB_FLAGS = 2
MB_CMDR_OFF = 4
MB_CMDR_SIZE = 8
MB_CMD_HEAD = 12
MB_CMD_TAIL = 64
MAILBOX_SIZE = 128               # what the kernel reserves before the ring (cmdr_off)

# entry header {u32 len_op, u16 cmd_id, u8 kflags, u8 uflags}
ENT_HDR = struct.Struct("<IHBB")
ENT_LEN_OP = 0
ENT_CMD_ID = 4
ENT_KFLAGS = 6
ENT_UFLAGS = 7
OP_MASK = 0x7
OP_PAD = 0
OP_CMD = 1
OP_TMR = 2
UFLAG_UNKNOWN_OP = 0x1
UFLAG_READ_LEN = 0x2
UFLAG_KEEP_BUF = 0x4
OP_ALIGN_SIZE = 8                # every entry length is a multiple of 8

# request {u32 iov_cnt, u32 iov_bidi_cnt, u32 iov_dif_cnt, <hole>, u64 cdb_off, u64, u64, iov[]}
REQ_COUNTS = struct.Struct("<III")
REQ_IOV_CNT = 8
REQ_IOV_BIDI_CNT = 12
REQ_IOV_DIF_CNT = 16
REQ_CDB_OFF = 24
REQ_IOV = 48
# struct iovec {void *iov_base (an offset from the start of the mapping); size_t iov_len}
IOVEC = struct.Struct("<QQ")
IOVEC_SIZE = 16

# response {u8 scsi_status, u8, u16, u32 read_len, char sense[96]} overlaying the request
RSP_STATUS = 8
RSP_READ_LEN = 12
RSP_SENSE = 16
SENSE_BUFFERSIZE = 96
ENTRY_SIZE = RSP_SENSE + SENSE_BUFFERSIZE    # sizeof(struct tcmu_cmd_entry) = 112

U32 = struct.Struct("<I")
U16 = struct.Struct("<H")
U64 = struct.Struct("<Q")


def len_op(length, op):
    """Pack an entry's ``len_op`` word (length is a multiple of 8, op in the low 3 bits)."""
    return (length & ~OP_MASK) | (op & OP_MASK)


def hdr_len(word):
    return word & ~OP_MASK


def hdr_op(word):
    return word & OP_MASK


def cmd_base_size(iov_cnt):
    """Bytes of a CMD entry before its CDB: header, request and ``iov_cnt`` iovecs."""
    return REQ_IOV + IOVEC_SIZE * iov_cnt


# ---- generic netlink family "TCM-USER" ----------------------------------------------------
GENL_FAMILY = "TCM-USER"
GENL_MCGRP_CONFIG = "config"
GENL_VERSION = 2

CMD_UNSPEC = 0
CMD_ADDED_DEVICE = 1
CMD_REMOVED_DEVICE = 2
CMD_RECONFIG_DEVICE = 3
CMD_ADDED_DEVICE_DONE = 4
CMD_REMOVED_DEVICE_DONE = 5
CMD_RECONFIG_DEVICE_DONE = 6
CMD_SET_FEATURES = 7
DONE_OF = {CMD_ADDED_DEVICE: CMD_ADDED_DEVICE_DONE,
           CMD_REMOVED_DEVICE: CMD_REMOVED_DEVICE_DONE,
           CMD_RECONFIG_DEVICE: CMD_RECONFIG_DEVICE_DONE}

ATTR_UNSPEC = 0
ATTR_DEVICE = 1          # string: the uio name "tcm-user/<hba>/<dev>/<cfgstring>"
ATTR_MINOR = 2           # u32: uio minor -> /dev/uio<minor>
ATTR_PAD = 3
ATTR_DEV_CFG = 4         # string (reconfig)
ATTR_DEV_SIZE = 5        # u64 (reconfig)
ATTR_WRITECACHE = 6      # u8 (reconfig)
ATTR_CMD_STATUS = 7      # s32: reply status (0 or -errno)
ATTR_DEVICE_ID = 8       # u32: the se_device index the reply refers to
ATTR_SUPP_KERN_CMD_REPLY = 9   # u8: SET_FEATURES: the daemon replies to commands

# module parameters and per-device configfs actions used by the daemon
MODULE_PARAMS = "/sys/module/target_core_user/parameters"
UIO_NAME_PREFIX = "tcm-user"
