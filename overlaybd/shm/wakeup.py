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
import select


class Event:
    """An eventfd.  ``fileno()`` is readable while it is set.

    Non-blocking by default.  ``blocking=True`` keeps (or makes) it blocking, for a sleeper
    with nothing else to wait on: :meth:`wait` sleeps and clears in one system call.  The mode
    belongs to the file, so it is shared with every process holding the descriptor; ``set``
    never blocks either way (the counter does not overflow), and ``clear`` never blocks."""

    def __init__(self, fd: int | None = None, blocking: bool = False):
        if fd is None:
            fd = os.eventfd(0, os.EFD_CLOEXEC | (0 if blocking else os.EFD_NONBLOCK))
        else:
            os.set_blocking(fd, blocking)
        self.fd = fd
        self.blocking = blocking

    def fileno(self) -> int:
        return self.fd

    def set(self) -> None:
        os.eventfd_write(self.fd, 1)

    def clear(self) -> int:
        """Reset; the number of ``set`` calls since the last reset (0: it was not set)."""
        if self.blocking and not select.select([self.fd], [], [], 0)[0]:
            return 0
        try:
            return os.eventfd_read(self.fd)
        except BlockingIOError:
            return 0

    def wait(self) -> int:
        """Sleep until it is set (``blocking`` only), then reset; the number of ``set`` calls.
        A signal (SIGHUP: reopen the logs) runs its handler and the sleep goes on
        (``os.eventfd_read`` does not retry on EINTR as most calls do, PEP 475)."""
        while True:
            try:
                return os.eventfd_read(self.fd)
            except InterruptedError:
                continue

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
