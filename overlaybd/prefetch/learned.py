"""Learned prefetch: traces the daemon records by itself, kept in the cache directory.

With ``prefetchConfig.learn`` on, every open of an image records the first
``learnSeconds`` (and at most ``learnMaxMB`` of reads) into a trace named after the image's
layer digests; the next open of the same layers on this host replays it.  No lock, no
recording run, no special image.  A stored trace is replaced only when a later start reads a
clearly different set of data (Jaccard similarity of the 64 KiB chunks read below
``REPLACE_BELOW``), so one unusual start does not undo a good trace, while an image whose
start changed (new entry point, new config) relearns.

Files live in ``<cacheDir>/learned-traces/``: ``<key>.trace`` (upstream's binary format, so
``overlaybd-info`` reads it) and ``<key>.<pid>-<n>.spool`` while recording.  They are cache
files like any other: eviction may remove them, which only means the next start learns again.
"""

from __future__ import annotations

import hashlib
import os

from loguru import logger

from . import trace as tracefmt

DIR_NAME = "learned-traces"
CHUNK = 64 << 10
REPLACE_BELOW = 0.5


def key_of(cfg) -> str | None:
    """The learned-trace key of an image: sha256 of its lowers' digests, bottom first; None
    when a lower has no digest (a local layer: nothing to learn for)."""
    digests = [lo.digest for lo in cfg.lowers]
    if not digests or not all(digests):
        return None
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def chunks(records) -> set[tuple[int, int]]:
    """(layer, 64 KiB chunk) pairs the records read."""
    out = set()
    for r in records:
        if r.op != b"R" or r.count <= 0:
            continue
        out.update((r.layer, c) for c in range(r.offset // CHUNK, (r.offset + r.count - 1) // CHUNK + 1))
    return out


def similarity(a, b) -> float:
    """Jaccard similarity of the data two record lists read (1.0: the same chunks)."""
    ca, cb = chunks(a), chunks(b)
    if not ca and not cb:
        return 1.0
    return len(ca & cb) / len(ca | cb)


class LearnedStore:
    def __init__(self, cache_dir):
        self.dir = os.path.join(cache_dir, DIR_NAME)

    def path(self, key: str) -> str:
        return os.path.join(self.dir, f"{key}.trace")

    def spool(self, key: str, tag: str) -> str:
        """A fresh, empty spool file for one recording."""
        os.makedirs(self.dir, exist_ok=True)
        p = os.path.join(self.dir, f"{key}.{tag}.spool")
        with open(p, "wb"):
            pass
        return p

    def load(self, key: str):
        """The stored records, or None (absent, or invalid: then it is logged and removed)."""
        p = self.path(key)
        try:
            kind, records = tracefmt.load(p)
        except tracefmt.TraceError as e:
            logger.warning("Prefetch: learned trace {} is invalid ({}); discarding it", p,
                           e.reason)
            _unlink(p)
            return None
        return records if kind == "trace" else None

    def offer(self, key: str, records) -> str:
        """Store ``records`` unless the stored trace reads much the same data.  Returns
        "saved" (nothing stored before), "replaced", "kept" or "empty"."""
        if not records:
            return "empty"
        old = self.load(key)
        if old is not None:
            sim = similarity(old, records)
            if sim >= REPLACE_BELOW:
                logger.info("Prefetch: learned trace {} kept ({:.0%} of the data in common "
                            "with this start)", self.path(key), sim)
                return "kept"
        self._write(key, records)
        verdict = "saved" if old is None else "replaced"
        logger.info("Prefetch: learned trace {} {}: {} records", self.path(key), verdict,
                    len(records))
        return verdict

    def _write(self, key, records):
        os.makedirs(self.dir, exist_ok=True)
        tmp = f"{self.path(key)}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            tracefmt.write(fd, records)
        finally:
            os.close(fd)
        os.replace(tmp, self.path(key))


def _unlink(p):
    try:
        os.unlink(p)
    except OSError:
        pass
