"""A raw image file as an engine backend, and its picklable opener (tests, bench, stress)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from ..io import LocalFile

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


class RawFile(LocalFile):
    """A local file with the backend capabilities the engine uses."""

    def __init__(self, path, writable: bool = False):
        super().__init__(path, writable)
        self.read_only = not writable

    def discard(self, off: int, n: int) -> None:
        """Punch a hole: the range reads back as zeros."""
        if _libc.fallocate(self.fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, off, n) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"{self.path}: fallocate(punch hole, {off}, {n}): {os.strerror(e)}")


class RawFileOpener:
    """``RawFileOpener(path, writable)() -> RawFile``; pickles as its arguments."""

    def __init__(self, path, writable: bool = False):
        self.path = os.fspath(path)
        self.writable = writable

    def __call__(self) -> RawFile:
        return RawFile(self.path, self.writable)

    def __repr__(self):
        return f"RawFileOpener({self.path!r}, writable={self.writable})"
