"""Images opened off the daemon's loop.

Opening an image can take seconds (a registry's token, manifest and layer indexes), and the
loop keeps serving the other devices meanwhile: each open runs in a thread of a small pool,
and when it ends the loop is woken through a pipe (it watches :meth:`Opens.fileno`) to finish
adding the device in its own thread (:meth:`Opens.take`).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

OPEN_THREADS = 8                # images opened at once


class Opens:
    def __init__(self, threads: int = OPEN_THREADS):
        self.opening = {}               # minor -> UioInfo whose image is being opened
        self._done = deque()            # (info, handle, reply, future), oldest first
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="open")
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        """Readable when an open has ended."""
        return self._r

    def start(self, validate, info, handle, reply) -> None:
        """Open the image of ``info`` in a thread, ``validate(config path)``; :meth:`take`
        hands the future back with ``handle`` and ``reply``."""
        self.opening[info.minor] = info

        def done(fut):
            self._done.append((info, handle, reply, fut))
            try:
                os.write(self._w, b"o")
            except BlockingIOError:
                pass                    # the loop has a wake-up to read already

        self._pool.submit(validate, info.config_path).add_done_callback(done)

    def take(self):
        """``(info, handle, reply, future)`` of every open that has ended."""
        try:
            os.read(self._r, 4096)
        except BlockingIOError:
            pass
        while self._done:
            item = self._done.popleft()
            self.opening.pop(item[0].minor, None)
            yield item

    def shutdown(self) -> None:
        """Wait for the opens still running (the next :meth:`take` returns them)."""
        self._pool.shutdown(wait=True)

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)
