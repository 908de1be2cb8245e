"""A raw image file as an engine backend, and its picklable opener (tests, bench, stress)."""

from __future__ import annotations

import os

from ..io import LocalFile, punch_hole


class RawFile(LocalFile):
    """A local file with the backend capabilities the engine uses."""

    def __init__(self, path, writable: bool = False):
        super().__init__(path, writable)
        self.read_only = not writable

    def discard(self, off: int, n: int) -> None:
        """Punch a hole: the range reads back as zeros."""
        punch_hole(self.fd, off, n, self.path)


class RawFileOpener:
    """``RawFileOpener(path, writable)() -> RawFile``; pickles as its arguments."""

    def __init__(self, path, writable: bool = False):
        self.path = os.fspath(path)
        self.writable = writable

    def __call__(self) -> RawFile:
        return RawFile(self.path, self.writable)

    def __repr__(self):
        return f"RawFileOpener({self.path!r}, writable={self.writable})"
