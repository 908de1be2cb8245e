"""overlaybd-export: write an image's merged virtual disk to a file or stdout."""

from ..errors import OverlaybdError
from ..image import open_image
from .common import STDOUT, Output, Progress, make_main, parser

PROG = "overlaybd-export"
CHUNK = 4 << 20


def build_parser():
    p = parser(PROG, "Write the merged virtual disk of an image (config.v1.json) to OUT\n"
               "('-' for stdout).  Holes stay holes in a regular output file; a device or\n"
               "FIFO gets every byte.  An existing file is kept unless -f is given; a\n"
               "failed export leaves no partial file behind.")
    p.add_argument("--service_config_path", default=None,
                   help="overlaybd.json for remote layers (default /etc/overlaybd/overlaybd.json)")
    p.add_argument("--offset", type=int, default=0, help="start byte (512-aligned)")
    p.add_argument("--length", type=int, default=None, help="bytes to export (512-aligned)")
    p.add_argument("-f", dest="force", action="store_true",
                   help="overwrite an existing output file (written in place)")
    p.add_argument("config")
    p.add_argument("out")
    return p


def _main(a):
    img = open_image(a.config, a.service_config_path, write_result=False)
    try:
        end = img.size if a.length is None else min(img.size, a.offset + a.length)
        if a.offset % 512 or (end - a.offset) % 512 and end != img.size:
            raise SystemExit(f"{PROG}: --offset and --length must be multiples of 512")
        prog = Progress(PROG, end - a.offset)
        try:
            with Output(a.out, force=a.force) as out:
                _copy(img, a.offset, end, out, prog)
        finally:
            prog.finish()
    finally:
        img.close()


def _copy(img, start, end, out, prog):
    """Copy [start, end) of the image to ``out``: zero chunks become holes (a seek) in a
    regular file, which is sized at the end; anything else gets every byte, in order."""
    f = out.file
    sparse = out.regular and out.path != STDOUT
    zero = bytes(CHUNK)
    off = start
    while off < end:
        n = min(CHUNK, end - off)
        data = img.pread(n, off)
        if len(data) != n:
            raise OverlaybdError(f"short read at offset {off}: {len(data)} of {n} bytes",
                                 path=img.path)
        if not sparse:
            f.write(data)
        elif data != zero[:n]:
            f.seek(off - start)
            f.write(data)
        off += n
        prog.update(n)
    if sparse:
        f.truncate(end - start)


main = make_main(PROG, build_parser, _main)


if __name__ == "__main__":
    raise SystemExit(main())
