"""Wake-ups between processes: an eventfd, selectable by the supervisor's event loop.

The protocol that makes wake-ups impossible to lose: a consumer first :meth:`Event.clear`\\ s,
then drains its ring, and only then waits; a producer publishes to the ring, then
:meth:`Event.set`\\ s.  A publish the drain missed always comes with a ``set`` after the clear.
"""

from __future__ import annotations

import os


class Event:
    """A non-blocking eventfd.  ``fileno()`` is readable while it is set."""

    def __init__(self, fd: int | None = None):
        if fd is None:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:
            os.set_blocking(fd, False)
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def set(self) -> None:
        os.eventfd_write(self.fd, 1)

    def clear(self) -> bool:
        """Reset; True if it was set."""
        try:
            os.eventfd_read(self.fd)
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
