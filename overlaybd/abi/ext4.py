"""ext4 on-disk structures, as far as a reader of files needs them (and the EROFS magic).

Layouts and constants only (little-endian); the reader is ``overlaybd.ext4``.  Offsets are
the kernel's (fs/ext4/ext4.h, ext4_extents.h): the superblock at byte 1024 of the
filesystem, group descriptors in the block after the superblock's, inodes in each group's
inode table, extent trees rooted in ``i_block``.
"""

import struct

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
MAGIC = 0xEF53
EROFS_MAGIC = 0xE0F5E1E2                # EROFS superblock magic, also at byte 1024

# superblock fields: name -> (offset, struct format)
SB = {
    "inodes_count": (0x00, "<I"),
    "blocks_count_lo": (0x04, "<I"),
    "first_data_block": (0x14, "<I"),
    "log_block_size": (0x18, "<I"),
    "blocks_per_group": (0x20, "<I"),
    "inodes_per_group": (0x28, "<I"),
    "magic": (0x38, "<H"),
    "rev_level": (0x4C, "<I"),
    "inode_size": (0x58, "<H"),
    "feature_compat": (0x5C, "<I"),
    "feature_incompat": (0x60, "<I"),
    "feature_ro_compat": (0x64, "<I"),
    "desc_size": (0xFE, "<H"),
    "blocks_count_hi": (0x150, "<I"),
}

INCOMPAT_FILETYPE = 0x2
INCOMPAT_RECOVER = 0x4
INCOMPAT_JOURNAL_DEV = 0x8
INCOMPAT_META_BG = 0x10
INCOMPAT_EXTENTS = 0x40
INCOMPAT_64BIT = 0x80
INCOMPAT_FLEX_BG = 0x200
INCOMPAT_INLINE_DATA = 0x8000
INCOMPAT_ENCRYPT = 0x10000

GOOD_OLD_INODE_SIZE = 128
GOOD_OLD_DESC_SIZE = 32
MIN_DESC_SIZE_64BIT = 64

# group descriptor: inode table block, low and high halves
GD_INODE_TABLE_LO = (0x08, "<I")
GD_INODE_TABLE_HI = (0x28, "<I")        # only when desc_size >= 64

# inode fields
INODE = {
    "mode": (0x00, "<H"),
    "size_lo": (0x04, "<I"),
    "flags": (0x20, "<I"),
    "size_high": (0x6C, "<I"),
}
I_BLOCK_OFFSET = 0x28
I_BLOCK_SIZE = 60
N_DIRECT = 12                           # block-mapped files: 12 direct, then 1/2/3 indirect

ROOT_INO = 2

INDEX_FL = 0x1000                       # directory with an htree index
EXTENTS_FL = 0x80000
INLINE_DATA_FL = 0x10000000

S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
S_IFLNK = 0o120000

# extent tree
EXTENT_MAGIC = 0xF30A
EXTENT_HEADER = struct.Struct("<HHHHI")  # magic, entries, max, depth, generation
EXTENT_LEAF = struct.Struct("<IHHI")     # ee_block, ee_len, ee_start_hi, ee_start_lo
EXTENT_INDEX = struct.Struct("<IIHH")    # ei_block, ei_leaf_lo, ei_leaf_hi, unused
EXTENT_ENTRY_SIZE = 12
EXT_INIT_MAX_LEN = 32768                 # ee_len above this: an unwritten extent of len-32768
MAX_EXTENT_DEPTH = 5

# directory entries (ext4_dir_entry_2)
DIRENT = struct.Struct("<IHBB")          # inode, rec_len, name_len, file_type
DIRENT_HEADER_SIZE = DIRENT.size         # 8
FT_REG_FILE = 1
FT_DIR = 2
FT_SYMLINK = 7


def field(buf, spec, base=0):
    """The value of field ``spec`` = (offset, format) in ``buf`` at ``base``."""
    off, fmt = spec
    return struct.unpack_from(fmt, buf, base + off)[0]


def superblock(buf) -> dict:
    """The fields of ``SB`` from a 1024-byte superblock."""
    return {name: field(buf, spec) for name, spec in SB.items()}


def rec_len(raw: int, block_size: int) -> int:
    """A directory entry's length on disk (65535 or 0 stand for 64 KiB in 64 KiB blocks)."""
    if block_size < 65536:
        return raw
    if raw in (0, 65535):
        return 65536
    return (raw & 65532) | ((raw & 3) << 16)
