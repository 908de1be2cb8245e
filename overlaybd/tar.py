"""One-file tar wrapping of layer blobs (spec §3): detection, reader, writer.

Detection (``is_tar``) is upstream's: the first 512 bytes carry magic ``ustar`` (5 bytes
compared), version ``00`` and a correct header checksum (unsigned or signed sum).  GNU
headers (``ustar  ``) are therefore not detected, and a blob whose checksum is bad is left
for the next detector (it then fails as LSMT with a clear error).

``TarFile`` exposes the payload: it starts at 512, or at 1536 whenever a PAX header comes
first; its size is the PAX ``size`` record when > 0, else the ustar size field.

``TarWriter`` writes what ``overlaybd-commit -t`` writes: a placeholder while the payload is
written, then at close a PAX header ``overlaybd.pax`` + record ``"<len> size=<n>\\n"``, a
ustar header ``overlaybd.commit`` (size field 0, mode, uid/gid 0, root/root, mtime 0), the
payload, and two zero blocks from the payload end rounded up to 512.
"""

from __future__ import annotations

import grp
import pwd
import stat

from .abi import tar as abi
from .errors import FormatError
from .io import chunks, file_name, read_exact
from .zfile.writer import OutputSink

BLOCK = abi.BLOCK
WRAP_HEADER_SIZE = 3 * BLOCK       # PAX header + record block + ustar header


def is_tar(f) -> bool:
    """True if ``f`` starts with a valid POSIX ustar header (upstream's is_tar_file)."""
    block = f.pread(BLOCK, 0)
    if len(block) != BLOCK:
        return False
    if abi.field(block, "magic")[:5] != abi.TMAGIC[:5]:
        return False
    if abi.field(block, "version") != abi.TVERSION:
        return False
    return abi.checksum_ok(block)


