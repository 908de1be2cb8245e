"""What every tool shares: argument parsing, error reporting, logging level, progress, and
the rules for output paths (``Output``)."""

import argparse
import errno
import io
import os
import select
import stat
import sys
import time

from loguru import logger

from .. import __version__
from ..errors import OverlaybdError

STDOUT = "-"
STDOUT_NAME = "standard output"
EXIT_PIPE = 128 + 13            # what a shell reports for a tool ended by SIGPIPE


def package_version():
    """The installed distribution's version, else the source tree's ``overlaybd.__version__``."""
    from importlib import metadata  # lazy: only --version asks, and it costs ~25 ms per start
    try:
        return metadata.version("overlaybd")
    except metadata.PackageNotFoundError:
        return __version__


def add_version(p):
    p.add_argument("--version", action="version", version=f"{p.prog} {package_version()}")


def parser(prog, description, epilog=None):
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", action="store_true", help="print debug logs")
    add_version(p)
    return p


def setup_logging(verbose):
    logger.remove()
    # sys.stderr looked up per line: a background thread that logs after a caller swapped
    # standard error back (a test's capture) must not write to a closed stream
    logger.add(lambda m: sys.stderr.write(m), level="DEBUG" if verbose else "WARNING",
               format="{time:YYYY/MM/DD HH:mm:ss.SSSSSS}|{level: <5}|{name}:{line}|{message}")


def run(prog, fn, args):
    """Run ``fn(args)``; expected failures print one clear line and exit 1.  A closed standard
    output (``tool | head``) ends the tool quietly with 141, as SIGPIPE ends a C tool."""
    setup_logging(getattr(args, "verbose", False))
    try:
        rc = fn(args)
        say()                           # flush here, not at exit: so that errors are reported
    except OverlaybdError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno == errno.EPIPE and stdout_closed():
            quiet_stdout()
            return EXIT_PIPE
        where = f"{e.filename}: " if e.filename is not None else ""
        print(f"{prog}: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return rc or 0


def say(*text):
    """``print(*text)`` to standard output (nothing: just flush), errors naming it."""
    if sys.stdout is None:              # started with fd 1 closed
        return
    try:
        if text:
            print(*text)
        sys.stdout.flush()
    except OSError as e:
        raise named(e, STDOUT_NAME) from None


def stdout_closed():
    """True when nobody reads standard output any more (a pipe whose reader has gone)."""
    try:
        p = select.poll()
        p.register(1, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in p.poll(0))
    except (OSError, ValueError):
        return False


def quiet_stdout():
    """Point standard output at /dev/null so that the flush at exit raises nothing again (the
    way the Python documentation handles SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def make_main(prog, build_parser, fn):
    """The console-script entry point of a tool: parse ``argv``, then ``run(prog, fn, args)``."""
    def main(argv=None):
        return run(prog, fn, build_parser().parse_args(argv))
    main.__doc__ = f"{prog} entry point"
    return main


class Progress:
    """Progress on stderr when it is a terminal: ``done/total`` bytes and the rate."""

    def __init__(self, what, total, stream=None, enabled=None):
        self.what = what
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.t0 = self.last = time.monotonic()
        self.done = 0

    def update(self, n):
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last >= 0.2 or self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.t0, 1e-6) / 2**20
            pct = min(100.0, 100.0 * self.done / self.total)
            self.stream.write(f"\r{self.what}: {pct:5.1f}% {self.done / 2**20:,.1f} of "
                              f"{self.total / 2**20:,.1f} MiB, {rate:,.1f} MiB/s ")
            self.stream.flush()

    def finish(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class CountingWriter:
    """Wraps a writer and reports bytes written to a Progress."""

    def __init__(self, out, progress):
        self.out = out
        self.progress = progress

    def write(self, data):
        n = self.out.write(data)
        self.progress.update(len(data))
        return n

    def __getattr__(self, name):
        return getattr(self.out, name)


def named(e, path):
    """``e`` (an OSError from a file descriptor call, which names no file) naming ``path``."""
    return OSError(e.errno, e.strerror or str(e), path)


class _NamedFileIO(io.FileIO):
    """A raw output whose errors name its path (``os.write`` errors name no file)."""

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            raise named(e, self.name) from None

    def write(self, b):
        return self._call(super().write, b)

    def seek(self, pos, whence=0):
        return self._call(super().seek, pos, whence)

    def truncate(self, size=None):
        return self._call(super().truncate, size)

    def close(self):
        return self._call(super().close)


class Output:
    """An output path opened by the rules every tool shares (``-`` is standard output):

    * nothing there: a new regular file (``O_EXCL``, 0644), removed again if the tool fails;
    * a regular file (a symlink is followed) or a block device: refused unless ``force``, then
      written in place with ``O_TRUNC`` (its inode, owner, mode and links stay); when the tool
      fails, a regular file is left empty: nothing half-written stays, nothing is removed
      that the tool did not create;
    * a character device, FIFO or socket: written as it is, ``-f`` or not; never removed;
    * a directory, or anything at all when ``exclusive``: refused.

    ``file`` is a buffered binary writer whose errors name the path.  As a context manager:
    closed on success, ``discard()``-ed on failure."""

    def __init__(self, path, force=False, exclusive=False):
        self.path = os.fspath(path)
        self.created = False
        if self.path == STDOUT:
            fd, label = os.dup(sys.stdout.fileno()), STDOUT_NAME
        else:
            fd, label = self._open(force, exclusive), self.path
        st = os.fstat(fd)
        self.regular = stat.S_ISREG(st.st_mode)
        self._ident = (st.st_dev, st.st_ino)
        raw = _NamedFileIO(fd, "wb", closefd=True)
        raw.name = label
        self.file = io.BufferedWriter(raw, 1 << 20)

    def _open(self, force, exclusive):
        p = self.path
        try:
            st = os.stat(p)                     # through a symlink
        except FileNotFoundError:
            st = None
        if st is None:
            if os.path.islink(p) and not force:
                raise OverlaybdError("is a symlink to nothing (use -f to create its target)",
                                     path=p)
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                self.created = True
                return fd
            except FileExistsError:             # a symlink to nothing, or made meanwhile
                if not force or exclusive:
                    raise OverlaybdError("output exists (use -f to overwrite)", path=p) from None
            return os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), p)
        if exclusive:
            raise OverlaybdError("already exists; this tool never writes over a file", path=p)
        if kind in (stat.S_IFREG, stat.S_IFBLK) and not force:
            what = "output exists" if kind == stat.S_IFREG else "output is a block device"
            raise OverlaybdError(f"{what} (use -f to overwrite)", path=p)
        return os.open(p, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)

    @property
    def name(self):
        return self.file.raw.name

    def close(self):
        """Flush and close; errors name the path."""
        self.file.close()

    def discard(self):
        """The tool failed: remove the file it created, or empty the regular file it opened
        in place; anything else (a device, a FIFO, standard output) is left as it is."""
        fd = self.file.raw.fileno() if not self.file.closed else -1
        try:
            if fd >= 0 and self.regular and not self.created and self.path != STDOUT:
                os.ftruncate(fd, 0)
        except OSError:
            pass
        try:
            self.file.raw.close()               # unflushed bytes are dropped, not written
        except OSError:
            pass
        if self.created:
            try:
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._ident:
                    os.unlink(self.path)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.discard()
            return False
        try:
            self.close()
        except BaseException:
            self.discard()
            raise
        return False
