"""overlaybd-export: write an image's merged virtual disk to a file or stdout."""

import os
import sys

from ..image import open_image
from .common import Progress, make_main, parser

PROG = "overlaybd-export"
CHUNK = 4 << 20


def build_parser():
    p = parser(PROG, "Write the merged virtual disk of an image (config.v1.json) to OUT\n"
               "('-' for stdout).  Holes stay holes in a regular output file.")
    p.add_argument("--service_config_path", default=None,
                   help="overlaybd.json for remote layers (default /etc/overlaybd/overlaybd.json)")
    p.add_argument("--offset", type=int, default=0, help="start byte (512-aligned)")
    p.add_argument("--length", type=int, default=None, help="bytes to export (512-aligned)")
    p.add_argument("config")
    p.add_argument("out")
    return p


def _main(a):
    img = open_image(a.config, a.service_config_path, write_result=False)
    try:
        end = img.size if a.length is None else min(img.size, a.offset + a.length)
        if a.offset % 512 or (end - a.offset) % 512 and end != img.size:
            raise SystemExit(f"{PROG}: --offset and --length must be multiples of 512")
        to_stdout = a.out == "-"
        fd = sys.stdout.fileno() if to_stdout else os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        prog = Progress(PROG, end - a.offset)
        try:
            off = a.offset
            zero = bytes(CHUNK)
            while off < end:
                n = min(CHUNK, end - off)
                data = img.pread(n, off)
                if len(data) != n:
                    raise OSError(f"short read at {off}")
                if to_stdout:
                    _write_all(fd, data)
                elif data != zero[:n]:
                    os.pwrite(fd, data, off - a.offset)
                off += n
                prog.update(n)
            if not to_stdout:
                os.ftruncate(fd, end - a.offset)
        finally:
            prog.finish()
            if not to_stdout:
                os.close(fd)
    finally:
        img.close()


def _write_all(fd, data):
    mv = memoryview(data)
    while mv:
        mv = mv[os.write(fd, mv):]


main = make_main(PROG, build_parser, _main)


if __name__ == "__main__":
    raise SystemExit(main())
