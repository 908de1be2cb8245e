"""An epoll set kept equal to a wanted {fd: mask} map, for the daemon's loop."""

import select


class FdWatch:
    def __init__(self):
        self._ep = select.epoll()
        self.masks = {}                 # fd -> epoll mask registered

    def forget(self, fd):
        """Stop watching ``fd``; call it before the fd is closed (its number may come back)."""
        if self.masks.pop(fd, None) is not None:
            try:
                self._ep.unregister(fd)
            except OSError:
                pass

    def sync(self, want):
        """Register, modify and unregister so that exactly ``want`` is watched."""
        if want == self.masks:
            return
        for fd in self.masks.keys() - want.keys():
            self.forget(fd)
        for fd, mask in want.items():
            old = self.masks.get(fd)
            if old is None:
                self._ep.register(fd, mask)
            elif old != mask:
                self._ep.modify(fd, mask)
            self.masks[fd] = mask

    def poll(self, timeout):
        """[(fd, events)]; ``timeout`` None waits without a deadline (and so without reading
        the clock, a system call of its own where they are slow)."""
        return self._ep.poll(timeout)

    def close(self):
        self.masks.clear()
        self._ep.close()
