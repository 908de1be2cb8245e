"""Where committed layers go: plain, ZFile (-z) and/or tar-wrapped (-t) outputs."""

import argparse

from .. import tar, zfile
from .common import CountingWriter, Output, Progress

BLOCK_SIZES_KB = (4, 8, 16, 32, 64)


def add_layer_options(p, compress_default=False):
    """The output options shared by overlaybd-commit and overlaybd-merge."""
    if compress_default:
        p.add_argument("--compress", dest="zfile", action="store_true", default=True,
                       help="ZFile-compress the output (default: on)")
        p.add_argument("--no-compress", dest="zfile", action="store_false",
                       help="write plain LSMT")
    else:
        p.add_argument("-z", dest="zfile", action="store_true",
                       help="compress the output with ZFile (CRC on, header rewritten at the end)")
    p.add_argument("--algorithm", choices=("lz4", "zstd"), default="lz4",
                   help="ZFile compression (default lz4)")
    p.add_argument("--bs", type=int, default=4, choices=BLOCK_SIZES_KB, metavar="KB",
                   help="ZFile block size in KiB: 4, 8, 16, 32 or 64 (default 4)")
    p.add_argument("-t", dest="tar", action="store_true", help="wrap the output in a one-file tar")
    add_compress_threads(p)
    p.add_argument("-f", dest="force", action="store_true", help="overwrite an existing output")


def _processes(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of processes (1 or more)")
    return n


def add_compress_threads(p):
    """``--compress_threads N``: upstream's flag name; here N compressing processes (this one
    and N-1 forked), since threads cannot run the per-block Python work in parallel."""
    p.add_argument("--compress_threads", type=_processes, default=1, metavar="N",
                   help="ZFile compression processes, this one included (default 1); the "
                        "output is the same bytes for every N")


class LayerOutput:
    """A sequential writer for a committed layer: file [-> tar] [-> zfile].  As a context
    manager it seals every level on success and discards the output on failure (see
    ``common.Output``).  ``overwrite_header`` is what ``overlaybd-commit -z`` does (not merge)."""

    def __init__(self, path, a, expected_size, overwrite_header, what):
        self.output = Output(path, force=a.force)
        self.file = self.output.file
        self.progress = Progress(what, expected_size)
        self.tar = self.zfile = None
        try:
            self.tar = tar.TarWriter(self.file) if a.tar else None
            inner = self.tar if self.tar else self.file
            if a.zfile:
                self.zfile = zfile.ZFileWriter(inner, algorithm=a.algorithm,
                                               block_size=a.bs << 10, verify=True,
                                               overwrite_header=overwrite_header,
                                               threads=a.compress_threads)
                inner = self.zfile
        except BaseException:
            self.output.discard()
            raise
        self.writer = CountingWriter(inner, self.progress)

    def write(self, data):
        return self.writer.write(data)

    def close(self):
        """Seal every level and close the file."""
        if self.zfile is not None:
            self.zfile.close()
        if self.tar is not None:
            self.tar.close()
        self.output.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                try:
                    self.close()
                except BaseException as e:
                    self._abort(type(e), e, e.__traceback__)
                    raise
            else:
                self._abort(exc_type, exc, tb)
        finally:
            self.progress.finish()
        return False

    def _abort(self, exc_type, exc, tb):
        if self.zfile is not None:
            self.zfile.__exit__(exc_type, exc, tb)      # stops its compression workers
        self.output.discard()
