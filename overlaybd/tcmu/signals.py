"""The supervisor's signal queue: handlers only append to a list, and a wake-up pipe
(``signal.set_wakeup_fd``) makes the event loop's epoll return, so every signal is acted on in
the loop, between passes, never inside a handler (the pre-fork arbiter's pattern)."""

from __future__ import annotations

import os
import signal

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SignalQueue:
    def __init__(self):
        self.fd = -1                # read end of the wake-up pipe: watch it
        self._w = -1
        self._queue: list[int] = []
        self._saved = None

    def install(self) -> int:
        """Take over SIGTERM, SIGINT and SIGHUP; returns the fd that becomes readable."""
        self.fd, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        old = {s: signal.signal(s, lambda signum, frame: self._queue.append(signum))
               for s in HANDLED}
        self._saved = (old_fd, old)
        return self.fd

    def take(self) -> list[int]:
        """The signals received since the last call, oldest first (empties the pipe)."""
        try:
            os.read(self.fd, 4096)
        except BlockingIOError:
            pass
        sigs, self._queue = self._queue, []
        return sigs

    def restore(self) -> None:
        """Put the previous handlers and wake-up fd back; close the pipe."""
        old_fd, old = self._saved
        for s, h in old.items():
            signal.signal(s, h)
        signal.set_wakeup_fd(old_fd)
        os.close(self.fd)
        os.close(self._w)
        self.fd = self._w = -1
