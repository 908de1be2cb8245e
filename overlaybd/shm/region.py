"""Shared memory regions: POSIX shared memory, mapped, with the name unlinked at once.

A region is created under a unique name (``/overlaybd-<pid>-<seq>-<random>``), mapped, and its
name is unlinked immediately: from then on the memory lives only as long as some process holds
the mapping or the file descriptor, so neither a clean exit nor a crash (even SIGKILL of the
supervisor) leaves anything in ``/dev/shm``.  Other processes get the region through its file
descriptor (``SCM_RIGHTS`` over a control channel, see :mod:`overlaybd.shm.channel`).

:func:`sweep_stale` removes names that a process which died between ``shm_open`` and
``shm_unlink`` (a window of microseconds) may have left behind.
"""

from __future__ import annotations

import itertools
import mmap
import os
import secrets

import posix_ipc

PREFIX = "overlaybd-"
_seq = itertools.count()


def unique_name(purpose: str = "shm") -> str:
    """A POSIX shm name no other live process uses: pid, a sequence number and random bits."""
    return f"/{PREFIX}{os.getpid()}-{next(_seq)}-{secrets.token_hex(4)}-{purpose}"


class SharedRegion:
    """``size`` bytes of shared memory: ``.buf`` (an mmap) and ``.fd`` (to pass to others)."""

    def __init__(self, fd: int, size: int):
        self.fd = fd
        self.size = size
        self.buf = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    @classmethod
    def create(cls, size: int, purpose: str = "shm") -> SharedRegion:
        """Create a zero-filled region; its name is already gone when this returns."""
        if size <= 0:
            raise ValueError(f"shared region size must be positive, got {size}")
        name = unique_name(purpose)
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
        try:
            fd = os.dup(shm.fd)
        finally:
            shm.close_fd()
            shm.unlink()
        os.set_inheritable(fd, False)
        try:
            return cls(fd, size)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, fd: int) -> SharedRegion:
        """Map a region from a descriptor received from its creator (takes ownership of fd)."""
        return cls(fd, os.fstat(fd).st_size)

    def close(self) -> None:
        """Unmap and close the descriptor.  Views on ``buf`` must have been released."""
        if self.buf is not None:
            self.buf.close()
            self.buf = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_names(shm_dir: str = "/dev/shm") -> list[str]:
    """Names under ``shm_dir`` created by overlaybd processes that no longer exist."""
    out = []
    try:
        entries = os.listdir(shm_dir)
    except OSError:
        return out
    for entry in entries:
        if not entry.startswith(PREFIX):
            continue
        pid = entry[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            out.append(entry)
    return out


def sweep_stale(shm_dir: str = "/dev/shm") -> list[str]:
    """Unlink the stale names :func:`stale_names` finds; returns what was removed."""
    removed = []
    for entry in stale_names(shm_dir):
        try:
            posix_ipc.unlink_shared_memory("/" + entry)
            removed.append(entry)
        except posix_ipc.ExistentialError:
            pass
    return removed
