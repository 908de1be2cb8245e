"""ustar / PAX header layout as overlaybd reads and writes it (spec §3).

Layouts, constants and codecs only; detection and wrapping policy lives in ``overlaybd.tar``.
Numeric fields follow upstream's libtar formatting: ``int_to_oct`` is space-padded octal,
a space and a NUL (``"%*lo "`` in width-1 bytes); ``int_to_oct_nonull`` is space-padded
octal filling the field with a trailing space instead of the NUL.
"""

from __future__ import annotations

BLOCK = 512

# (offset, length) of each ustar header field
FIELDS = {
    "name": (0, 100), "mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
    "mtime": (136, 12), "chksum": (148, 8), "typeflag": (156, 1), "linkname": (157, 100),
    "magic": (257, 6), "version": (263, 2), "uname": (265, 32), "gname": (297, 32),
    "devmajor": (329, 8), "devminor": (337, 8), "prefix": (345, 155), "padding": (500, 12),
}
CHKSUM_OFF, CHKSUM_LEN = FIELDS["chksum"]

TMAGIC = b"ustar\x00"            # POSIX magic (6 bytes); detection compares the first 5
TVERSION = b"00"
TMAGIC_PLACEHOLDER = b"xxtar\x00"  # upstream's marker while a wrapped blob is being written
TVERSION_PLACEHOLDER = b"xx"

REGTYPE = b"0"
AREGTYPE = b"\x00"
PAX_HEADER = b"x"
PAX_GLOBAL_HEADER = b"g"
GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"
EXTENSION_TYPES = (PAX_HEADER, PAX_GLOBAL_HEADER, GNU_LONGNAME, GNU_LONGLINK)

PAX_NAME = "overlaybd.pax"        # names upstream's -t writer uses
COMMIT_NAME = "overlaybd.commit"
PLACEHOLDER_NAME = "overlaybd.new"


def field(block, name) -> bytes:
    off, n = FIELDS[name]
    return bytes(block[off:off + n])


def put(block: bytearray, name, value: bytes):
    """Store ``value`` (at most the field's length) at the field, zero-padded."""
    off, n = FIELDS[name]
    if len(value) > n:
        raise ValueError(f"tar field {name} holds {n} bytes, got {len(value)}")
    block[off:off + n] = value.ljust(n, b"\x00")


def cstr(value: str, n: int) -> bytes:
    """A C string truncated to fit ``n`` bytes with its NUL (snprintf/strlcpy)."""
    return value.encode()[:n - 1]


def parse_octal(raw: bytes) -> int:
    """sscanf("%o") as libtar uses it: leading whitespace, optional sign, octal digits up to
    the first other byte; 0 when there are no digits."""
    s = raw.split(b"\x00", 1)[0].lstrip(b" \t\n\r\v\f")
    neg = s[:1] == b"-"
    if s[:1] in (b"+", b"-"):
        s = s[1:]
    v = 0
    seen = False
    for c in s:
        if 0x30 <= c <= 0x37:
            v = v * 8 + c - 0x30
            seen = True
        else:
            break
    if not seen:
        return 0
    return -v if neg else v


def int_to_oct(num: int, n: int) -> bytes:
    """libtar int_to_oct: ``"%*lo "`` with width n-2, NUL-terminated within n bytes."""
    return (b"%*o " % (n - 2, num))[:n - 1] + b"\x00"


def int_to_oct_nonull(num: int, n: int) -> bytes:
    """libtar int_to_oct_nonull: ``"%*lo"`` with width n-1, last byte a space."""
    return (b"%*o" % (n - 1, num))[:n - 1] + b" "


def checksum_unsigned(block) -> int:
    """Sum of the 512 bytes as unsigned chars, the chksum field counted as spaces."""
    b = bytes(block[:BLOCK])
    return sum(b) - sum(b[CHKSUM_OFF:CHKSUM_OFF + CHKSUM_LEN]) + 8 * 0x20


def checksum_signed(block) -> int:
    """The same with the bytes as signed chars (old tars)."""
    b = bytes(block[:BLOCK])
    body = b[:CHKSUM_OFF] + b" " * CHKSUM_LEN + b[CHKSUM_OFF + CHKSUM_LEN:]
    return sum(body) - 256 * sum(1 for c in body if c >= 0x80)


def checksum_ok(block) -> bool:
    stored = parse_octal(field(block, "chksum"))
    return stored in (checksum_unsigned(block), checksum_signed(block))


def set_checksum(block: bytearray):
    """Fill the chksum field as upstream does (int_to_oct of the unsigned sum)."""
    put(block, "chksum", int_to_oct(checksum_unsigned(block), CHKSUM_LEN))


def pax_record(key: str, value: str) -> bytes:
    """One PAX record ``"<len> key=value\\n"`` where len counts the whole record."""
    n = len(key) + len(value) + 3            # ' ', '=' and '\n'
    n += len(str(n))
    rec = f"{n} {key}={value}\n"
    if len(rec) != n:                          # the length gained a digit
        rec = f"{len(rec)} {key}={value}\n"
    return rec.encode()


def parse_pax(data: bytes) -> dict:
    """PAX records -> {key: value}; ValueError on a malformed record (upstream read_pax)."""
    out = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            raise ValueError(f"PAX record at {pos} has no length")
        try:
            n = int(data[pos:sp])
        except ValueError:
            raise ValueError(f"PAX record at {pos} has a bad length") from None
        if n < 5 or pos + n > len(data) or data[pos + n - 1:pos + n] != b"\n":
            raise ValueError(f"PAX record at {pos} has a bad length {n}")
        key, eq, value = data[sp + 1:pos + n - 1].partition(b"=")
        if not eq:
            raise ValueError(f"PAX record at {pos} has no '='")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += n
    return out
