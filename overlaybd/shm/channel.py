"""A control channel between the supervisor and one worker: pickled messages with descriptors.

Messages travel over an ``AF_UNIX``/``SOCK_SEQPACKET`` socket pair (one message per packet).
Any :class:`PassFd` inside a message -- directly or through an object's ``__reduce__``, as
:class:`overlaybd.shm.counter.SharedCounter` does -- is sent alongside with ``SCM_RIGHTS`` and
arrives as a plain ``int`` descriptor valid in the receiving process.  This is the control path
(devices, shutdown), never the I/O hot path: commands go through :mod:`overlaybd.shm.ring`.
"""

from __future__ import annotations

import array
import io
import os
import pickle
import socket

from ..errors import FormatError

MAX_MESSAGE = 256 * 1024
MAX_FDS = 64
_ANC_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


class PassFd:
    """Marks a descriptor to be passed by ``SCM_RIGHTS``; only a :class:`Channel` can send it."""

    __slots__ = ("fd",)

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        raise TypeError("a PassFd can only be sent through an overlaybd.shm.channel.Channel")


class _Pickler(pickle.Pickler):
    def __init__(self, f):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self.fds: list[int] = []

    def persistent_id(self, obj):
        if type(obj) is PassFd:
            self.fds.append(obj.fd)
            return len(self.fds) - 1
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, fds):
        super().__init__(f)
        self.fds = fds

    def persistent_load(self, pid):
        if not isinstance(pid, int) or not 0 <= pid < len(self.fds):
            raise FormatError(f"descriptor reference {pid!r} out of range", path="control message",
                              field="fd")
        return self.fds[pid]


class Channel:
    """One end of a control channel."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(a), cls(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    @staticmethod
    def encode(obj) -> tuple[bytes, list[int]]:
        """The packet and descriptors :meth:`send` would send; raises if ``obj`` cannot go."""
        f = io.BytesIO()
        p = _Pickler(f)
        p.dump(obj)
        data = f.getvalue()
        if len(data) > MAX_MESSAGE or len(p.fds) > MAX_FDS:
            raise ValueError(f"control message too large: {len(data)} bytes, {len(p.fds)} fds")
        return data, p.fds

    def send(self, obj) -> None:
        data, fds = self.encode(obj)
        socket.send_fds(self.sock, [data], fds)

    def recv(self, block: bool = True):
        """The next message; None if ``block`` is False and none is waiting.

        Raises EOFError when the peer has closed its end.
        """
        # Not socket.recv_fds: it ignores its flags argument in Python 3.11.
        flags = socket.MSG_CMSG_CLOEXEC | (0 if block else socket.MSG_DONTWAIT)
        try:
            data, anc, mflags, _ = self.sock.recvmsg(MAX_MESSAGE, _ANC_SPACE, flags)
        except BlockingIOError:
            return None
        fds = array.array("i")
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        fds = list(fds)
        if not data and not fds:
            raise EOFError("control channel closed by peer")
        if mflags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            for fd in fds:
                os.close(fd)
            raise FormatError("control message truncated", path="control channel", field="length")
        try:
            return _Unpickler(io.BytesIO(data), fds).load()
        except Exception:
            for fd in fds:
                os.close(fd)
            raise

    def close(self) -> None:
        self.sock.close()
