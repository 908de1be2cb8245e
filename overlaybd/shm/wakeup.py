"""Wake-ups between processes: an eventfd, selectable by the supervisor's event loop.

The rings between the supervisor and a worker signal only a peer that sleeps.  The consumer
announces its sleep in a shared word (``worker_idle`` / ``supervisor_idle``,
:mod:`overlaybd.shm.heartbeat`), then looks at its ring once more, and only then waits on its
eventfd; the producer publishes an entry, then reads the word, and if it is set clears it and
:meth:`Event.set`\\ s.  Each side orders its store before its load with a full barrier
(:func:`overlaybd.shm.fence.fence`), so at least one of them sees the other: the consumer sees
the entry and does not sleep, or the producer sees the word and wakes it.  A peer that is busy
is never signalled, and a sleeping one once, however many entries follow before it runs.
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

    def clear(self) -> int:
        """Reset; the number of ``set`` calls since the last reset (0: it was not set)."""
        try:
            return os.eventfd_read(self.fd)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
