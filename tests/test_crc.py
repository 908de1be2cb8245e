"""CRC-32C "raw" (spec §2.3): vectors and the definition."""

import random

from overlaybd.abi.zfile import BLOCK_CRC_SEED
from overlaybd.crc import crc32c_raw

_T = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _T.append(_c)


def raw_by_definition(data, seed=0):
    c = seed
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c


def test_spec_vectors():
    assert crc32c_raw(b"123456789", 0) == 0x58E3FA20
    assert crc32c_raw(b"123456789", 100007) == 0x3C9BD4E0
    assert BLOCK_CRC_SEED == 100007
    for n in (0, 1, 4, 512, 4096, 65536):
        assert crc32c_raw(bytes(n), 0) == 0


def test_standard_crc32c_relation():
    import crc32c
    assert crc32c.crc32c(b"123456789") == 0xE3069283
    assert crc32c_raw(b"123456789", 0xFFFFFFFF) ^ 0xFFFFFFFF == 0xE3069283


def test_matches_definition_random():
    rng = random.Random(5)
    for _ in range(200):
        data = rng.randbytes(rng.randrange(0, 300))
        seed = rng.getrandbits(32)
        assert crc32c_raw(data, seed) == raw_by_definition(data, seed)


def test_accepts_buffers_and_appended_crc_residue_is_zero():
    data = bytes(range(256)) * 7
    c = crc32c_raw(memoryview(data)[3:900], BLOCK_CRC_SEED)
    assert c == crc32c_raw(bytearray(data[3:900]), BLOCK_CRC_SEED)
    assert crc32c_raw(data[3:900] + c.to_bytes(4, "little"), BLOCK_CRC_SEED) == 0
