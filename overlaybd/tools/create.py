"""overlaybd-create: make a writable (upper) layer."""

from .. import lsmt
from ..abi import lsmt as abi
from .common import Output, make_main, parser, say

PROG = "overlaybd-create"
MAX_VSIZE_GB = ((abi.MAX_OFFSET + 1) * 512) >> 30       # 50-bit sector offsets


def build_parser():
    p = parser(PROG, "Create a writable overlaybd layer: a data file and an index file.\n"
               "Default: append-only (log-structured) layer; -s: sparse single-file layer.",
               epilog="example: overlaybd-create writable_data writable_index 64 -s")
    p.add_argument("-u", "--parent-uuid", dest="parent_uuid", default="",
                   help="parent layer UUID (8-4-4-4-12 hex)")
    p.add_argument("-s", "--sparse", action="store_true", help="create a sparse writable layer")
    p.add_argument("data_file")
    p.add_argument("index_file")
    p.add_argument("vsize", type=int, help="virtual size in GiB")
    return p


def _main(a):
    if a.vsize <= 0 or a.vsize > MAX_VSIZE_GB:
        raise SystemExit(f"{PROG}: vsize must be a number of GiB from 1 to {MAX_VSIZE_GB} "
                         "(what the LSMT index can address)")
    parent = a.parent_uuid or None
    if parent is not None and not abi.is_valid_uuid_text(parent):
        raise SystemExit(f"{PROG}: invalid UUID format: {parent}")
    outs = []
    try:                # both files are new (O_EXCL); a failure removes what was made
        for path in (a.data_file, a.index_file):
            outs.append(Output(path, exclusive=True))
            outs[-1].close()
        layer = lsmt.create_rw(a.data_file, a.index_file, a.vsize << 30, sparse=a.sparse,
                               parent_uuid=parent)
        layer.close()
    except BaseException:
        for out in outs:
            out.discard()
        raise
    say(f"overlaybd-create has created files SUCCESSFULLY "
        f"({'sparse' if a.sparse else 'append-only'}, {a.vsize} GiB)")


main = make_main(PROG, build_parser, _main)


if __name__ == "__main__":
    raise SystemExit(main())
