"""File-list prefetch (spec §11 "dynamic prefetch"): a text trace naming files to prefetch.

One path per line, spaces trimmed; lines that do not look like a path are skipped (upstream's
rule: letters, digits, ``_ - .`` and ``/`` only).  An entry ending in ``/`` or ``*`` is a
directory whose regular files are all prefetched, recursively.  The image (the merged lower
layers) is read as ext4 with ``overlaybd.ext4``; each file's extents become reads of the
merged image (layer index 0 of the merged view, as upstream records them), in pieces of at
most 1 MiB, in list order.
"""

from __future__ import annotations

import re

from loguru import logger

from ..abi import trace as abi
from ..ext4 import Ext4, Ext4Error, detect
from .trace import Record

_PATH = re.compile(r"(/)?((([A-Za-z0-9_\-.]+/)*[A-Za-z0-9_\-.]+/?)|(\.\.?))?")


def parse(text: str) -> list[str]:
    """The entries of a prefetch list, in order."""
    out = []
    for line in text.splitlines():
        line = line.strip(" ")
        if line and _PATH.fullmatch(line.rstrip("*")):
            out.append(line)
        elif line:
            logger.debug("Prefetch: list entry {!r} is not a path; skipped", line)
    return out


def split(offset: int, count: int, layer: int = 0, piece: int = abi.MAX_IO_SIZE):
    """``Record``s reading ``[offset, offset+count)`` in pieces of at most ``piece`` bytes."""
    out = []
    while count > 0:
        n = min(piece, count)
        out.append(Record(abi.OP_READ, layer, n, offset))
        offset += n
        count -= n
    return out


def plan(image, entries, stop=None) -> list[Record]:
    """Reads of ``image`` (a file object over the merged lowers) covering the listed files.

    Raises Ext4Error when the image is not ext4 (EROFS is named as such); a listed file that
    is missing or unreadable is logged and skipped.  ``stop()`` -> True aborts early."""
    kind = detect(image)
    if kind == "erofs":
        raise Ext4Error("the image holds an EROFS filesystem; file-list prefetch reads ext4 "
                        "only (use a binary trace)")
    fs = Ext4(image, path="the image")
    records: list[Record] = []
    seen: set[int] = set()
    for entry in entries:
        if stop is not None and stop():
            break
        try:
            if entry.endswith(("/", "*")):
                files = list(fs.walk(entry.rstrip("*").rstrip("/") or "/"))
            else:
                files = [(entry, fs.lookup(entry))]
        except Ext4Error as e:
            logger.warning("Prefetch: list entry {}: {}", entry, e.message)
            continue
        for name, ino in files:
            if ino in seen:
                continue
            seen.add(ino)
            try:
                node = fs.inode(ino)
                if not node.is_reg:
                    logger.warning("Prefetch: list entry {} is not a regular file", name)
                    continue
                for off, n in fs.file_extents(ino):
                    records += split(off, n)
            except Ext4Error as e:
                logger.warning("Prefetch: cannot map {}: {}", name, e.message)
    return records
