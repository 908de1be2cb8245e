"""overlaybd-zfile: ZFile compress, decompress (-x) and verify (--verify)."""

import sys

from .. import tar, zfile
from ..errors import OverlaybdError
from ..io import LocalFile
from .common import CountingWriter, Output, Progress, make_main, parser, say
from .layerout import BLOCK_SIZES_KB, add_compress_threads

PROG = "overlaybd-zfile"

EPILOG = """forms:
  overlaybd-zfile [-t] [-f] [--algorithm lz4|zstd] [--bs KB] <src> <dst>   compress
  (--compress_threads N: N compressing processes; an addition, upstream's tool has none)
  overlaybd-zfile [-f] <dst>                       compress standard input into <dst>
  overlaybd-zfile -x [-f] <src> <dst>              decompress (a tar-wrapped src is unwrapped)
  overlaybd-zfile --verify <src>                   check every block's CRC"""


def build_parser():
    p = parser(PROG, "Compress a file into a ZFile (block CRCs on), decompress one, or verify one.",
               epilog=EPILOG)
    p.add_argument("-x", "--extract", action="store_true", help="decompress src into dst")
    p.add_argument("--verify", action="store_true", help="verify the CRCs of src")
    p.add_argument("-t", dest="tar", action="store_true", help="wrap the output in a one-file tar")
    p.add_argument("-f", dest="force", action="store_true", help="overwrite an existing output")
    p.add_argument("--algorithm", choices=("lz4", "zstd"), default="lz4")
    p.add_argument("--bs", type=int, default=4, choices=BLOCK_SIZES_KB, metavar="KB",
                   help="block size in KiB: 4, 8, 16, 32 or 64 (default 4)")
    add_compress_threads(p)
    p.add_argument("files", nargs="+", metavar="FILE")
    return p


def _main(a):
    if a.verify:
        if len(a.files) != 1:
            raise SystemExit(f"{PROG}: --verify takes one file")
        src = _open_src(a.files[0])
        n = zfile.verify(src)
        say(f"{a.files[0]}: {n} blocks verified, all CRCs correct")
        return 0
    if a.extract:
        if len(a.files) != 2:
            raise SystemExit(f"{PROG}: -x takes <src> <dst>")
        src = _open_src(a.files[0])
        if not zfile.is_zfile(src):
            raise OverlaybdError("not a ZFile", path=a.files[0])
        z = zfile.ZFile(src)
        with Output(a.files[1], force=a.force) as out:
            prog = Progress(PROG, z.size)
            zfile.decompress(z, CountingWriter(out.file, prog))
            prog.finish()
        return 0
    if len(a.files) == 1:
        src, total, dst = sys.stdin.buffer, 0, a.files[0]
    elif len(a.files) == 2:
        src = LocalFile(a.files[0])
        total, dst = src.size, a.files[1]
    else:
        raise SystemExit(f"{PROG}: expected <src> <dst> or <dst>")
    with Output(dst, force=a.force) as out:
        prog = Progress(PROG, total, enabled=None if total else False)
        sink = tar.TarWriter(out.file) if a.tar else out.file
        zfile.compress(_Counting(src, prog), sink, algorithm=a.algorithm, block_size=a.bs << 10,
                       verify=True, overwrite_header=False, threads=a.compress_threads)
        if a.tar:
            sink.close()
        prog.finish()
    return 0


class _Counting:
    """Reports bytes read from the source to the progress line."""

    def __init__(self, src, prog):
        self.src, self.prog = src, prog
        if hasattr(src, "pread"):
            self.size = src.size
            self.pread = self._pread

    def _pread(self, n, off):
        data = self.src.pread(n, off)
        self.prog.update(len(data))
        return data

    def read(self, n):
        data = self.src.read(n)
        self.prog.update(len(data))
        return data


def _open_src(path):
    f = LocalFile(path)
    if tar.is_tar(f):
        return tar.TarFile(f)
    return f


main = make_main(PROG, build_parser, _main)


if __name__ == "__main__":
    raise SystemExit(main())
