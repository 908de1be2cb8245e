"""Worker exits, noticed by a thread that sleeps on the processes' sentinels.

The supervisor's loop looks at its completion rings without a system call; before this thread
it also looked at an epoll of the sentinels on every look (``epoll_wait(0)``, two a command at
depth 1).  The thread sleeps in ``epoll_wait`` until a sentinel becomes readable, records it,
and calls ``notify`` (the pool sets its completion eventfd, so a sleeping supervisor wakes up).
Each sentinel is registered one-shot: it is reported once, and forgotten by :meth:`remove`
before its process is reaped.

Order: ``notify`` runs before the sentinel is recorded, so a supervisor that sees a record
knows the eventfd was set for it (and clears it), and one that does not will see it at its next
look.  A record may outlive its process's reaping for another reason, and the number may by
then belong to a new process's sentinel: the pool checks that the sentinel is readable.
"""

from __future__ import annotations

import select
import threading
from collections import deque
from collections.abc import Callable

from ..shm.wakeup import Event


class ExitWatch:
    def __init__(self, notify: Callable[[], None], name: str = "exit-watch"):
        self.notify = notify
        self.name = name
        self.exited: deque[int] = deque()     # sentinels seen readable, oldest first
        self.count = 0                        # calls of notify (written by the thread only)
        self._stop = Event()
        self._ep = select.epoll()
        self._ep.register(self._stop.fileno(), select.EPOLLIN)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def add(self, sentinel: int) -> None:
        self._ep.register(sentinel, select.EPOLLIN | select.EPOLLONESHOT)

    def remove(self, sentinel: int) -> None:
        """Forget ``sentinel``; before it is closed (its number may come back)."""
        try:
            self._ep.unregister(sentinel)
        except (OSError, ValueError):
            pass

    def take(self) -> list[int]:
        """The sentinels reported since the last call."""
        out = []
        exited = self.exited
        while exited:
            out.append(exited.popleft())
        return out

    def _run(self) -> None:
        stop = self._stop.fileno()
        while True:
            try:
                events = self._ep.poll()
            except (OSError, ValueError):     # closed under us: the pool is closing
                return
            fds = [fd for fd, _ in events if fd != stop]
            if len(fds) != len(events):
                return
            self.notify()
            self.count += 1
            self.exited.extend(fds)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._ep.close()
        self._stop.close()
