"""What the LSMT and ZFile header/trailer blocks share: two magics and the same low flag bits
(bit 0 header/trailer, bit 1 data file, bit 2 sealed)."""

FLAG_HEADER = 1 << 0     # 1 = header, 0 = trailer
FLAG_DATA = 1 << 1       # 1 = data file, 0 = index file
FLAG_SEALED = 1 << 2


class MagicFlags:
    """Mixin for a header/trailer struct with ``magic0``, ``magic1``, ``flags`` fields; the
    class sets ``MAGICS = (magic0, magic1)``."""

    MAGICS = (b"", b"")

    @property
    def magic_ok(self) -> bool:
        return (self.magic0, self.magic1) == self.MAGICS

    @property
    def is_header(self) -> bool:
        return bool(self.flags & FLAG_HEADER)

    @property
    def is_data_file(self) -> bool:
        return bool(self.flags & FLAG_DATA)

    @property
    def is_sealed(self) -> bool:
        return bool(self.flags & FLAG_SEALED)
