"""SCSI constants (SPC-3 / SBC-3) and fixed-format sense data, as TCMU handlers use them."""

# status codes
GOOD = 0x00
CHECK_CONDITION = 0x02
BUSY = 0x08
TASK_SET_FULL = 0x28

# sense keys
NO_SENSE = 0x0
NOT_READY = 0x2
MEDIUM_ERROR = 0x3
HARDWARE_ERROR = 0x4
ILLEGAL_REQUEST = 0x5
UNIT_ATTENTION = 0x6
DATA_PROTECT = 0x7
COPY_ABORTED = 0xA
MISCOMPARE = 0xE

# additional sense code + qualifier, as one 16-bit value (ASC << 8 | ASCQ)
ASC_READ_ERROR = 0x1100                 # unrecovered read error
ASC_WRITE_ERROR = 0x0C00
ASC_INVALID_OPCODE = 0x2000             # invalid command operation code
ASC_LBA_OUT_OF_RANGE = 0x2100
ASC_INVALID_FIELD_IN_CDB = 0x2400
ASC_INVALID_FIELD_IN_PARAM_LIST = 0x2600
ASC_PARAM_LIST_LENGTH_ERROR = 0x1A00
ASC_INCOMPATIBLE_FORMAT = 0x3005        # cannot write medium, incompatible format
ASC_WRITE_PROTECTED = 0x2700
ASC_MISCOMPARE_DURING_VERIFY = 0x1D00
ASC_NO_ADDITIONAL_SENSE = 0x0000
ASC_TOO_MANY_TARGET_DESCRIPTORS = 0x2606
ASC_UNSUPPORTED_TARGET_DESCRIPTOR_TYPE = 0x2607
ASC_TOO_MANY_SEGMENT_DESCRIPTORS = 0x2608
ASC_UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE = 0x2609
ASC_COPY_TARGET_NOT_REACHABLE = 0x0D02
ASC_INTERNAL_TARGET_FAILURE = 0x4400

# byte 1 of READ/WRITE/VERIFY/WRITE AND VERIFY/COMPARE AND WRITE(10/12/16): RDPROTECT,
# WRPROTECT or VRPROTECT (bits 7-5), DPO (4), FUA (3); of VERIFY and WRITE AND VERIFY: BYTCHK
# (bits 2-1, one bit in the 10/12-byte WRITE AND VERIFY); of WRITE SAME: ANCHOR (4), UNMAP (3),
# NDOB (0, WRITE SAME(16) only)
RW_PROTECT = 0xE0
RW_DPO = 0x10
RW_FUA = 0x08
BYTCHK = 0x06
WS_ANCHOR = 0x10
WS_UNMAP = 0x08
WS_NDOB = 0x01

# MODE SENSE header, device-specific parameter of a direct-access device
MODE_WP = 0x80
MODE_DPOFUA = 0x10

# opcodes
TEST_UNIT_READY = 0x00
REQUEST_SENSE = 0x03
READ_6 = 0x08
WRITE_6 = 0x0A
INQUIRY = 0x12
MODE_SELECT_6 = 0x15
MODE_SENSE_6 = 0x1A
START_STOP_UNIT = 0x1B
READ_CAPACITY_10 = 0x25
READ_10 = 0x28
WRITE_10 = 0x2A
WRITE_VERIFY_10 = 0x2E
VERIFY_10 = 0x2F
SYNCHRONIZE_CACHE_10 = 0x35
WRITE_SAME_10 = 0x41
UNMAP = 0x42
MODE_SELECT_10 = 0x55
MODE_SENSE_10 = 0x5A
EXTENDED_COPY = 0x83
RECEIVE_COPY_RESULTS = 0x84
READ_16 = 0x88
COMPARE_AND_WRITE = 0x89
WRITE_16 = 0x8A
WRITE_VERIFY_16 = 0x8E
VERIFY_16 = 0x8F
SYNCHRONIZE_CACHE_16 = 0x91
WRITE_SAME_16 = 0x93
SERVICE_ACTION_IN_16 = 0x9E
REPORT_LUNS = 0xA0
MAINTENANCE_IN = 0xA3
MAINTENANCE_OUT = 0xA4
READ_12 = 0xA8
WRITE_12 = 0xAA
WRITE_VERIFY_12 = 0xAE
VERIFY_12 = 0xAF

SAI_READ_CAPACITY_16 = 0x10
SAI_REPORT_SUPPORTED_OPCODES = 0x0C     # MAINTENANCE IN
SAI_COPY_OPERATING_PARAMETERS = 0x03    # RECEIVE COPY RESULTS

# EXTENDED COPY (LID1) parameter list (SPC-4 6.4): a 16-byte header, target descriptors of 32
# bytes, segment descriptors (block to block: 0x02, 28 bytes with its 4-byte header)
XCOPY_HEADER = 16
XCOPY_TARGET_DESC = 32
XCOPY_TARGET_IDENT = 0xE4               # identification descriptor target descriptor
XCOPY_SEG_BLOCK_TO_BLOCK = 0x02
XCOPY_SEG_B2B_LEN = 0x18                # its DESCRIPTOR LENGTH field (bytes after the first 4)

READS = (READ_6, READ_10, READ_12, READ_16)
WRITES = (WRITE_6, WRITE_10, WRITE_12, WRITE_16)
VERIFIES = (VERIFY_10, VERIFY_12, VERIFY_16)
WRITE_VERIFIES = (WRITE_VERIFY_10, WRITE_VERIFY_12, WRITE_VERIFY_16)

# version descriptors of the standard INQUIRY data (SPC-4 table 50)
VERSION_SAM_4 = 0x0080
VERSION_SPC_3 = 0x0300
VERSION_SBC_3 = 0x04C0

# VPD pages
VPD_SUPPORTED = 0x00
VPD_SERIAL = 0x80
VPD_DEVICE_ID = 0x83
VPD_BLOCK_LIMITS = 0xB0
VPD_BLOCK_DEVICE_CHARACTERISTICS = 0xB1
VPD_LOGICAL_BLOCK_PROVISIONING = 0xB2

# mode pages
MODE_PAGE_RW_RECOVERY = 0x01
MODE_PAGE_CACHING = 0x08
MODE_PAGE_CONTROL = 0x0A
MODE_PAGE_ALL = 0x3F

SENSE_LEN = 18       # fixed-format sense data actually filled in


def cdb_length(opcode):
    """CDB length from the group code (bits 7..5), or 0 if the group has no fixed length."""
    group = opcode >> 5
    if group == 0:
        return 6
    if group in (1, 2):
        return 10
    if group == 4:
        return 16
    if group == 5:
        return 12
    if group == 3 and opcode == 0x7F:
        return 8     # variable length: the real length is 8 + cdb[7]
    return 0


def fixed_sense(key, asc_ascq, information=None):
    """Fixed-format sense data: byte0 0x70 (current; | 0x80 VALID with an INFORMATION field,
    bytes 3-6), byte2 key, byte7 additional length 10, bytes 12/13 ASC/ASCQ."""
    s = bytearray(SENSE_LEN)
    s[0] = 0x70
    if information is not None:
        s[0] |= 0x80
        s[3:7] = (information & 0xFFFFFFFF).to_bytes(4, "big")
    s[2] = key & 0x0F
    s[7] = 0x0A
    s[12] = (asc_ascq >> 8) & 0xFF
    s[13] = asc_ascq & 0xFF
    return bytes(s)
