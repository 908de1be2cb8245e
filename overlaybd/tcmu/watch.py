"""The daemon's epoll set: fds are added when they appear and forgotten before they close."""

import select


class FdWatch:
    def __init__(self):
        self._ep = select.epoll()
        self.masks = {}                 # fd -> epoll mask registered

    def add(self, fd, mask=select.EPOLLIN):
        if fd >= 0 and fd not in self.masks:
            self._ep.register(fd, mask)
            self.masks[fd] = mask

    def forget(self, fd):
        """Stop watching ``fd``; call it before the fd is closed (its number may come back)."""
        if self.masks.pop(fd, None) is not None:
            try:
                self._ep.unregister(fd)
            except OSError:
                pass

    def poll(self, timeout):
        """[(fd, events)]; ``timeout`` None waits without a deadline (and so without reading
        the clock, a system call of its own where they are slow)."""
        return self._ep.poll(timeout)

    def close(self):
        self.masks.clear()
        self._ep.close()
