"""CRC-32C "raw" as upstream uses it (spec §2.3).

Upstream's CRC is CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) updated from a seed
*without* the initial and final inversion of the standard CRC-32C.  The ``crc32c`` package
(hardware accelerated) computes the standard form, which relates to the raw one by::

    raw(data, seed) == std(data, seed ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

A property used by the ZFile reader: appending ``raw(data, seed)`` as a little-endian u32
to ``data`` gives a buffer whose raw CRC (same seed) is 0, i.e. whose standard CRC seeded
with ``seed ^ 0xFFFFFFFF`` is 0xFFFFFFFF.  One call then checks a block and its stored CRC.
"""

from crc32c import crc32c as _std

MASK = 0xFFFFFFFF


def crc32c_raw(data, seed: int = 0) -> int:
    """Raw CRC-32C of ``data`` (any bytes-like object) continued from ``seed``."""
    return _std(data, seed ^ MASK) ^ MASK


def std_seed(seed: int) -> int:
    """The standard-CRC seed equivalent to raw ``seed`` (for hot loops calling crc32c)."""
    return seed ^ MASK
