"""overlaybd-commit: seal a writable layer into a committed (read-only) layer."""

import sys

from .. import detect, lsmt
from ..errors import OverlaybdError
from ..io import LocalFile
from .common import make_main, parser, say
from .layerout import LayerOutput, add_layer_options

PROG = "overlaybd-commit"

EPILOG = """forms:
  overlaybd-commit [opts] <data_file> <index_file> <commit_file>
  overlaybd-commit --seal <data_file> <index_file>        seal the layer in place (close_seal)
  overlaybd-commit --commit_sealed [opts] <sealed_file> <commit_file>
example (as the image convertor does):
  overlaybd-commit writable_data writable_index overlaybd.commit -z -t --uuid <U> --parent-uuid <P>"""


def build_parser():
    p = parser(PROG, "Commit an overlaybd writable layer to a sealed layer: data copied in\n"
               "index order, index compacted and padded, optionally ZFile-compressed and\n"
               "tar-wrapped.", epilog=EPILOG)
    p.add_argument("-m", dest="message", default="", help="commit message (user tag, <= 256 bytes)")
    p.add_argument("--uuid", default=None, help="UUID of the committed layer (default all-zero)")
    p.add_argument("-p", "--parent-uuid", "--parent_uuid", dest="parent_uuid", default=None,
                   help="parent layer UUID (default: the source's parent UUID)")
    add_layer_options(p)
    p.add_argument("--seal", action="store_true", help="seal <data> <index> in place")
    p.add_argument("--commit_sealed", action="store_true",
                   help="commit an already sealed layer: <sealed_file> <commit_file>")
    p.add_argument("--upload", default=None, help="(not supported: push the output yourself)")
    p.add_argument("files", nargs="+", metavar="FILE")
    return p


def _main(a):
    if a.upload:
        raise SystemExit(f"{PROG}: --upload is not supported; push the committed file with a "
                         "registry client")
    if a.seal:
        if len(a.files) != 2:
            raise SystemExit(f"{PROG}: --seal takes <data_file> <index_file>")
        layer = lsmt.open_rw(a.files[0], a.files[1])
        sealed = lsmt.close_seal(layer)
        print(f"{PROG}: sealed {a.files[0]} in place", file=sys.stderr)
        sealed.close()
        return 0
    if a.commit_sealed:
        if len(a.files) != 2:
            raise SystemExit(f"{PROG}: --commit_sealed takes <sealed_file> <commit_file>")
        src = lsmt.open_ro(detect.open_blob(LocalFile(a.files[0])))
        out_path = a.files[1]
    else:
        if len(a.files) != 3:
            raise SystemExit(f"{PROG}: expected <data_file> <index_file> <commit_file>")
        src = lsmt.open_rw(a.files[0], a.files[1])
        out_path = a.files[2]
    try:
        expected = _allocated_bytes(src)
        with LayerOutput(out_path, a, expected, overwrite_header=True, what=PROG) as out:
            lsmt.commit(src, out, uuid=a.uuid, parent_uuid=a.parent_uuid,
                        message=a.message.encode())
    finally:
        src.close()
    print("", file=sys.stderr)      # upstream prints the uploaded digest (empty) here
    say(f"{PROG} has committed files SUCCESSFULLY")
    return 0


def _allocated_bytes(src):
    try:
        return src.allocated_sectors() * 512
    except (AttributeError, TypeError, OverlaybdError):
        return getattr(src, "size", 1)


main = make_main(PROG, build_parser, _main)


if __name__ == "__main__":
    raise SystemExit(main())
