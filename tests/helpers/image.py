"""Helpers for tests that open whole images."""

import hashlib
import json

CHUNK = 8 << 20


def sha256_of(f, off=0, length=None):
    """sha256 of ``length`` bytes of file object ``f`` from ``off`` (default: to the end)."""
    end = f.size if length is None else off + length
    h = hashlib.sha256()
    while off < end:
        n = min(CHUNK, end - off)
        data = f.pread(n, off)
        assert len(data) == n, f"short read at {off}: {len(data)} of {n}"
        h.update(data)
        off += n
    return h.hexdigest()


def write_config(path, lowers, **extra):
    """Write a config.v1.json with ``lowers`` (paths -> {"file": path}) and extra keys."""
    doc = {"lowers": [lo if isinstance(lo, dict) else {"file": str(lo)} for lo in lowers]}
    doc.update(extra)
    path.write_text(json.dumps(doc))
    return path