class TarFile:
    """The payload of a one-file tar archive over ``f`` (a file with ``pread``/``size``).
    ``close()`` closes ``f`` too unless ``own`` is False."""

    def __init__(self, f, path=None, own=True):
        self.file = f
        self._own = own
        self.path = path or file_name(f)
        if not is_tar(f):
            raise FormatError("not a ustar archive (magic, version or header checksum)",
                              path=self.path, field="tar header")
        self.pax = {}
        has_pax = False
        off = 0
        header = self._header_at(off)
        while abi.field(header, "typeflag") in abi.EXTENSION_TYPES:
            kind = abi.field(header, "typeflag")
            n = abi.parse_octal(abi.field(header, "size"))
            nblocks = -(-n // BLOCK)
            data = read_exact(self.file, nblocks * BLOCK, off + BLOCK, "tar extension data",
                              self.path)[:n]
            if kind in (abi.PAX_HEADER, abi.PAX_GLOBAL_HEADER):
                has_pax = True
                if kind == abi.PAX_HEADER:
                    try:
                        self.pax.update(abi.parse_pax(data))
                    except ValueError as e:
                        raise FormatError(f"bad PAX header: {e}", path=self.path,
                                          field="pax record") from None
            off += BLOCK + nblocks * BLOCK
            header = self._header_at(off)
        self.header = header
        # upstream assumes the PAX records fit one block: payload at 3 blocks after a PAX header
        self.base = 3 * BLOCK if has_pax else BLOCK
        size = 0
        if "size" in self.pax:
            try:
                size = int(self.pax["size"])
            except ValueError:
                raise FormatError(f"bad PAX size {self.pax['size']!r}", path=self.path,
                                  field="pax size") from None
        if size <= 0:
            size = abi.parse_octal(abi.field(header, "size"))
        self.size = size
        if self.base + size > f.size:
            raise FormatError(f"tar payload of {size} bytes at {self.base} runs past the end of "
                              f"the file ({f.size} bytes): truncated", path=self.path,
                              field="tar size")
        if hasattr(f, "evict"):
            self.evict = self._evict

    def _header_at(self, off):
        # like upstream, skip zero blocks between headers; two of them end the archive
        zeros = 0
        while True:
            block = read_exact(self.file, BLOCK, off, "tar header", self.path)
            if block[0] != 0 or any(block):
                return block
            zeros += 1
            if zeros >= 2:
                raise FormatError("tar archive has no file entry", path=self.path,
                                  field="tar header")
            off += BLOCK

    def pread(self, n, off) -> bytes:
        if off >= self.size or n <= 0:
            return b""
        return self.file.pread(min(n, self.size - off), self.base + off)

    def preadinto(self, buf, off) -> int:
        mv = memoryview(buf).cast("B")
        data = self.pread(len(mv), off)
        mv[:len(data)] = data
        return len(data)

    def _evict(self, off, n):
        self.file.evict(self.base + off, n)

    def close(self):
        """Close the source too unless ``own`` was False."""
        if self._own:
            self.file.close()

    def __repr__(self):
        return f"TarFile({self.path!r}, base={self.base}, size={self.size})"


def _name_of(lookup, ident):
    try:
        return lookup(ident)[0]
    except (KeyError, OSError):
        return ""


def placeholder_headers() -> bytes:
    """The 3 blocks upstream writes first: a PAX header without magic, record ``size=0`` and
    a ustar header marked ``xxtar``/``xx`` named ``overlaybd.new`` (never detected as tar)."""
    buf = bytearray(WRAP_HEADER_SIZE)
    pax = bytearray(BLOCK)
    abi.put(pax, "typeflag", abi.PAX_HEADER)
    abi.put(pax, "name", abi.cstr(abi.PAX_NAME, 100))
    record = abi.pax_record("size", "0")
    abi.put(pax, "size", abi.int_to_oct_nonull(len(record), 12))
    buf[0:BLOCK] = pax
    buf[BLOCK:BLOCK + len(record)] = record
    hdr = bytearray(BLOCK)
    abi.put(hdr, "name", abi.cstr(abi.PLACEHOLDER_NAME, 100))
    abi.put(hdr, "version", abi.TVERSION_PLACEHOLDER)
    abi.put(hdr, "magic", abi.TMAGIC_PLACEHOLDER)
    abi.put(hdr, "size", abi.int_to_oct_nonull(0, 12))
    buf[2 * BLOCK:] = hdr
    return bytes(buf)


def final_headers(payload_size: int, mode: int = 0o644, name: str = abi.COMMIT_NAME) -> bytes:
    """The 3 header blocks of a wrapped blob with ``payload_size`` bytes of payload, stored
    as ``name`` (upstream: overlaybd.commit)."""
    if not stat.S_IFMT(mode):
        mode |= stat.S_IFREG            # upstream stores the output file's st_mode
    buf = bytearray(WRAP_HEADER_SIZE)
    pax = bytearray(BLOCK)
    abi.put(pax, "typeflag", abi.PAX_HEADER)
    abi.put(pax, "name", abi.cstr(abi.PAX_NAME, 100))
    record = abi.pax_record("size", str(payload_size))
    abi.put(pax, "size", abi.int_to_oct_nonull(len(record), 12))
    abi.put(pax, "version", abi.TVERSION)
    abi.put(pax, "magic", abi.TMAGIC)
    abi.set_checksum(pax)
    buf[0:BLOCK] = pax
    buf[BLOCK:BLOCK + len(record)] = record
    hdr = bytearray(BLOCK)
    abi.put(hdr, "typeflag", abi.REGTYPE)
    abi.put(hdr, "uname", abi.cstr(_name_of(pwd.getpwuid, 0), 32))
    abi.put(hdr, "uid", abi.int_to_oct(0, 8))
    abi.put(hdr, "gname", abi.cstr(_name_of(grp.getgrgid, 0), 32))
    abi.put(hdr, "gid", abi.int_to_oct(0, 8))
    abi.put(hdr, "mode", abi.int_to_oct(mode, 8))
    abi.put(hdr, "mtime", abi.int_to_oct_nonull(0, 12))
    abi.put(hdr, "size", abi.int_to_oct_nonull(0, 12))
    abi.put(hdr, "name", abi.cstr(name, 100))
    abi.put(hdr, "version", abi.TVERSION)
    abi.put(hdr, "magic", abi.TMAGIC)
    abi.set_checksum(hdr)
    buf[2 * BLOCK:] = hdr
    return bytes(buf)


class TarWriter:
    """Wrap a payload into a one-file tar on a seekable output (``pwrite`` file or seekable
    binary stream).  ``write``/``pwrite`` take payload offsets; ``close`` writes the final
    headers and the two zero end blocks (it does not close ``out``)."""

    def __init__(self, out, mode=0o644, name=abi.COMMIT_NAME):
        self._sink = OutputSink(out, need_seek=True)
        self.mode = mode
        self.name = name
        self.size = 0
        self._closed = False
        self._sink.write(placeholder_headers())

    def write(self, data) -> int:
        return self.pwrite(data, self.size)

    def pwrite(self, data, off) -> int:
        if self._closed:
            raise ValueError("write to a closed TarWriter")
        self._sink.pwrite(data, WRAP_HEADER_SIZE + off)
        self.size = max(self.size, off + len(data))
        return len(data)

    def close(self):
        if self._closed:
            return
        self._closed = True
        end = WRAP_HEADER_SIZE + self.size
        padded = -(-end // BLOCK) * BLOCK
        self._sink.pwrite(bytes(padded - end + 2 * BLOCK), end)
        self._sink.pwrite(final_headers(self.size, self.mode, self.name), 0)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()


def wrap(src, out, mode=0o644, chunk=1 << 20) -> int:
    """One-shot ``-t``: copy ``src`` (``pread``/``size`` file or readable stream) into a
    one-file tar on ``out``.  Returns the payload size."""
    with TarWriter(out, mode) as w:
        for data in chunks(src, chunk):
            w.write(data)
    return w.size
