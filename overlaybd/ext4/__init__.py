"""A small userspace ext4 reader (superblock, group descriptors, inodes, extent trees, block
maps, directories) over any file object with ``pread``: enough to find where files live on an
image without mounting it (file-list prefetch, spec §11)."""

from .extents import Ext4Error, Extent
from .reader import Ext4, Inode, detect

__all__ = ["Ext4", "Ext4Error", "Extent", "Inode", "detect"]
