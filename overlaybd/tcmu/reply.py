"""What a SCSI command turns into: a :class:`Reply` the handler gives itself (status, sense,
data-in bytes), or an :class:`Io` for the engine; the canned replies; and the SCSI answer to
an engine status (overlaybd.abi.ops.ST_*)."""

from ..abi import scsi as S
from ..abi.ops import (
    ST_FLUSH_ERR,
    ST_GOOD,
    ST_MISCOMPARE,
    ST_READ_ERR,
    ST_WRITE_ERR,
    ST_WRITE_PROTECT,
    status_kind,
)


class Reply:
    """A command answered without I/O."""

    __slots__ = ("data", "sense", "status")

    def __init__(self, status=S.GOOD, sense=b"", data=b""):
        self.status, self.sense, self.data = status, sense, data

    def __repr__(self):
        return f"Reply(status={self.status}, sense={self.sense.hex()}, data={len(self.data)}B)"


class Io:
    """Block I/O for the engine: ``op`` over ``ranges`` [(byte offset, byte length)] (one
    engine command each, in turn), with the first ``data_len`` bytes of the command's buffers
    (data in or out), then, if ``then`` is set, that operation (OP_FLUSH after a FUA write).
    ``steps`` [(op, offset, length, scratch iovecs)], if given, follow instead of ``ranges[1:]``
    and ``then`` (EXTENDED COPY: chunks in and out of the device's scratch area)."""

    __slots__ = ("data_len", "op", "ranges", "steps", "then")

    def __init__(self, op, ranges, data_len=0, then=None, steps=None):
        self.op, self.ranges, self.data_len, self.then = op, ranges, data_len, then
        self.steps = steps

    def __repr__(self):
        return (f"Io(op={self.op}, ranges={self.ranges}, data_len={self.data_len}, "
                f"then={self.then}, steps={len(self.steps or ())})")


def check(key, asc, information=None):
    return Reply(S.CHECK_CONDITION, S.fixed_sense(key, asc, information))


GOOD = Reply()
INVALID_OPCODE = check(S.ILLEGAL_REQUEST, S.ASC_INVALID_OPCODE)
INVALID_CDB = check(S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_CDB)
INVALID_PARAM_LIST = check(S.ILLEGAL_REQUEST, S.ASC_INVALID_FIELD_IN_PARAM_LIST)
PARAM_LIST_LEN = check(S.ILLEGAL_REQUEST, S.ASC_PARAM_LIST_LENGTH_ERROR)
LBA_OUT_OF_RANGE = check(S.ILLEGAL_REQUEST, S.ASC_LBA_OUT_OF_RANGE)
WRITE_PROTECTED = check(S.DATA_PROTECT, S.ASC_WRITE_PROTECTED)
READ_ERROR = check(S.MEDIUM_ERROR, S.ASC_READ_ERROR)
TOO_MANY_TARGETS = check(S.ILLEGAL_REQUEST, S.ASC_TOO_MANY_TARGET_DESCRIPTORS)      # EXTENDED
TOO_MANY_SEGMENTS = check(S.ILLEGAL_REQUEST, S.ASC_TOO_MANY_SEGMENT_DESCRIPTORS)    # COPY's
UNSUPPORTED_TARGET = check(S.ILLEGAL_REQUEST, S.ASC_UNSUPPORTED_TARGET_DESCRIPTOR_TYPE)
UNSUPPORTED_SEGMENT = check(S.ILLEGAL_REQUEST, S.ASC_UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE)
COPY_TARGET_NOT_REACHABLE = check(S.COPY_ABORTED, S.ASC_COPY_TARGET_NOT_REACHABLE)
COPY_ABORTED = check(S.COPY_ABORTED, S.ASC_NO_ADDITIONAL_SENSE)
WRITE_ERROR = check(S.MEDIUM_ERROR, S.ASC_WRITE_ERROR)
HW_ERROR = check(S.HARDWARE_ERROR, S.ASC_INTERNAL_TARGET_FAILURE)

STATUS_REPLY = {ST_GOOD: GOOD, ST_READ_ERR: READ_ERROR, ST_WRITE_ERR: WRITE_ERROR,
                ST_WRITE_PROTECT: WRITE_PROTECTED, ST_FLUSH_ERR: WRITE_ERROR}


def status_reply(st):
    """The SCSI answer to an engine status; a miscompare carries the byte offset of the first
    difference in the sense data's INFORMATION field."""
    if status_kind(st) == ST_MISCOMPARE:
        return check(S.MISCOMPARE, S.ASC_MISCOMPARE_DURING_VERIFY, st >> 8)
    return STATUS_REPLY.get(st, HW_ERROR)
