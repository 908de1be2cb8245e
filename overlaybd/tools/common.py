"""What every tool shares: argument parsing, error reporting, logging level, progress."""

import argparse
import contextlib
import os
import sys
import time

from loguru import logger

from .. import __version__
from ..errors import OverlaybdError


def parser(prog, description, epilog=None):
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", action="store_true", help="print debug logs")
    p.add_argument("--version", action="version", version=f"{prog} {__version__}")
    return p


def setup_logging(verbose):
    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if verbose else "WARNING",
               format="{time:YYYY/MM/DD HH:mm:ss.SSSSSS}|{level: <5}|{name}:{line}|{message}")


def run(prog, fn, args):
    """Run ``fn(args)``; expected failures print one clear line and exit 1."""
    setup_logging(getattr(args, "verbose", False))
    try:
        rc = fn(args)
    except OverlaybdError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        print(f"{prog}:{where}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return rc or 0


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


@contextlib.contextmanager
def removed_on_error(path):
    """Remove a half-written output file if the block fails (nothing half-made is left)."""
    try:
        yield
    except BaseException:
        if path != "-" and os.path.exists(path):
            os.unlink(path)
        raise


def open_output(path, force=False, exclusive=True):
    """Create ``path`` for writing: refuse an existing file unless ``force``."""
    if path == "-":
        return os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    if force and os.path.lexists(path):
        os.unlink(path)
    flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError as e:
        raise OverlaybdError("output exists (use -f to overwrite)", path=path) from e
    return os.fdopen(fd, "w+b")
