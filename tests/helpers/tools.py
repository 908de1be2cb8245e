"""Helpers for tests that run the installed console scripts (``.venv/bin/overlaybd-*``) as a
user would, and for tests that need a tiny filesystem (a tmpfs mounted for the test)."""

import contextlib
import os
import pathlib
import subprocess
import sys
import threading

from tests.helpers.env import need

BIN = pathlib.Path(sys.executable).parent


def script(name):
    path = BIN / f"overlaybd-{name}"
    need(path.exists(), f"{path} is not installed (make install)")
    return str(path)


def run_tool(name, *argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120):
    """Run ``overlaybd-<name> argv...``; returns the CompletedProcess (text stderr)."""
    return subprocess.run([script(name), *map(str, argv)], stdout=stdout, stdin=stdin,
                          stderr=subprocess.PIPE, timeout=timeout)


def err_lines(proc):
    return proc.stderr.decode(errors="replace").splitlines()


@contextlib.contextmanager
def tmpfs(path, size):
    """A tmpfs of ``size`` (mount syntax, e.g. "256k") at ``path`` for the block; root only."""
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                        str(path)], capture_output=True, text=True)
    need(r.returncode == 0, f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield pathlib.Path(path)
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory, name="filler"):
    """Write zeros into ``directory/name`` until the filesystem is full; returns the path."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (bytes(65536), bytes(4096)):    # the file stays page-aligned: then full
            while True:
                try:
                    if os.write(fd, chunk) < len(chunk):
                        break
                except OSError:
                    break
    finally:
        os.close(fd)
    return path


@contextlib.contextmanager
def loop_device(backing):
    """A loop block device over file ``backing`` for the block; root and losetup only."""
    need(os.geteuid() == 0, "loop devices need root")
    r = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    need(r.returncode == 0, f"no loop device: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


class FifoReader(threading.Thread):
    """Reads a FIFO to its end in a thread (a tool's output blocks until someone reads)."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.data = path, b""
        self.start()

    def run(self):
        with open(self.path, "rb") as f:
            self.data = f.read()

    def result(self, timeout=60):
        self.join(timeout)
        assert not self.is_alive(), "FIFO reader did not finish"
        return self.data
